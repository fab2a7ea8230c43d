// tern-gpt: trains gpt-tiny, a small decoder-only transformer, on the characters of Debian's
// fortunes, reports the validation loss in nats per character, and samples text from it; on one
// process, or split into a pipeline of stages on several ranks (examples/gpt_pipeline.cpp).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "comm/factory.h"
#include "examples/gpt_pipeline.h"
#include "models/registry.h"
#include "optim/clip.h"
#include "optim/factory.h"
#include "optim/lr_schedule.h"
#include "runtime/data/fortunes.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#include "runtime/io/progress.h"
#include "runtime/nn/loss.h"

namespace {

using namespace tern;

void declare(Flags& f) {
  f.add_string("data-dir", kDefaultFortunesDir, "directory of fortune files (Debian package `fortunes`)");
  f.add_float("validation-fraction", 0.1, "the last part of the text, by offset, that is held out");
  f.add_int("steps", 600, "optimizer steps");
  f.add_int("batch-size", 16, "windows per step");
  f.add_int("seq-len", 64, "characters per window (the model's context)");
  f.add_int("d-model", 128, "model width");
  f.add_int("layers", 4, "transformer blocks");
  f.add_int("heads", 4, "attention heads (must divide --d-model)");
  f.add_string("optimizer", "adamw", "sgd|adam|adamw");
  f.add_float("lr", 2e-3, "peak learning rate");
  f.add_string("lr-schedule", "cosine:min_lr=1e-4",
               "constant | step:size=N,gamma=G | cosine[:min_lr=X] (add ,warmup=N)");
  f.add_float("momentum", 0.9, "SGD momentum");
  f.add_float("weight-decay", 0.1,
              "weight decay of the weight matrices and embeddings (not of biases and norms)");
  f.add_float("clip-grad-norm", 1.0, "clip the global gradient norm to this (0: off)");
  f.add_int("eval-every", 100, "steps between validation losses (0: only before and after training)");
  f.add_int("eval-windows", 64, "validation windows, evenly spaced over the validation text");
  f.add_int("sample-chars", 300, "characters to sample at the end (0: none)");
  f.add_float("temperature", 0.8, "sampling temperature (0: always the most likely character)");
  f.add_string("prompt", "", "text the sample continues (default: a new line)");
  f.add_int("seed", 42, "seed for initialisation, batches and sampling");
  f.add_int("threads", 1, "compute threads (oneDNN/OpenMP)");
  f.add_string("metrics", "", "write JSON lines (one per evaluation, one final) to this file");
  declare_gpt_parallel_flags(f);
}

void validate(const Flags& f) {
  for (const char* name :
       {"steps", "batch-size", "seq-len", "d-model", "layers", "heads", "eval-windows", "threads"})
    if (f.get_int(name) < 1) throw UsageError(std::string("--") + name + " must be at least 1");
  if (f.get_int("d-model") % f.get_int("heads") != 0) throw UsageError("--heads must divide --d-model");
  if (f.get_int("eval-every") < 0 || f.get_int("sample-chars") < 0)
    throw UsageError("--eval-every and --sample-chars must be >= 0");
  if (f.get_float("lr") <= 0) throw UsageError("--lr must be positive");
  if (f.get_float("temperature") < 0) throw UsageError("--temperature must be >= 0");
  if (f.get_float("clip-grad-norm") < 0) throw UsageError("--clip-grad-norm must be >= 0");
  const double vf = f.get_float("validation-fraction");
  if (vf <= 0 || vf >= 1) throw UsageError("--validation-fraction must be in (0, 1)");
  validate_gpt_parallel_flags(f);
}

// Mean next-character cross-entropy (nats per character) of logits [B, T, V] against B*T targets.
LossResult lm_loss(const Tensor& logits, const std::vector<int32_t>& targets, Tensor* dlogits) {
  return softmax_cross_entropy(logits.reshape({-1, logits.dim(2)}), targets, dlogits);
}

// One optimisation step on one batch: forward, loss, backward, clipping, update. Returns the
// batch's loss. The optimizer's learning rate is set by the caller.
float train_step(Sequential& model, Optimizer& optimizer, const TextBatch& batch, float clip_norm,
                 Tensor& dlogits) {
  optimizer.zero_grad();
  const Tensor logits = model.forward(batch.inputs);
  const LossResult r = lm_loss(logits, batch.targets, &dlogits);
  model.backward(dlogits.reshape(logits.shape()));
  if (clip_norm > 0) clip_grad_norm(optimizer.params(), clip_norm);
  optimizer.step();
  return r.loss;
}

// Mean loss over fixed validation windows, in chunks of `batch` windows (eval mode, no gradients).
double evaluate(Sequential& model, const TextBatch& windows, int64_t batch) {
  model.eval();
  const int64_t n = windows.inputs.dim(0), T = windows.inputs.dim(1);
  double sum = 0;
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t e = std::min(n, b + batch);
    const std::vector<int32_t> targets(windows.targets.begin() + b * T, windows.targets.begin() + e * T);
    sum += static_cast<double>(lm_loss(model.forward(windows.inputs.slice(b, e)), targets, nullptr).loss) *
           static_cast<double>(e - b);
  }
  model.train();
  return sum / static_cast<double>(n);
}

// Continues `prompt` by n characters, each drawn from softmax(logits / temperature) of the last
// position given at most the model's context of seq_len characters (temperature 0: argmax).
std::string sample(Sequential& model, const CharCorpus& corpus, const std::string& prompt, int64_t n,
                   float temperature, int64_t seq_len, Rng& rng) {
  model.eval();
  std::vector<int32_t> ids = corpus.encode(prompt);
  const size_t start = ids.size();
  const int64_t V = corpus.vocab_size();
  std::vector<double> p;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t T = std::min<int64_t>(seq_len, static_cast<int64_t>(ids.size()));
    Tensor x = Tensor::empty({1, T}, DType::i32);
    std::copy(ids.end() - T, ids.end(), x.data<int32_t>());
    const Tensor out = model.forward(x);  // held: the logits point into it
    ids.push_back(draw_next_id(out.f32() + (T - 1) * V, V, temperature, rng, p));
  }
  model.train();
  return corpus.decode(std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.end()));
}

// Training on one process, without a pipeline.
int train_single(const Flags& f) {
  const int64_t steps = f.get_int("steps"), batch = f.get_int("batch-size"), seq_len = f.get_int("seq-len");
  const int64_t eval_every = f.get_int("eval-every");
  const uint64_t seed = static_cast<uint64_t>(f.get_int("seed"));

  const CharCorpus corpus = load_fortunes(f.get_string("data-dir"), f.get_float("validation-fraction"));
  const TextBatch val_windows = spread_windows(corpus.validation, f.get_int("eval-windows"), seq_len);

  const ModelConfig mc = gpt_model_config(f, corpus);
  auto model = make_model("gpt-tiny", mc);
  model->set_input_grad(false);  // nothing wants the gradient of token ids

  const float lr = static_cast<float>(f.get_float("lr"));
  auto optimizer = make_optimizer(f.get_string("optimizer"), model->params(), lr,
                                  static_cast<float>(f.get_float("momentum")),
                                  static_cast<float>(f.get_float("weight-decay")));
  auto schedule = make_lr_schedule(f.get_string("lr-schedule"), lr, steps);
  const float clip = static_cast<float>(f.get_float("clip-grad-norm"));

  std::printf(
      "tern-gpt: gpt-tiny (%lld params: d_model %lld, %lld layers, %lld heads) on %s: %zu train / %zu "
      "validation characters, vocabulary %lld; batch %lld x %lld characters, %s, %s, %d thread%s\n",
      static_cast<long long>(model->param_count()), static_cast<long long>(mc.d_model),
      static_cast<long long>(mc.n_layer), static_cast<long long>(mc.n_head), corpus.name.c_str(),
      corpus.train.size(), corpus.validation.size(), static_cast<long long>(mc.vocab),
      static_cast<long long>(batch), static_cast<long long>(seq_len), optimizer->name().c_str(),
      schedule->describe().c_str(), omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s");
  std::fflush(stdout);

  JsonlWriter metrics;
  if (!f.get_string("metrics").empty()) metrics.open(f.get_string("metrics"));
  auto report = [&](int64_t step, double train_loss, double seconds) {
    const double val = evaluate(*model, val_windows, batch);
    JsonObject line;
    line.add("event", "eval").add("step", step);
    if (step > 0) line.add("train_loss", train_loss);  // the mean over the steps since the last evaluation
    metrics.write(line.add("val_loss", val).add("seconds", seconds));
    return val;
  };

  const double initial = report(0, 0, 0);
  std::printf("step 0  val_loss %.4f nats/char (%.3f bits/char)\n", initial, initial / std::log(2.0));
  std::fflush(stdout);

  Rng batch_rng(seed, /*stream=*/11);
  Tensor dlogits;
  double val = initial, seconds = 0;
  const int64_t interval = eval_every > 0 ? eval_every : steps;
  for (int64_t done = 0; done < steps;) {
    const int64_t until = std::min(steps, done + interval);
    char label[64];
    std::snprintf(label, sizeof label, "steps %lld-%lld", static_cast<long long>(done + 1),
                  static_cast<long long>(until));
    ProgressBar bar(label, until - done);
    double loss_sum = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = done; s < until; ++s) {
      optimizer->set_lr(schedule->lr_at(s));
      const TextBatch b = random_windows(corpus.train, batch, seq_len, batch_rng);
      loss_sum += train_step(*model, *optimizer, b, clip, dlogits);
      char extra[32];
      std::snprintf(extra, sizeof extra, "loss %.4f", loss_sum / static_cast<double>(s - done + 1));
      bar.update(s - done + 1, extra);
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds += dt;
    const double train_loss = loss_sum / static_cast<double>(until - done);
    val = report(until, train_loss, seconds);
    char summary[200];
    std::snprintf(summary, sizeof summary,
                  "train_loss %.4f  val_loss %.4f nats/char (%.3f bits/char)  %.0f chars/s", train_loss, val,
                  val / std::log(2.0), static_cast<double>((until - done) * batch * seq_len) / dt);
    if (bar.active()) {
      bar.finish(summary);
    } else {
      std::printf("%s  %s\n", label, summary);
      std::fflush(stdout);
    }
    done = until;
  }
  std::printf("validation loss: %.4f nats/char (%.3f bits/char) after %lld steps, %s training\n", val,
              val / std::log(2.0), static_cast<long long>(steps), format_duration(seconds).c_str());

  std::string text;
  if (const int64_t n = f.get_int("sample-chars"); n > 0) {
    const std::string prompt = sample_prompt(f, corpus);
    Rng sample_rng(seed, /*stream=*/12);
    const float temperature = static_cast<float>(f.get_float("temperature"));
    text = sample(*model, corpus, prompt, n, temperature, seq_len, sample_rng);
    std::printf("sample (temperature %g, %lld characters):\n%s%s\n", temperature, static_cast<long long>(n),
                f.was_set("prompt") ? prompt.c_str() : "", text.c_str());
  }
  metrics.write(JsonObject()
                    .add("event", "final")
                    .add("model", "gpt-tiny")
                    .add("params", model->param_count())
                    .add("steps", steps)
                    .add("initial_val_loss", initial)
                    .add("val_loss", val)
                    .add("seconds", seconds)
                    .add("sample", text)
                    .add("config", f.echo()));
  return 0;
}

int run(const Flags& f) {
  validate(f);
  omp_set_num_threads(static_cast<int>(f.get_int("threads")));
  if (f.get_string("comm") == "local") return train_gpt_local(f);
  auto comm = make_communicator(f.get_string("comm"));  // one rank unless started by ternrun or mpirun
  if (comm->size() > 1 || gpt_parallel_requested(f)) return train_gpt_rank(f, *comm);
  return train_single(f);
}

}  // namespace

int main(int argc, char** argv) {
  tern::Flags flags(
      "tern-gpt",
      "Train gpt-tiny on the characters of Debian's fortunes; report validation loss (nats/char) and "
      "sample text.");
  declare(flags);
  return tern::run_program(flags, argc, argv, [&] { return run(flags); });
}
