#include "examples/train_pipeline.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/compress/spec.h"
#include "examples/train_data.h"
#include "models/registry.h"
#include "optim/factory.h"
#include "optim/lr_schedule.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/dataset.h"
#include "runtime/data/distributed_sampler.h"
#include "runtime/io/jsonl.h"
#include "runtime/io/progress.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/data_parallel.h"
#include "runtime/train/pipeline.h"
#include "runtime/train/pipeline_checkpoint.h"
#include "runtime/train/pipeline_partition.h"

namespace tern {

void declare_pipeline_flags(Flags& f) {
  f.add_int(
      "pipeline-stages", 1,
      "pipeline stages P: the world of P x D ranks trains D data-parallel copies of a P-stage pipeline");
  f.add_int("micro-batches", 1,
            "micro-batches per step and pipeline (--batch-size must be a multiple of it)");
  f.add_string("schedule", "1f1b", "pipeline schedule: gpipe|1f1b");
  f.add_string(
      "stages", "params",
      "layers per pipeline stage: params (balanced parameter counts) | time (measured forward+backward) | "
      "counts such as 4:3:3:2");
  f.add_bool("recompute", false,
             "pipeline: keep only each waiting micro-batch's input; recompute its forward");
}

bool pipeline_requested(const Flags& f) {
  return f.get_int("pipeline-stages") > 1 || f.get_int("micro-batches") > 1;
}

namespace {

using Clock = std::chrono::steady_clock;

// The step loss for --log-every travels from the last stage to stage 0 (world rank 0, the one
// metrics writer) on replica 0's pipeline communicator under this tag.
constexpr int kStepLossTag = 9110;

struct Sums {
  double loss = 0;  // summed over samples
  int64_t correct = 0;
  int64_t samples = 0;
};

// Only last-stage ranks hold losses; adding over the world adds the replicas' shards.
Sums world_sum(const Sums& s, Communicator& comm) {
  if (comm.size() == 1) return s;
  Tensor loss = Tensor::from({1}, {static_cast<float>(s.loss)});
  Tensor counts = Tensor::empty({2}, DType::i64);
  counts.data<int64_t>()[0] = s.correct;
  counts.data<int64_t>()[1] = s.samples;
  comm.allreduce(loss, ReduceOp::sum);
  comm.allreduce(counts, ReduceOp::sum);
  return {loss.f32()[0], counts.data<int64_t>()[0], counts.data<int64_t>()[1]};
}

// The global gradient norm over every stage (the replicas already agree after their sync), and
// PyTorch's clip_grad_norm_ rule applied with it.
void clip_over_stages(const std::vector<Param*>& params, float max_norm, Communicator& pipeline) {
  double sq = 0;
  for (Param* p : params) {
    if (!p->trainable) continue;
    const float* g = p->grad.f32();
    for (int64_t i = 0; i < p->grad.numel(); ++i) sq += static_cast<double>(g[i]) * g[i];
  }
  Tensor t = Tensor::from({1}, {static_cast<float>(sq)});
  if (pipeline.size() > 1) pipeline.allreduce(t, ReduceOp::sum);
  const double norm = std::sqrt(static_cast<double>(t.f32()[0]));
  TERN_CHECK(std::isfinite(norm), "the gradient norm is not finite (try a smaller --lr)");
  if (norm <= max_norm) return;
  const auto scale = static_cast<float>(max_norm / (norm + 1e-6));
  for (Param* p : params) {
    if (!p->trainable) continue;
    float* g = p->grad.f32();
    for (int64_t i = 0; i < p->grad.numel(); ++i) g[i] *= scale;
  }
}

// This replica's contiguous shard of `data` through the pipeline in eval mode. Batches are
// padded to a multiple of M with copies of their first row, which the loss leaves out.
Sums evaluate(Pipeline& pipe, Module& stage, const Dataset& data, Shard shard, int64_t eval_batch) {
  const int M = pipe.options().micro_batches;
  const auto [begin, end] = shard_range(data.size(), shard);
  const int64_t per = std::max<int64_t>(M, eval_batch / M * M);
  Sums s;
  stage.eval();
  for (int64_t at = begin; at < end; at += per) {
    const int64_t n = std::min(per, end - at), padded = (n + M - 1) / M * M, mb = padded / M;
    Tensor x;
    if (pipe.first_stage()) {
      x = data.images.slice(at, at + n);
      if (padded != n) {
        Shape shape = data.images.shape();
        shape[0] = padded;
        Tensor full = Tensor::empty(shape);
        full.slice(0, n).copy_from(x);
        for (int64_t r = n; r < padded; ++r) full.slice(r, r + 1).copy_from(data.images.slice(at, at + 1));
        x = full;
      }
    }
    pipe.forward_step(x, [&](const Tensor& out, int i, Tensor*) {
      const int64_t first = i * mb, real = std::clamp<int64_t>(n - first, 0, mb);
      if (real == 0) return LossResult{0, 0};
      const auto y0 = data.labels.begin() + at + first;
      const LossResult r =
          softmax_cross_entropy(out.slice(0, real), std::vector<int32_t>(y0, y0 + real), nullptr);
      s.loss += static_cast<double>(r.loss) * static_cast<double>(real);
      s.correct += r.correct;
      s.samples += real;
      return r;
    });
  }
  stage.train();
  return s;
}

// A flag's value in a Flags::echo() line ("name=value name=value ..."), or "" when absent. Only for
// the log: what a checkpoint must match is checked on its contents.
std::string echoed(const std::string& config, const std::string& name) {
  const std::string key = name + "=";
  for (size_t at = 0; at < config.size();) {
    const size_t end = std::min(config.find(' ', at), config.size());
    if (config.compare(at, key.size(), key) == 0)
      return config.substr(at + key.size(), end - at - key.size());
    at = end + 1;
  }
  return "";
}

}  // namespace

int train_pipeline_rank(const Flags& f, Communicator& comm) {
  const int P = static_cast<int>(f.get_int("pipeline-stages")),
            M = static_cast<int>(f.get_int("micro-batches"));
  const int64_t epochs = f.get_int("epochs"), batch = f.get_int("batch-size"),
                eval_batch = f.get_int("eval-batch-size");
  if (P < 1 || M < 1) throw UsageError("--pipeline-stages and --micro-batches must be at least 1");
  if (comm.size() % P != 0)
    throw UsageError("--pipeline-stages " + std::to_string(P) + " must divide the " +
                     std::to_string(comm.size()) + " ranks (world = stages x data-parallel replicas)");
  if (batch % M != 0)
    throw UsageError("--batch-size " + std::to_string(batch) + " must be a multiple of --micro-batches " +
                     std::to_string(M));
  const ScheduleKind kind = [&] {
    try {
      const ScheduleKind k = parse_schedule(f.get_string("schedule"));
      if (k == ScheduleKind::forward_only) throw Error("'forward' is not a training schedule");
      return k;
    } catch (const Error& e) {
      throw UsageError(std::string("--schedule: ") + e.what());
    }
  }();
  const std::string compress = f.get_string("compress");
  if (compress != "none" && CompressorSpec::parse(compress).name() == "dgc")
    throw UsageError(
        "--compress dgc is not supported with --pipeline-stages (DGC replaces the optimizer's momentum)");

  PipelineLayout layout = make_pipeline_layout(comm, P);
  const int D = layout.replicas;
  const bool lead = comm.rank() == 0;
  const std::string model_name = f.get_string("model"), dataset = f.get_string("dataset"),
                    ckpt_dir = f.get_string("checkpoint-dir");
  TrainingData data = load_training_data(f);  // --classes and --limit-train apply here too
  Dataset& train = data.train;
  const Dataset& test = data.test;
  const ModelConfig& mc = data.config;

  // Every rank builds the whole model, agrees on the split, keeps its stage and frees the rest.
  auto full = make_model(model_name, mc);
  const int64_t total_params = full->param_count();
  const StageBounds bounds = partition_model(f.get_string("stages"), *full, P,
                                             train.images.slice(0, std::min(train.size(), batch / M)), &comm);
  const std::string layout_text = describe_stages(*full, bounds);

  // A checkpoint holds the unsplit model (see runtime/train/pipeline_checkpoint.h), so every rank
  // restores the whole model before taking its stage: the same checks as a data-parallel resume,
  // whatever split wrote it. After partition_model, which may run the model to time it.
  std::optional<CheckpointData> resumed;
  if (f.get_bool("resume")) {
    resumed = load_latest_checkpoint(ckpt_dir);
    if (resumed) {
      // world_size is the number of data shards (see the checkpoint lambda below); with another
      // number the samples would be dealt differently and the global batch would change.
      if (resumed->world_size != D)
        throw Error(detail::concat("checkpoint ", resumed->source, " was written by ", resumed->world_size,
                                   " data-parallel replica", resumed->world_size == 1 ? "" : "s",
                                   "; this run has ", D, " (", comm.size(), " ranks / ", P,
                                   " stages): resume with as many replicas"));
      restore_model(*full, *resumed, model_name);
    } else if (lead) {
      std::printf("--resume: no checkpoint in %s yet, starting from scratch\n", ckpt_dir.c_str());
    }
  }
  auto stage = take_stage(*full, bounds, layout.stage);
  full.reset();

  DataLoader loader(train, batch, /*shuffle=*/true, mc.seed, /*drop_last=*/true, Shard{layout.replica, D});
  if (loader.num_batches() == 0)
    throw Error(detail::concat("the training set (", train.size(),
                               " samples) is smaller than one global batch (", D, " replicas x ", batch,
                               ")"));
  const int64_t total_steps = loader.num_batches() * epochs;
  float lr = static_cast<float>(f.get_float("lr"));
  if (f.get_bool("scale-lr")) lr *= static_cast<float>(D);
  auto optimizer = make_optimizer(f.get_string("optimizer"), stage->params(), lr,
                                  static_cast<float>(f.get_float("momentum")),
                                  static_cast<float>(f.get_float("weight-decay")), f.get_bool("nesterov"));
  auto schedule = make_lr_schedule(f.get_string("lr-schedule"), lr, total_steps);
  int64_t start_epoch = 0, skip_batches = 0, start_step = 0;
  if (resumed) {
    restore_stage_optimizer(*optimizer, *resumed);
    start_epoch = resumed->epoch;
    skip_batches = resumed->batches_in_epoch;
    start_step = resumed->step;
  }

  std::unique_ptr<DataParallel> dp;
  if (D > 1) {
    DataParallelOptions dopts;
    dopts.bucket_bytes = static_cast<size_t>(f.get_float("bucket-mb") * 1024 * 1024);
    dopts.sync_bn = f.get_bool("sync-bn");
    if (compress != "none") {
      dopts.compression.spec = compress;
      dopts.compression.seed = mc.seed;
    }
    dp = std::make_unique<DataParallel>(*stage, *layout.data_parallel, dopts);
    dp->grad_sync().set_step(start_step);
    if (resumed) restore_stage_compressor(dp->grad_sync(), layout.stage, P, layout.replica, *resumed);
  }
  PipelineOptions popts;
  popts.schedule = kind;
  popts.micro_batches = M;
  popts.recompute = f.get_bool("recompute");
  Pipeline pipe(*stage, *layout.pipeline, popts, dp ? &dp->grad_sync() : nullptr);
  const float clip = static_cast<float>(f.get_float("clip-grad-norm"));
  const std::vector<Param*> params = stage->params();

  JsonlWriter metrics;
  if (lead && !f.get_string("metrics").empty()) metrics.open(f.get_string("metrics"));
  if (lead) {
    std::printf(
        "tern-train: %s (%lld params) on %s: %lld train / %lld test samples, pipeline of %d stage%s x %d "
        "replica%s (%s), batch %lld per replica in %d micro-batches of %lld, schedule %s%s, %s, %s, "
        "%d thread%s per rank\n%s",
        model_name.c_str(), static_cast<long long>(total_params), dataset.c_str(),
        static_cast<long long>(train.size()), static_cast<long long>(test.size()), P, P == 1 ? "" : "s", D,
        D == 1 ? "" : "s", comm.backend().c_str(), static_cast<long long>(batch), M,
        static_cast<long long>(batch / M), schedule_name(kind), popts.recompute ? " with recomputation" : "",
        optimizer->name().c_str(), schedule->describe().c_str(), omp_get_max_threads(),
        omp_get_max_threads() == 1 ? "" : "s", layout_text.c_str());
    if (resumed) {
      const std::string was = echoed(resumed->config, "pipeline-stages");
      const std::string note =
          !was.empty() && was != std::to_string(P)
              ? detail::concat(" (written with ", was, " pipeline stages, continuing with ", P, ")")
              : "";
      std::printf("resuming from %s: step %lld, epoch %lld, batch %lld%s\n", resumed->source.c_str(),
                  static_cast<long long>(start_step), static_cast<long long>(start_epoch + 1),
                  static_cast<long long>(skip_batches), note.c_str());
    }
    std::fflush(stdout);
  }

  // Collective over the world at the same step on every rank: replica 0's stages send their parts
  // to world rank 0, which writes the one file. world_size records the data-parallel replicas D,
  // the shards each batch is dealt to, which a resume must match (P may change); for a
  // data-parallel run that is its number of ranks, so either kind of run reads the other's.
  int64_t step = start_step;
  auto checkpoint = [&](int64_t epoch, int64_t batches_done) {
    if (ckpt_dir.empty()) return;
    const CheckpointData part = capture_stage(*stage, *optimizer, dp ? &dp->grad_sync() : nullptr,
                                              dp ? layout.data_parallel.get() : nullptr);
    if (layout.replica != 0) return;
    std::optional<CheckpointData> whole = gather_stage_checkpoints(part, *layout.pipeline);
    if (!whole) return;
    whole->model_name = model_name;
    whole->world_size = D;
    whole->step = step;
    whole->epoch = epoch;
    whole->batches_in_epoch = batches_done;
    whole->config = f.echo();
    save_checkpoint_to_dir(ckpt_dir, *whole);
  };

  Sums last_test;
  double train_seconds = 0;
  int64_t train_samples = 0;
  size_t peak_held = 0;
  const int64_t every = f.get_int("checkpoint-every"), log_every = f.get_int("log-every"),
                exit_after = f.get_int("exit-after-steps");
  Batch b;
  for (int64_t epoch = start_epoch; epoch < epochs; ++epoch) {
    loader.start_epoch(epoch);
    if (dp) dp->grad_sync().set_epoch(epoch);
    for (int64_t i = 0; i < skip_batches; ++i) loader.next(b);  // resume mid-epoch
    skip_batches = 0;
    Sums tr;
    char label[64];
    std::snprintf(label, sizeof label, "epoch %lld/%lld", static_cast<long long>(epoch + 1),
                  static_cast<long long>(epochs));
    const auto t0 = Clock::now();
    while (loader.next(b)) {
      optimizer->set_lr(schedule->lr_at(step));
      optimizer->zero_grad();
      const PipelineStepStats st =
          pipe.train_step(pipe.first_stage() ? b.x : Tensor(),
                          pipe.last_stage() ? classification_loss(b.y, M) : PipelineLoss());
      TERN_CHECK(!pipe.last_stage() || std::isfinite(st.loss), "training diverged at step ", step,
                 ": loss is ", st.loss, " (try a smaller --lr)");
      if (clip > 0) clip_over_stages(params, clip, *layout.pipeline);
      optimizer->step();
      ++step;
      peak_held = std::max(peak_held, st.peak_held_bytes);
      if (pipe.last_stage()) {
        tr.loss += st.loss * static_cast<double>(st.samples);
        tr.correct += st.correct;
        tr.samples += st.samples;
      }
      if (log_every > 0 && step % log_every == 0) {
        // Replica 0's last-stage loss, as data-parallel mode logs rank 0's own.
        double loss = st.loss;
        if (P > 1 && layout.replica == 0 && (lead || pipe.last_stage())) {
          Tensor bits = Tensor::empty({1}, DType::i64);
          if (pipe.last_stage()) {
            bits.data<int64_t>()[0] = std::bit_cast<int64_t>(loss);
            layout.pipeline->send(bits, 0, kStepLossTag);
          } else {
            layout.pipeline->recv(bits, P - 1, kStepLossTag);
            loss = std::bit_cast<double>(bits.data<int64_t>()[0]);
          }
        }
        if (lead) metrics.write(JsonObject().add("event", "step").add("step", step).add("loss", loss));
      }
      if (every > 0 && step % every == 0) checkpoint(epoch, loader.batches_done());
      if (exit_after > 0 && step == exit_after) {
        // Every rank reaches here at this step. The barrier lets rank 0 finish receiving (sends
        // do not wait for their receiver) and writing before anyone leaves.
        comm.barrier();
        std::fflush(stdout);
        std::_Exit(75);  // a crash in the middle of training, for the resume test
      }
    }
    if (every == 0) checkpoint(epoch + 1, 0);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const Sums trw = world_sum(tr, comm);
    last_test = world_sum(evaluate(pipe, *stage, test, Shard{layout.replica, D}, eval_batch), comm);
    train_seconds += seconds;
    train_samples += trw.samples;
    if (!lead) continue;
    const auto mean = [](const Sums& s, bool acc) {
      return s.samples == 0
                 ? 0.0
                 : (acc ? static_cast<double>(s.correct) : s.loss) / static_cast<double>(s.samples);
    };
    const double sps = seconds > 0 ? static_cast<double>(trw.samples) / seconds : 0;
    std::printf(
        "%s  train_loss %.4f  train_acc %.2f%%  test_loss %.4f  test_acc %.2f%%  %.0f samples/s  %s\n", label,
        mean(trw, false), 100 * mean(trw, true), mean(last_test, false), 100 * mean(last_test, true), sps,
        format_duration(seconds).c_str());
    std::fflush(stdout);
    metrics.write(JsonObject()
                      .add("event", "epoch")
                      .add("epoch", epoch + 1)
                      .add("train_loss", mean(trw, false))
                      .add("train_accuracy", mean(trw, true))
                      .add("test_loss", mean(last_test, false))
                      .add("test_accuracy", mean(last_test, true))
                      .add("samples_per_s", sps)
                      .add("seconds", seconds)
                      .add("lr", static_cast<double>(optimizer->lr())));
  }

  // Every rank's peak, for the stages of replica 0.
  Tensor held = Tensor::zeros({comm.size()}, DType::i64);
  held.data<int64_t>()[comm.rank()] = static_cast<int64_t>(peak_held);
  if (comm.size() > 1) comm.allreduce(held, ReduceOp::sum);
  if (!lead) return 0;
  std::string per_stage;
  for (int s = 0; s < P; ++s)
    per_stage += detail::concat(s ? "/" : "", static_cast<double>(held.data<int64_t>()[s]) / 1024.0);
  const double accuracy =
      last_test.samples ? static_cast<double>(last_test.correct) / static_cast<double>(last_test.samples) : 0;
  const double test_loss = last_test.samples ? last_test.loss / static_cast<double>(last_test.samples) : 0;
  const double sps = train_seconds > 0 ? static_cast<double>(train_samples) / train_seconds : 0;
  std::printf("activation memory held for backward, peak per stage: %s KiB\n", per_stage.c_str());
  std::printf("test accuracy: %.2f%% (test loss %.4f), %.0f samples/s, %s training\n", 100 * accuracy,
              test_loss, sps, format_duration(train_seconds).c_str());
  JsonObject final_line;
  final_line.add("event", "final")
      .add("model", model_name)
      .add("dataset", dataset)
      .add("ranks", comm.size())
      .add("pipeline_stages", P)
      .add("replicas", D)
      .add("micro_batches", M)
      .add("schedule", schedule_name(kind))
      .add("epochs", epochs)
      .add("test_loss", test_loss)
      .add("test_accuracy", accuracy)
      .add("samples_per_s", sps)
      .add("seconds", train_seconds)
      .add("params", total_params);
  for (int s = 0; s < P; ++s)
    final_line.add("peak_held_bytes_stage" + std::to_string(s), held.data<int64_t>()[s]);
  metrics.write(final_line.add("config", f.echo()));
  return 0;
}

}  // namespace tern
