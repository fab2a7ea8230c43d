#include "examples/gpt_pipeline.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "comm/local/local.h"
#include "optim/factory.h"
#include "optim/lr_schedule.h"
#include "runtime/data/distributed_sampler.h"
#include "runtime/io/jsonl.h"
#include "runtime/io/progress.h"
#include "runtime/nn/loss.h"
#include "runtime/train/data_parallel.h"
#include "runtime/train/pipeline.h"
#include "runtime/train/pipeline_partition.h"

namespace tern {

void declare_gpt_parallel_flags(Flags& f) {
  f.add_int("pipeline-stages", 1,
            "pipeline stages P: a world of P x D ranks trains D data-parallel copies of a P-stage pipeline "
            "(--batch-size is the global batch, split between the D copies)");
  f.add_int("micro-batches", 0,
            "micro-batches per step and pipeline (0: the largest divisor of the batch per copy up to 2 x P, "
            "1 without a pipeline)");
  f.add_string("schedule", "1f1b", "pipeline schedule: gpipe|1f1b");
  f.add_string("stages", "params",
               "modules (embedding, blocks, head) per pipeline stage: params (balanced parameter counts) | "
               "time (measured forward+backward) | counts such as 2:1:1:2");
  f.add_bool("recompute", false,
             "pipeline: keep only each waiting micro-batch's input; recompute its forward");
  f.add_string("comm", "auto",
               "communicator: auto (mpirun -> mpi, ternrun -> tcp, else one process)|local|tcp|mpi|single");
  f.add_int("ranks", 4, "ranks as threads of this process, for --comm local");
}

void validate_gpt_parallel_flags(const Flags& f) {
  if (f.get_int("pipeline-stages") < 1) throw UsageError("--pipeline-stages must be at least 1");
  if (f.get_int("micro-batches") < 0) throw UsageError("--micro-batches must be >= 0 (0: automatic)");
  if (f.get_int("ranks") < 1) throw UsageError("--ranks must be at least 1");
  try {
    if (parse_schedule(f.get_string("schedule")) == ScheduleKind::forward_only)
      throw Error("'forward' is not a training schedule");
  } catch (const Error& e) {
    throw UsageError(std::string("--schedule: ") + e.what());
  }
}

bool gpt_parallel_requested(const Flags& f) {
  return f.get_int("pipeline-stages") > 1 || f.get_int("micro-batches") > 1 ||
         f.get_string("comm") == "local";
}

ModelConfig gpt_model_config(const Flags& f, const CharCorpus& corpus) {
  ModelConfig mc;
  mc.vocab = corpus.vocab_size();
  mc.seq_len = f.get_int("seq-len");
  mc.d_model = f.get_int("d-model");
  mc.n_layer = f.get_int("layers");
  mc.n_head = f.get_int("heads");
  mc.seed = static_cast<uint64_t>(f.get_int("seed"));
  return mc;
}

std::string sample_prompt(const Flags& f, const CharCorpus& corpus) {
  const std::string prompt = f.get_string("prompt");
  if (!prompt.empty()) return prompt;
  return corpus.id_of('\n') >= 0 ? "\n" : std::string(1, static_cast<char>(corpus.vocab[0]));
}

int32_t draw_next_id(const float* logits, int64_t V, float temperature, Rng& rng, std::vector<double>& p) {
  auto next = static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  if (temperature <= 0) return next;
  p.resize(static_cast<size_t>(V));
  const double mx = logits[next];
  double sum = 0;
  for (int64_t v = 0; v < V; ++v)
    sum += (p[static_cast<size_t>(v)] = std::exp((logits[v] - mx) / temperature));
  double u = rng.uniform() * sum;
  for (next = 0; next < V - 1 && u >= p[static_cast<size_t>(next)]; ++next) u -= p[static_cast<size_t>(next)];
  return next;
}

namespace {

using Clock = std::chrono::steady_clock;

// Adds x over the world. Only some ranks (the last stages) hold a value; the others pass 0. The
// double travels as two floats (value and rounding remainder), so that with one contributor the
// sum comes back exact rather than rounded to f32.
double world_sum(double x, Communicator& comm) {
  if (comm.size() == 1) return x;
  const auto hi = static_cast<float>(x);
  Tensor t = Tensor::from({2}, {hi, static_cast<float>(x - static_cast<double>(hi))});
  comm.allreduce(t, ReduceOp::sum);
  return static_cast<double>(t.f32()[0]) + static_cast<double>(t.f32()[1]);
}

// clip_grad_norm (optim/clip.h) over a model split into stages: the global norm adds every
// stage's sum of squares (the replicas of a stage agree after their gradient sync).
void clip_across_stages(const std::vector<Param*>& params, float max_norm, Communicator& pipeline) {
  double sq = 0;
  for (const Param* p : params) {
    if (!p->trainable) continue;
    const float* g = p->grad.f32();
    for (int64_t i = 0; i < p->grad.numel(); ++i) sq += static_cast<double>(g[i]) * g[i];
  }
  const double norm = std::sqrt(world_sum(sq, pipeline));
  TERN_CHECK(std::isfinite(norm), "the gradient norm is not finite (try a smaller --lr)");
  if (norm <= max_norm) return;
  const auto scale = static_cast<float>(max_norm / (norm + 1e-6));
  for (Param* p : params) {
    if (!p->trainable) continue;
    float* g = p->grad.f32();
    for (int64_t i = 0; i < p->grad.numel(); ++i) g[i] *= scale;
  }
}

// Mean next-character cross-entropy of micro-batch i's logits [n, T, V] against its rows of
// `targets` (row-major [rows, T], the rows this pipeline trains on).
PipelineLoss lm_pipeline_loss(const std::vector<int32_t>& targets) {
  return [&targets](const Tensor& out, int i, Tensor* dout) {
    const int64_t rows = out.dim(0), T = out.dim(1);
    const auto first = targets.begin() + i * rows * T;
    const LossResult r = softmax_cross_entropy(out.reshape({-1, out.dim(2)}),
                                               std::vector<int32_t>(first, first + rows * T), dout);
    if (dout != nullptr) *dout = dout->reshape(out.shape());
    return r;
  };
}

// Rows [at, at + n) of the validation windows, padded to a multiple of M with copies of the
// first row (the loss leaves them out).
Tensor padded_rows(const Tensor& inputs, int64_t at, int64_t n, int64_t padded) {
  if (padded == n) return inputs.slice(at, at + n);
  Tensor x = Tensor::empty({padded, inputs.dim(1)}, DType::i32);
  x.slice(0, n).copy_from(inputs.slice(at, at + n));
  for (int64_t r = n; r < padded; ++r) x.slice(r, r + 1).copy_from(inputs.slice(at, at + 1));
  return x;
}

// Mean loss (nats/char) over the validation windows: each replica takes its contiguous share, in
// chunks of at most `chunk` windows through the pipeline in eval mode; the world adds the sums.
double evaluate(Pipeline& pipe, Module& stage, const TextBatch& windows, Shard shard, int64_t chunk,
                Communicator& world) {
  const int M = pipe.options().micro_batches;
  const int64_t n = windows.inputs.dim(0), T = windows.inputs.dim(1);
  const auto [begin, end] = shard_range(n, shard);
  const int64_t per = std::max<int64_t>(M, chunk / M * M);
  double sum = 0;
  stage.eval();
  for (int64_t at = begin; at < end; at += per) {
    const int64_t rows = std::min(per, end - at), padded = (rows + M - 1) / M * M, mb = padded / M;
    const Tensor x = pipe.first_stage() ? padded_rows(windows.inputs, at, rows, padded) : Tensor();
    pipe.forward_step(x, [&](const Tensor& out, int i, Tensor*) {
      const int64_t first = i * mb, real = std::clamp<int64_t>(rows - first, 0, mb);
      if (real == 0) return LossResult{0, 0};
      const auto y = windows.targets.begin() + (at + first) * T;
      const LossResult r = softmax_cross_entropy(out.slice(0, real).reshape({-1, out.dim(2)}),
                                                 std::vector<int32_t>(y, y + real * T), nullptr);
      sum += static_cast<double>(r.loss) * static_cast<double>(real);
      return r;
    });
  }
  stage.train();
  return world_sum(sum, world) / static_cast<double>(n);
}

// Autoregressive sampling through the pipeline at batch 1: every character is one forward
// through all stages; the last stage draws it and broadcasts it to the pipeline's stages, and
// stage 0 feeds it back in. Same draws as gpt.cpp's sample() given the same logits.
std::string sample(Pipeline& pipe, Module& stage, const CharCorpus& corpus, const std::string& prompt,
                   int64_t n, float temperature, int64_t seq_len, Rng& rng) {
  Communicator& comm = pipe.communicator();
  stage.eval();
  std::vector<int32_t> ids = corpus.encode(prompt);
  const size_t start = ids.size();
  const int64_t V = corpus.vocab_size();
  std::vector<double> p;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t T = std::min<int64_t>(seq_len, static_cast<int64_t>(ids.size()));
    Tensor x;
    if (pipe.first_stage()) {
      x = Tensor::empty({1, T}, DType::i32);
      std::copy(ids.end() - T, ids.end(), x.data<int32_t>());
    }
    Tensor next = Tensor::zeros({1});  // ids < 256 are exact in f32
    pipe.forward_step(x, [&](const Tensor& out, int, Tensor*) {
      next.f32()[0] = static_cast<float>(draw_next_id(out.f32() + (T - 1) * V, V, temperature, rng, p));
      return LossResult{0, 0};
    });
    if (comm.size() > 1) comm.broadcast(next, comm.size() - 1);
    ids.push_back(static_cast<int32_t>(next.f32()[0]));
  }
  stage.train();
  return corpus.decode(std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.end()));
}

// The largest divisor of the rows per replica up to 2 x P (1 for one stage): enough micro-batches
// to keep the bubble (P - 1) / (M + P - 1) under a third.
int auto_micro_batches(int P, int64_t rows) {
  if (P == 1) return 1;
  for (int m = 2 * P; m > 1; --m)
    if (rows % m == 0) return m;
  return 1;
}

}  // namespace

int train_gpt_rank(const Flags& f, Communicator& comm) {
  const int P = static_cast<int>(f.get_int("pipeline-stages"));
  const int64_t steps = f.get_int("steps"), batch = f.get_int("batch-size"), seq_len = f.get_int("seq-len");
  const int64_t eval_every = f.get_int("eval-every");
  const uint64_t seed = static_cast<uint64_t>(f.get_int("seed"));
  if (comm.size() % P != 0)
    throw UsageError(
        detail::concat("--pipeline-stages ", P, " must divide the ", comm.size(), " rank",
                       comm.size() == 1 ? "" : "s", " (world = stages x data-parallel copies); start ", P,
                       " x D ranks: ternrun -n ", P, ", mpirun -np ", P, " or --comm local --ranks ", P));
  if (f.get_int("layers") + 2 < P)
    throw UsageError(detail::concat("--pipeline-stages ", P, " needs at least ", P,
                                    " modules to split; --layers ", f.get_int("layers"), " gives ",
                                    f.get_int("layers") + 2, " (the embedding, the blocks and the head)"));
  const int D = comm.size() / P;
  if (batch % D != 0)
    throw UsageError(detail::concat("--batch-size ", batch, " must be a multiple of the ", D,
                                    " data-parallel copies of the pipeline"));
  const int64_t rows = batch / D;
  const int M = f.get_int("micro-batches") > 0 ? static_cast<int>(f.get_int("micro-batches"))
                                               : auto_micro_batches(P, rows);
  if (rows % M != 0)
    throw UsageError(detail::concat("the ", rows, " windows per pipeline (--batch-size ", batch, " / ", D,
                                    " data-parallel copies) must be a multiple of --micro-batches ", M));
  const ScheduleKind kind = parse_schedule(f.get_string("schedule"));

  PipelineLayout layout = make_pipeline_layout(comm, P);
  const bool lead = comm.rank() == 0;
  const CharCorpus corpus = load_fortunes(f.get_string("data-dir"), f.get_float("validation-fraction"));
  const TextBatch val_windows = spread_windows(corpus.validation, f.get_int("eval-windows"), seq_len);

  // Every rank builds the whole model, agrees on the split, keeps its stage and frees the rest.
  const ModelConfig mc = gpt_model_config(f, corpus);
  auto full = make_model("gpt-tiny", mc);
  full->set_input_grad(false);  // nothing wants the gradient of token ids
  const int64_t total_params = full->param_count();
  const StageBounds bounds =
      partition_model(f.get_string("stages"), *full, P, val_windows.inputs.slice(0, rows / M), &comm);
  const std::string layout_text = describe_stages(*full, bounds);
  auto stage = take_stage(*full, bounds, layout.stage);
  full.reset();

  const float lr = static_cast<float>(f.get_float("lr"));
  auto optimizer = make_optimizer(f.get_string("optimizer"), stage->params(), lr,
                                  static_cast<float>(f.get_float("momentum")),
                                  static_cast<float>(f.get_float("weight-decay")));
  auto schedule = make_lr_schedule(f.get_string("lr-schedule"), lr, steps);
  const float clip = static_cast<float>(f.get_float("clip-grad-norm"));
  std::unique_ptr<DataParallel> dp;
  if (D > 1) dp = std::make_unique<DataParallel>(*stage, *layout.data_parallel, DataParallelOptions{});
  PipelineOptions popts;
  popts.schedule = kind;
  popts.micro_batches = M;
  popts.recompute = f.get_bool("recompute");
  Pipeline pipe(*stage, *layout.pipeline, popts, dp ? &dp->grad_sync() : nullptr);
  const std::vector<Param*> params = stage->params();
  const Shard shard{layout.replica, D};

  if (lead) {
    std::printf(
        "tern-gpt: gpt-tiny (%lld params: d_model %lld, %lld layers, %lld heads) on %s: %zu train / %zu "
        "validation characters, vocabulary %lld; pipeline of %d stage%s x %d cop%s (%s), batch %lld x %lld "
        "characters, %lld per copy in %d micro-batch%s, schedule %s%s, %s, %s, %d thread%s per rank\n%s",
        static_cast<long long>(total_params), static_cast<long long>(mc.d_model),
        static_cast<long long>(mc.n_layer), static_cast<long long>(mc.n_head), corpus.name.c_str(),
        corpus.train.size(), corpus.validation.size(), static_cast<long long>(mc.vocab), P, P == 1 ? "" : "s",
        D, D == 1 ? "y" : "ies", comm.backend().c_str(), static_cast<long long>(batch),
        static_cast<long long>(seq_len), static_cast<long long>(rows), M, M == 1 ? "" : "es",
        schedule_name(kind), popts.recompute ? " with recomputation" : "", optimizer->name().c_str(),
        schedule->describe().c_str(), omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s",
        layout_text.c_str());
    std::fflush(stdout);
  }

  JsonlWriter metrics;
  if (lead && !f.get_string("metrics").empty()) metrics.open(f.get_string("metrics"));
  auto report = [&](int64_t step, double train_loss, double seconds) {
    const double val = evaluate(pipe, *stage, val_windows, shard, rows, comm);
    JsonObject line;
    line.add("event", "eval").add("step", step);
    if (step > 0) line.add("train_loss", train_loss);  // the mean over the steps since the last evaluation
    if (lead) metrics.write(line.add("val_loss", val).add("seconds", seconds));
    return val;
  };
  const double initial = report(0, 0, 0);
  if (lead) {
    std::printf("step 0  val_loss %.4f nats/char (%.3f bits/char)\n", initial, initial / std::log(2.0));
    std::fflush(stdout);
  }

  // Every rank draws the same global batches as the single-process run; copy r trains on rows
  // [r * rows, (r + 1) * rows) of each.
  Rng batch_rng(seed, /*stream=*/11);
  double val = initial, seconds = 0, wait_seconds = 0;
  size_t peak_held = 0;
  const int64_t interval = eval_every > 0 ? eval_every : steps;
  for (int64_t done = 0; done < steps;) {
    const int64_t until = std::min(steps, done + interval);
    char label[64];
    std::snprintf(label, sizeof label, "steps %lld-%lld", static_cast<long long>(done + 1),
                  static_cast<long long>(until));
    ProgressBar bar(label, until - done, stdout, lead);
    double loss_sum = 0;  // last stages only
    const auto t0 = Clock::now();
    for (int64_t s = done; s < until; ++s) {
      optimizer->set_lr(schedule->lr_at(s));
      const TextBatch b = random_windows(corpus.train, batch, seq_len, batch_rng);
      const int64_t r0 = layout.replica * rows;
      const std::vector<int32_t> targets(b.targets.begin() + r0 * seq_len,
                                         b.targets.begin() + (r0 + rows) * seq_len);
      optimizer->zero_grad();
      const PipelineStepStats st =
          pipe.train_step(pipe.first_stage() ? b.inputs.slice(r0, r0 + rows) : Tensor(),
                          pipe.last_stage() ? lm_pipeline_loss(targets) : PipelineLoss());
      TERN_CHECK(!pipe.last_stage() || std::isfinite(st.loss), "training diverged at step ", s + 1,
                 ": loss is ", st.loss, " (try a smaller --lr)");
      if (clip > 0) clip_across_stages(params, clip, *layout.pipeline);
      optimizer->step();
      loss_sum += st.loss;
      wait_seconds += st.wait_seconds;
      peak_held = std::max(peak_held, st.peak_held_bytes);
      bar.update(s - done + 1);
    }
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    seconds += dt;
    const double train_loss = world_sum(loss_sum, comm) / static_cast<double>(D * (until - done));
    val = report(until, train_loss, seconds);
    if (lead) {
      char summary[200];
      std::snprintf(summary, sizeof summary,
                    "train_loss %.4f  val_loss %.4f nats/char (%.3f bits/char)  %.0f chars/s", train_loss,
                    val, val / std::log(2.0), static_cast<double>((until - done) * batch * seq_len) / dt);
      if (bar.active()) {
        bar.finish(summary);
      } else {
        std::printf("%s  %s\n", label, summary);
        std::fflush(stdout);
      }
    }
    done = until;
  }
  // Per stage of copy 0: how long it waited for its neighbours, and what it held for backward.
  Tensor per_rank = Tensor::zeros({2 * comm.size()});
  per_rank.f32()[2 * comm.rank()] = static_cast<float>(wait_seconds);
  per_rank.f32()[2 * comm.rank() + 1] = static_cast<float>(static_cast<double>(peak_held) / 1024.0);
  if (comm.size() > 1) comm.allreduce(per_rank, ReduceOp::sum);
  if (lead) {
    std::string waits, held;
    for (int s = 0; s < P; ++s) {
      waits += detail::concat(s ? "/" : "", format_duration(per_rank.f32()[2 * s]));
      held += detail::concat(s ? "/" : "", static_cast<int64_t>(std::lround(per_rank.f32()[2 * s + 1])));
    }
    std::printf("per stage: waiting for neighbours %s, activations held for backward at most %s KiB\n",
                waits.c_str(), held.c_str());
    std::printf("validation loss: %.4f nats/char (%.3f bits/char) after %lld steps, %s training\n", val,
                val / std::log(2.0), static_cast<long long>(steps), format_duration(seconds).c_str());
    std::fflush(stdout);
  }

  std::string text;
  if (const int64_t n = f.get_int("sample-chars"); n > 0) {
    // A second pipeline of one micro-batch: one window at a time, every character a forward.
    PipelineOptions one;
    one.schedule = ScheduleKind::gpipe;
    one.micro_batches = 1;
    Pipeline sampler(*stage, *layout.pipeline, one);
    const std::string prompt = sample_prompt(f, corpus);
    Rng sample_rng(seed, /*stream=*/12);
    const float temperature = static_cast<float>(f.get_float("temperature"));
    text = sample(sampler, *stage, corpus, prompt, n, temperature, seq_len, sample_rng);
    if (lead)
      std::printf("sample (temperature %g, %lld characters):\n%s%s\n", temperature, static_cast<long long>(n),
                  f.was_set("prompt") ? prompt.c_str() : "", text.c_str());
  }
  if (!lead) return 0;
  metrics.write(JsonObject()
                    .add("event", "final")
                    .add("model", "gpt-tiny")
                    .add("params", total_params)
                    .add("steps", steps)
                    .add("ranks", comm.size())
                    .add("pipeline_stages", P)
                    .add("replicas", D)
                    .add("micro_batches", M)
                    .add("schedule", schedule_name(kind))
                    .add("initial_val_loss", initial)
                    .add("val_loss", val)
                    .add("seconds", seconds)
                    .add("sample", text)
                    .add("config", f.echo()));
  return 0;
}

int train_gpt_local(const Flags& f) {
  const int ranks = static_cast<int>(f.get_int("ranks"));
  run_local(ranks, [&](Communicator& comm) {
    // Threads share the process's cores: split the compute threads between them (the OpenMP
    // setting is per thread, so each rank sets its own).
    omp_set_num_threads(static_cast<int>(std::max<int64_t>(1, f.get_int("threads") / ranks)));
    train_gpt_rank(f, comm);
  });
  return 0;
}

}  // namespace tern
