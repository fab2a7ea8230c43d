// tern-train: trains a model from the zoo on a dataset and reports test accuracy per epoch, on
// one process or data-parallel on N ranks (mpirun, ternrun, or threads with --comm local).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "comm/compress/bucket_compressor.h"
#include "comm/compress/spec.h"
#include "comm/factory.h"
#include "comm/local/local.h"
#include "examples/train_data.h"
#include "examples/train_pipeline.h"
#include "models/registry.h"
#include "optim/factory.h"
#include "optim/lr_schedule.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/dataset.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#include "runtime/io/progress.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/compressor_checkpoint.h"
#include "runtime/train/data_parallel.h"
#include "runtime/train/trainer.h"

namespace {

using namespace tern;

void declare(Flags& f) {
  std::string models;
  for (const auto& n : model_names()) models += (models.empty() ? "" : "|") + n;
  f.add_string("model", "cnn", "model: " + models);
  f.add_string("dataset", "fashion-mnist", "dataset: fashion-mnist|synthetic");
  f.add_string("data-dir", kDefaultFashionMnistDir, "directory with the dataset's IDX files");
  f.add_int("epochs", 3, "passes over the training set");
  f.add_int("batch-size", 64, "samples per step");
  f.add_int("eval-batch-size", 500, "samples per evaluation batch");
  f.add_float("lr", 0.05, "learning rate (peak, when a schedule is used)");
  f.add_string("lr-schedule", "cosine", "constant | step:size=N,gamma=G | cosine[:min_lr=X] (add ,warmup=N)");
  f.add_string("optimizer", "sgd", "sgd|adam|adamw");
  f.add_float("momentum", 0.9, "SGD momentum");
  f.add_bool("nesterov", false, "Nesterov momentum (SGD)");
  f.add_float("weight-decay", 5e-4, "weight decay (not applied to biases and norm scales)");
  f.add_float("clip-grad-norm", 0, "clip the global gradient norm to this (0: off)");
  f.add_float("width-mult", 1.0, "channel multiplier for resnet20, mobilenetv2 and mcunet (its 7x7 and 4x4 stages)");
  f.add_int("limit-train", 0, "use only the first N training samples (0: all)");
  f.add_string("classes", "", "train and test on classes A-B only, e.g. 0-4 (default: all); labels keep their values");
  f.add_int("seed", 42, "seed for initialisation and shuffling");
  f.add_int("threads", 1, "compute threads (oneDNN/OpenMP)");
  f.add_string("metrics", "", "write JSON lines (one per epoch, one final) to this file");
  f.add_string("comm", "auto", "communicator: auto (mpirun -> mpi, ternrun -> tcp, else one rank)|local|tcp|mpi|single");
  f.add_int("ranks", 2, "ranks as threads of this process, for --comm local");
  f.add_float("bucket-mb", 1, "gradient bucket size in MB (DDP's bucket_cap_mb)");
  f.add_string("compress", "none", "gradient compression (data parallel): " + tern::compressor_help());
  f.add_bool("sync-bn", false, "BatchNorm with the global batch's statistics (default: each rank's own)");
  f.add_bool("scale-lr", false, "multiply --lr by the number of ranks (the log says so)");
  f.add_string("checkpoint-dir", "", "write checkpoints to this directory");
  f.add_int("checkpoint-every", 0, "steps between checkpoints (0: at the end of each epoch only)");
  f.add_bool("resume", false, "continue from the latest checkpoint in --checkpoint-dir");
  f.add_int("log-every", 0, "write a {\"event\": \"step\"} metrics line every N steps (0: none)");
  f.add_int("exit-after-steps", 0, "testing: exit abruptly (code 75) after N steps, as a crash would");
  declare_pipeline_flags(f);
}


// Flags that make no sense are usage errors (exit 2), checked before any rank starts.
void validate(const Flags& f) {
  if (f.get_int("epochs") < 1) throw UsageError("--epochs must be at least 1");
  if (f.get_int("batch-size") < 1 || f.get_int("eval-batch-size") < 1)
    throw UsageError("--batch-size and --eval-batch-size must be at least 1");
  if (f.get_int("threads") < 1) throw UsageError("--threads must be at least 1");
  if (f.get_float("lr") <= 0) throw UsageError("--lr must be positive");
  if (f.get_int("limit-train") < 0) throw UsageError("--limit-train must be >= 0");
  if (f.get_float("bucket-mb") <= 0) throw UsageError("--bucket-mb must be positive");
  if (f.get_int("ranks") < 1) throw UsageError("--ranks must be at least 1");
  if (f.get_int("checkpoint-every") < 0 || f.get_int("log-every") < 0 || f.get_int("exit-after-steps") < 0)
    throw UsageError("--checkpoint-every, --log-every and --exit-after-steps must be >= 0");
  try {
    check_compressor_spec(f.get_string("compress"));
  } catch (const Error& e) {
    throw UsageError(std::string("--compress: ") + e.what());
  }
  if (f.get_bool("resume") && f.get_string("checkpoint-dir").empty())
    throw UsageError("--resume needs --checkpoint-dir");
}

struct CompressionPlan {
  GradCompression compression;
  std::string note;  // what was moved out of the optimizer, for the log
};

// Moves what a compressor needs out of the optimizer: DGC's momentum correction replaces SGD's
// momentum (the optimizer's is turned off), and the sparse compressors take weight decay into the
// gradient before compression (as DGC does), so that the sparse update stays exact.
CompressionPlan plan_compression(const Flags& f, const Communicator& comm, float& momentum, float& weight_decay) {
  CompressionPlan plan;
  std::string spec = f.get_string("compress");
  if (spec == "none") return plan;
  if (comm.size() == 1) {
    plan.note = "--compress " + spec + " has no effect on one rank (no gradients are exchanged)";
    return plan;
  }
  const CompressorSpec parsed = CompressorSpec::parse(spec);
  const std::string& name = parsed.name();
  if (name == "dgc") {
    if (f.get_string("optimizer") != "sgd") throw UsageError("--compress dgc needs --optimizer sgd (DGC replaces its momentum)");
    if (!parsed.has("momentum")) spec += detail::concat(spec.find(':') == std::string::npos ? ":" : ",", "momentum=", momentum);
    if (momentum != 0) plan.note = detail::concat("dgc: SGD momentum ", momentum, " moved into DGC's momentum correction");
    momentum = 0;
  }
  if ((name == "dgc" || name == "topk" || name == "randomk") && f.get_string("optimizer") == "sgd") {
    plan.compression.fold_weight_decay = weight_decay;
    if (weight_decay != 0)
      plan.note += detail::concat(plan.note.empty() ? "" : "; ", name, ": weight decay ", weight_decay,
                                  " added to the gradient before compression");
    weight_decay = 0;
  }
  plan.compression.spec = spec;
  plan.compression.seed = static_cast<uint64_t>(f.get_int("seed"));
  return plan;
}

// One rank's training; with one rank `comm` is a single-rank communicator.
int train_rank(const Flags& f, Communicator& comm) {
  if (pipeline_requested(f)) return train_pipeline_rank(f, comm);
  const int64_t epochs = f.get_int("epochs"), batch = f.get_int("batch-size");
  const int64_t eval_batch = f.get_int("eval-batch-size");
  const bool lead = comm.rank() == 0, distributed = comm.size() > 1;
  const std::string model_name = f.get_string("model"), ckpt_dir = f.get_string("checkpoint-dir");

  const std::string dataset = f.get_string("dataset");
  TrainingData data = load_training_data(f);
  Dataset& train = data.train;
  const Dataset& test = data.test;
  const ModelConfig& mc = data.config;
  auto model = make_model(model_name, mc);

  DataLoader loader(train, batch, /*shuffle=*/true, mc.seed, /*drop_last=*/false, Shard{comm.rank(), comm.size()});
  if (loader.num_batches() == 0)
    throw Error(detail::concat("the training set (", train.size(), " samples) is smaller than one global batch (",
                               comm.size(), " ranks x ", batch, ")"));
  const int64_t total_steps = loader.num_batches() * epochs;
  float lr = static_cast<float>(f.get_float("lr"));
  if (f.get_bool("scale-lr")) lr *= static_cast<float>(comm.size());
  float momentum = static_cast<float>(f.get_float("momentum"));
  float weight_decay = static_cast<float>(f.get_float("weight-decay"));
  const CompressionPlan plan = plan_compression(f, comm, momentum, weight_decay);
  auto optimizer = make_optimizer(f.get_string("optimizer"), model->params(), lr, momentum, weight_decay,
                                  f.get_bool("nesterov"));
  auto schedule = make_lr_schedule(f.get_string("lr-schedule"), lr, total_steps);

  // Resume before DataParallel is built: it then broadcasts rank 0's (restored) state anyway.
  int64_t start_epoch = 0, skip_batches = 0, start_step = 0;
  std::optional<CheckpointData> resumed;
  if (f.get_bool("resume")) {
    if (auto ckpt = load_latest_checkpoint(ckpt_dir)) {
      resumed = ckpt;
      if (ckpt->world_size != comm.size())
        throw Error(detail::concat("checkpoint ", ckpt->source, " was written by ", ckpt->world_size,
                                   " ranks; this run has ", comm.size(), " (resume with the same world size)"));
      restore_model(*model, *ckpt, model_name);
      restore_optimizer(*optimizer, *ckpt);
      start_epoch = ckpt->epoch;
      skip_batches = ckpt->batches_in_epoch;
      start_step = ckpt->step;
      if (lead) std::printf("resuming from %s: step %lld, epoch %lld, batch %lld\n", ckpt->source.c_str(),
                            static_cast<long long>(start_step), static_cast<long long>(start_epoch + 1),
                            static_cast<long long>(skip_batches));
    } else if (lead) {
      std::printf("--resume: no checkpoint in %s yet, starting from scratch\n", ckpt_dir.c_str());
    }
  }

  std::unique_ptr<DataParallel> dp;
  TrainerOptions topts;
  topts.clip_grad_norm = static_cast<float>(f.get_float("clip-grad-norm"));
  if (distributed) {
    DataParallelOptions dopts;
    dopts.bucket_bytes = static_cast<size_t>(f.get_float("bucket-mb") * 1024 * 1024);
    dopts.sync_bn = f.get_bool("sync-bn");
    dopts.compression = plan.compression;
    dopts.compression.keep_sparse = optimizer->supports_sparse() && topts.clip_grad_norm == 0;
    dp = std::make_unique<DataParallel>(*model, comm, dopts);
    dp->grad_sync().set_step(start_step);
    if (resumed) restore_compressor(dp->grad_sync(), comm.rank(), *resumed);
    topts.after_backward = [&dp] { dp->sync_gradients(); };
    if (dopts.compression.keep_sparse) topts.sparse_grads = &dp->grad_sync().sparse_grads();
    topts.comm = &comm;
  }
  Trainer trainer(*model, *optimizer, schedule.get(), topts);
  trainer.set_global_step(start_step);

  JsonlWriter metrics;
  if (lead && !f.get_string("metrics").empty()) metrics.open(f.get_string("metrics"));
  if (lead) {
    std::printf("tern-train: %s (%lld params) on %s: %lld train / %lld test samples, %d rank%s (%s) x batch %lld, %s, %s, "
                "%lld thread%s per rank\n",
                model_name.c_str(), static_cast<long long>(model->param_count()), dataset.c_str(),
                static_cast<long long>(train.size()), static_cast<long long>(test.size()), comm.size(),
                comm.size() == 1 ? "" : "s", comm.backend().c_str(), static_cast<long long>(batch),
                optimizer->name().c_str(), schedule->describe().c_str(), static_cast<long long>(omp_get_max_threads()),
                omp_get_max_threads() == 1 ? "" : "s");
    if (f.get_bool("scale-lr"))
      std::printf("--scale-lr: learning rate %g x %d ranks = %g\n", f.get_float("lr"), comm.size(), lr);
    if (!dp && !plan.note.empty()) std::printf("%s\n", plan.note.c_str());
    if (dp && dp->grad_sync().compressed()) {
      const auto specs = dp->grad_sync().bucket_specs();
      for (const AutoChoice& c : dp->grad_sync().auto_choices()) {
        std::string line;
        for (const CandidateCost& cand : c.candidates)
          line += detail::concat(line.empty() ? "" : ", ", cand.spec, " ", cand.predicted_seconds * 1e3, " ms");
        std::printf("auto: predicted per step: %s -> %s\n", line.c_str(), c.best().spec.c_str());
      }
      for (size_t b = 0; b < specs.size(); ++b) {  // one line per run of buckets with the same spec
        size_t e = b;
        while (e + 1 < specs.size() && specs[e + 1] == specs[b]) ++e;
        if (e > b)
          std::printf("compression: buckets %zu-%zu: %s\n", b, e, specs[b].c_str());
        else
          std::printf("compression: bucket %zu: %s\n", b, specs[b].c_str());
        b = e;
      }
      if (!plan.note.empty()) std::printf("%s\n", plan.note.c_str());
      if (topts.sparse_grads != nullptr) std::printf("sparse gradients are applied by the sparse-update kernel\n");
    }
    std::fflush(stdout);
  }

  auto checkpoint = [&](int64_t epoch, int64_t batches_done) {
    if (ckpt_dir.empty()) return;
    CheckpointData data;
    if (dp) capture_compressor(dp->grad_sync(), comm, data);  // collective: every rank's residuals
    if (!lead) return;
    data.model_name = model_name;
    data.world_size = comm.size();
    data.step = trainer.global_step();
    data.epoch = epoch;
    data.batches_in_epoch = batches_done;
    capture_model(*model, data);
    capture_optimizer(*optimizer, data);
    data.config = f.echo();
    save_checkpoint_to_dir(ckpt_dir, data);
  };

  EpochStats last_test;
  double train_seconds = 0;
  int64_t train_samples = 0;
  const int64_t every = f.get_int("checkpoint-every"), log_every = f.get_int("log-every");
  const int64_t exit_after = f.get_int("exit-after-steps");
  GradSyncStats epoch_start;
  double last_epoch_ratio = 1.0, last_epoch_sync_per_step = 0.0;
  for (int64_t epoch = start_epoch; epoch < epochs; ++epoch) {
    loader.start_epoch(epoch);
    if (dp) dp->grad_sync().set_epoch(epoch);
    Batch skipped;
    for (int64_t b = 0; b < skip_batches; ++b) loader.next(skipped);  // resume mid-epoch
    skip_batches = 0;
    char label[64];
    std::snprintf(label, sizeof label, "epoch %lld/%lld", static_cast<long long>(epoch + 1),
                  static_cast<long long>(epochs));
    ProgressBar bar(label, loader.num_batches() * batch, stdout, /*enabled=*/lead);
    const EpochStats tr = trainer.train_epoch(loader, [&](int64_t done, double loss) {
      char extra[32];
      std::snprintf(extra, sizeof extra, "loss %.4f", loss);
      bar.update(done, extra);
      const int64_t step = trainer.global_step();
      if (lead && log_every > 0 && step % log_every == 0) {
        JsonObject event;
        event.add("event", "step").add("step", step).add("loss", trainer.last_loss());
        if (dp) {  // gradient bytes so far, so per-step traffic is the difference of two lines
          const GradSyncStats st = dp->stats();
          event.add("bytes_sent", static_cast<int64_t>(st.bytes_sent))
              .add("bytes_dense", static_cast<int64_t>(st.bytes_dense));
        }
        metrics.write(event);
      }
      if (every > 0 && step % every == 0) checkpoint(epoch, loader.batches_done());
      if (exit_after > 0 && step == exit_after) {
        std::fflush(stdout);
        std::_Exit(75);  // a crash in the middle of training, for the resume test
      }
    });
    if (every == 0) checkpoint(epoch + 1, 0);
    last_test = trainer.evaluate(test, eval_batch);
    train_seconds += tr.seconds;
    train_samples += tr.samples;
    char summary[200];
    std::snprintf(summary, sizeof summary,
                  "train_loss %.4f  train_acc %.2f%%  test_loss %.4f  test_acc %.2f%%  %.0f samples/s  %s",
                  tr.loss, 100 * tr.accuracy, last_test.loss, 100 * last_test.accuracy, tr.samples_per_s(),
                  format_duration(tr.seconds).c_str());
    if (!lead) continue;
    if (bar.active()) {
      bar.finish(summary);
    } else {
      std::printf("%s  %s\n", label, summary);
      std::fflush(stdout);
    }
    JsonObject line;
    line.add("event", "epoch")
        .add("epoch", epoch + 1)
        .add("train_loss", tr.loss)
        .add("train_accuracy", tr.accuracy)
        .add("test_loss", last_test.loss)
        .add("test_accuracy", last_test.accuracy)
        .add("samples_per_s", tr.samples_per_s())
        .add("seconds", tr.seconds)
        .add("lr", static_cast<double>(optimizer->lr()));
    if (dp) {  // rank 0's gradient sync in this epoch: bytes, compression, time, the part not hidden
      const GradSyncStats st = dp->stats();
      const auto d = [](uint64_t now, uint64_t before) { return static_cast<int64_t>(now - before); };
      const int64_t sent = d(st.bytes_sent, epoch_start.bytes_sent), dense = d(st.bytes_dense, epoch_start.bytes_dense);
      const double compress = st.compress_seconds - epoch_start.compress_seconds;
      last_epoch_ratio = sent > 0 ? static_cast<double>(dense) / static_cast<double>(sent) : 1.0;
      last_epoch_sync_per_step = st.steps > epoch_start.steps ? (st.comm_seconds - epoch_start.comm_seconds) /
                                                                     static_cast<double>(st.steps - epoch_start.steps)
                                                               : 0.0;
      line.add("bytes_sent", sent)
          .add("bytes_received", d(st.bytes_received, epoch_start.bytes_received))
          .add("bytes_dense", dense)
          .add("compression_ratio", last_epoch_ratio)
          .add("compress_seconds", compress)
          .add("comm_seconds", st.comm_seconds - epoch_start.comm_seconds - compress)
          .add("comm_exposed_seconds", st.exposed_seconds - epoch_start.exposed_seconds);
      epoch_start = st;
    }
    metrics.write(line);
  }
  if (!lead) return 0;
  const double sps = train_seconds > 0 ? static_cast<double>(train_samples) / train_seconds : 0.0;
  std::printf("test accuracy: %.2f%% (test loss %.4f), %.0f samples/s, %s training\n", 100 * last_test.accuracy,
              last_test.loss, sps, format_duration(train_seconds).c_str());
  JsonObject final_line;
  final_line.add("event", "final")
      .add("model", model_name)
      .add("dataset", dataset)
      .add("ranks", comm.size())
      .add("epochs", epochs)
      .add("test_loss", last_test.loss)
      .add("test_accuracy", last_test.accuracy)
      .add("samples_per_s", sps)
      .add("seconds", train_seconds)
      .add("params", model->param_count());
  if (dp) {
    const GradSyncStats st = dp->stats();
    std::printf("gradient sync: %.1f MB sent per rank, %.2f s communicating, %.0f%% of it hidden behind backward\n",
                static_cast<double>(st.bytes_sent) / 1e6, st.comm_seconds, 100 * st.hidden_fraction());
    if (!dp->grad_sync().auto_choices().empty() && st.steps > 0) {
      // The prediction is for the steady state (after DGC's warm-up): compare with the last epoch.
      double predicted = 0;
      for (const AutoChoice& c : dp->grad_sync().auto_choices()) predicted += c.best().predicted_seconds;
      const double measured = last_epoch_sync_per_step;
      std::printf("auto: predicted %.2f ms of gradient sync per step, measured %.2f ms (last epoch)\n", predicted * 1e3,
                  measured * 1e3);
      final_line.add("auto_predicted_step_comm_seconds", predicted).add("auto_measured_step_comm_seconds", measured);
    }
    if (dp->grad_sync().compressed())
      std::printf("compression: %.2f MB of gradients on the wire per rank vs %.1f MB dense training would send = "
                  "%.1fx less (last epoch %.0fx); %.2f s compressing\n",
                  static_cast<double>(st.bytes_sent) / 1e6, static_cast<double>(st.bytes_dense) / 1e6,
                  st.compression_ratio(), last_epoch_ratio, st.compress_seconds);
    final_line.add("bytes_dense", static_cast<int64_t>(st.bytes_dense))
        .add("compression_ratio", st.compression_ratio())
        .add("last_epoch_compression_ratio", last_epoch_ratio)
        .add("compress_seconds", st.compress_seconds)
        .add("compressor", f.get_string("compress"))
        .add("comm_seconds", st.comm_seconds)
        .add("comm_exposed_seconds", st.exposed_seconds)
        .add("comm_hidden_fraction", st.hidden_fraction())
        .add("bytes_sent", static_cast<int64_t>(st.bytes_sent))
        .add("bytes_received", static_cast<int64_t>(st.bytes_received));
  }
  metrics.write(final_line.add("config", f.echo()));
  return 0;
}

int run(const Flags& f) {
  validate(f);
  omp_set_num_threads(static_cast<int>(f.get_int("threads")));
  const std::string name = f.get_string("comm");
  if (name == "local") {
    const int ranks = static_cast<int>(f.get_int("ranks"));
    run_local(ranks, [&](Communicator& comm) {
      // Threads share the process's cores: split the compute threads between them (the OpenMP
      // setting is per thread, so each rank sets its own).
      omp_set_num_threads(static_cast<int>(std::max<int64_t>(1, f.get_int("threads") / ranks)));
      train_rank(f, comm);
    });
    return 0;
  }
  auto comm = make_communicator(name);
  return train_rank(f, *comm);
}

}  // namespace

int main(int argc, char** argv) {
  tern::Flags flags("tern-train", "Train a model from Tern's zoo, on one process or data-parallel, and report test accuracy.");
  declare(flags);
  return tern::run_program(flags, argc, argv, [&] { return run(flags); });
}
