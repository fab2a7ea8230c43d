// Pipeline parallelism: measured step time and bubble of GPipe and 1F1B against the ideal
// (P - 1) / (M + P - 1), and the activation memory each rank holds for backward.
//
// Ranks are threads (the local backend). Timing: each stage is one layer of a fixed cost by
// construction (forward and backward wait a set time, almost without using a core), so P stages run
// concurrently even on a machine with fewer cores than stages; what is measured is the
// schedule, the runtime (cache swaps, handshakes, sends, receives) and the waits between stages,
// not how the cores were shared. Real kernels on P threads of a 2-core machine would time the
// core sharing instead. The bubble is measured per stage as 1 - (its measured compute time) /
// (step time), averaged over stages. Memory: bytes of what each rank holds for backward (see
// PipelineStepStats), from the same runs and from a real model of the zoo, which does not
// depend on the cores.
//
// Kernels (--kernels runs only this): micro-batches are small, so a stage's Linear layers see 1..4
// rows; the table times oneDNN's sgemm against the tiny-batch kernels (runtime/kernels/cpu/
// tiny_linear.h) on the zoo's Linear shapes, one thread, and an mlp split over 2 real stages with
// either path. Here the stages do use the cores: 2 threads, so run it on 2 idle cores.
#include "runtime/train/pipeline.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "comm/local/local.h"
#include "models/registry.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#include "runtime/kernels/cpu/linear.h"
#include "runtime/kernels/cpu/tiny_linear.h"
#include "runtime/nn/linear.h"
#include "runtime/train/pipeline_partition.h"

namespace {

using namespace tern;
using Clock = std::chrono::steady_clock;

std::vector<int> parse_list(const std::string& flag, const std::string& list) {
  std::vector<int> out;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t comma = std::min(list.find(',', at), list.size());
    const std::string item = list.substr(at, comma - at);
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 1)
      throw UsageError("--" + flag + ": expected positive integers separated by commas, got '" + list + "'");
    out.push_back(v);
    at = comma + 1;
  }
  return out;
}

// A layer of fixed cost: forward and backward each wait their time (sleeping, so stages do not
// compete for cores), pass a fresh copy of the activation on, and keep their input for backward
// like a real layer.
class FixedCost : public Module {
 public:
  FixedCost(double forward_s, double backward_s) : forward_s_(forward_s), backward_s_(backward_s) {}
  Tensor forward(const Tensor& x) override {
    wait(forward_s_);
    x_ = x;
    return x.clone();
  }
  Tensor backward(const Tensor& dy) override {
    wait(backward_s_);
    return input_grad() ? dy.clone() : Tensor();
  }
  std::string describe() const override { return "FixedCost"; }
  void swap_forward_state(ForwardState& s) override { s.swap(x_); }

 private:
  // Sleeps until shortly before the deadline, then yields until it: a plain sleep wakes up tens
  // of microseconds late, by a different amount each time, and that jitter (not the schedule)
  // would idle the neighbours. The yielding costs a core about 2% of the wait.
  static void wait(double s) {
    const auto deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    std::this_thread::sleep_until(deadline - std::chrono::microseconds(200));
    while (Clock::now() < deadline) std::this_thread::yield();
  }
  double forward_s_, backward_s_;
  Tensor x_;
};

// A loss with a fixed gradient: the last stage's part of the step costs nothing to speak of.
LossResult constant_loss(const Tensor& out, int, Tensor* dout) {
  if (dout) *dout = Tensor::full(out.shape(), 1.0 / static_cast<double>(out.numel()));
  return {1.0f, 0};
}

struct TimedRow {
  int stages, micro_batches;
  std::string schedule;
  double step_s, ideal_s;
  double bubble, bubble_formula;
  std::vector<size_t> peak_held;  // per rank
  std::vector<int> peak_in_flight;
};

TimedRow time_pipeline(int P, int M, ScheduleKind kind, const Flags& f) {
  const double fwd = f.get_float("forward-ms") * 1e-3, bwd = f.get_float("backward-ms") * 1e-3;
  const int64_t rows = f.get_int("rows"), width = f.get_int("width");
  const int warmup = static_cast<int>(f.get_int("warmup")), steps = static_cast<int>(f.get_int("steps"));
  const auto Pz = static_cast<size_t>(P);
  // Per rank, per timed step: the step's seconds and the compute seconds in it.
  std::vector<std::vector<double>> seconds(Pz), compute(Pz);
  TimedRow row{P, M, schedule_name(kind), 0, (M + P - 1) * (fwd + bwd), 0, ideal_bubble(P, M), {}, {}};
  row.peak_held.assign(Pz, 0);
  row.peak_in_flight.assign(Pz, 0);
  run_local(P, [&](Communicator& comm) {
    omp_set_num_threads(1);
    const auto r = static_cast<size_t>(comm.rank());
    Sequential stage;
    stage.emplace<FixedCost>(fwd, bwd);
    stage.set_input_grad(comm.rank() > 0);
    PipelineOptions opts;
    opts.schedule = kind;
    opts.micro_batches = M;
    Pipeline pipe(stage, comm, opts);
    const Tensor batch = comm.rank() == 0 ? Tensor::full({rows * M, width}, 0.5) : Tensor();
    for (int s = 0; s < warmup + steps; ++s) {
      comm.barrier();
      const PipelineStepStats st = pipe.train_step(batch, constant_loss);
      if (s < warmup) continue;
      seconds[r].push_back(st.seconds);
      compute[r].push_back(st.compute_seconds);
      row.peak_held[r] = std::max(row.peak_held[r], st.peak_held_bytes);
      row.peak_in_flight[r] = std::max(row.peak_in_flight[r], st.peak_in_flight);
    }
  });
  // A step lasts as long as its slowest rank; the median step over the timed ones.
  std::vector<double> step(static_cast<size_t>(steps), 0), bubble(static_cast<size_t>(steps), 0);
  for (size_t s = 0; s < step.size(); ++s) {
    for (size_t r = 0; r < Pz; ++r) step[s] = std::max(step[s], seconds[r][s]);
    for (size_t r = 0; r < Pz; ++r) bubble[s] += (1 - compute[r][s] / step[s]) / P;
  }
  std::vector<size_t> order(step.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return step[a] < step[b]; });
  const size_t mid = order[order.size() / 2];
  row.step_s = step[mid];
  row.bubble = bubble[mid];
  return row;
}

// Peak bytes held for backward per rank, on a real model, one step of M micro-batches.
std::vector<size_t> model_memory(const std::string& model_name, int P, int M, ScheduleKind kind,
                                 int64_t rows) {
  std::vector<size_t> peak(static_cast<size_t>(P), 0);
  run_local(P, [&](Communicator& comm) {
    omp_set_num_threads(1);
    auto full = make_model(model_name, ModelConfig{});
    auto stage = take_stage(*full, partition_by_params(*full, P), comm.rank());
    full.reset();
    PipelineOptions opts;
    opts.schedule = kind;
    opts.micro_batches = M;
    Pipeline pipe(*stage, comm, opts);
    const ModelConfig mc;
    PipelineStepStats st;
    if (model_takes_tokens(model_name)) {  // ids [rows, seq_len] in, logits [rows, seq_len, vocab] out
      const Tensor ids = comm.rank() == 0 ? Tensor::zeros({rows * M, mc.seq_len}, DType::i32) : Tensor();
      const std::vector<int32_t> targets(static_cast<size_t>(rows * mc.seq_len), 1);
      st = pipe.train_step(ids, [&](const Tensor& out, int, Tensor* d) {
        Tensor flat;
        const LossResult r =
            softmax_cross_entropy(out.reshape({-1, out.dim(-1)}), targets, d ? &flat : nullptr);
        if (d) *d = flat.reshape(out.shape());
        return r;
      });
    } else {
      const Tensor x =
          comm.rank() == 0 ? Tensor::full({rows * M, mc.in_channels, mc.height, mc.width}, 0.1) : Tensor();
      const std::vector<int32_t> labels(static_cast<size_t>(rows * M), 1);
      st = pipe.train_step(x, classification_loss(labels, M));
    }
    peak[static_cast<size_t>(comm.rank())] = st.peak_held_bytes;
  });
  return peak;
}

std::string kib_list(const std::vector<size_t>& bytes) {
  std::string out;
  char buf[32];
  for (size_t b : bytes) {
    std::snprintf(buf, sizeof buf, "%s%.1f", out.empty() ? "" : "/", static_cast<double>(b) / 1024.0);
    out += buf;
  }
  return out;
}

// ---- Tiny-batch Linear kernels vs oneDNN ----

// Median seconds per call of each function, sampled in turn (a, b, c, a, b, c, ...) so that a
// neighbour's load on the shared machine falls on all of them alike. Each sample repeats the call
// until it lasts ~0.2 ms, well above the clock's resolution.
std::vector<double> median_call_seconds(const std::vector<std::function<void()>>& fns, int samples) {
  std::vector<int> calls(fns.size(), 1);
  for (size_t i = 0; i < fns.size(); ++i) {
    fns[i]();  // warm caches and oneDNN's kernel selection
    for (;;) {
      const auto t0 = Clock::now();
      for (int c = 0; c < calls[i]; ++c) fns[i]();
      if (std::chrono::duration<double>(Clock::now() - t0).count() >= 2e-4 || calls[i] >= (1 << 20)) break;
      calls[i] *= 2;
    }
  }
  std::vector<std::vector<double>> t(fns.size());
  for (int s = 0; s < samples; ++s)
    for (size_t i = 0; i < fns.size(); ++i) {
      const auto t0 = Clock::now();
      for (int c = 0; c < calls[i]; ++c) fns[i]();
      t[i].push_back(std::chrono::duration<double>(Clock::now() - t0).count() / calls[i]);
    }
  std::vector<double> med;
  for (auto& v : t) {
    std::sort(v.begin(), v.end());
    med.push_back(v[v.size() / 2]);
  }
  return med;
}

struct LinearShape {
  std::string layer;  // model.fcK, K counting the model's Linear layers from 1
  int64_t in, out;
};

// The Linear layers of the zoo models whose pipeline stages see micro-batch rows as n, read from
// the models themselves. gpt-tiny's are not here: its linears see rows x seq_len (64) rows, never
// a tiny batch.
std::vector<LinearShape> tiny_shapes() {
  std::vector<LinearShape> shapes;
  for (const char* name : {"mlp", "cnn"}) {
    auto model = make_model(name, ModelConfig{});
    int k = 0;
    model->visit([&](Module& m) {
      if (const auto* fc = dynamic_cast<const Linear*>(&m))
        shapes.push_back({std::string(name) + ".fc" + std::to_string(++k), fc->weight.value.dim(1),
                          fc->weight.value.dim(0)});
    });
  }
  return shapes;
}

// Median step time of the mlp split over 2 stages (by parameters), 1F1B, M micro-batches of
// `rows` rows, with the tiny kernels allowed and with oneDNN forced, steps alternating between
// the two (the switch is process-wide; it flips between barriers, when no stage runs a kernel).
std::pair<double, double> mlp_pipeline_step(int64_t rows, int M, int warmup, int steps) {
  // Per rank, per step (both paths interleaved): the step's seconds on that rank.
  std::vector<std::vector<double>> seconds(2);
  const bool was_enabled = cpu::tiny_linear_enabled();
  run_local(2, [&](Communicator& comm) {
    omp_set_num_threads(1);
    auto full = make_model("mlp", ModelConfig{});
    auto stage = take_stage(*full, partition_by_params(*full, 2), comm.rank());
    full.reset();
    stage->set_input_grad(comm.rank() > 0);
    PipelineOptions opts;
    opts.micro_batches = M;
    Pipeline pipe(*stage, comm, opts);
    const ModelConfig mc;
    Rng rng(7);
    Tensor x;
    if (comm.rank() == 0) {
      x = Tensor::empty({rows * M, mc.in_channels, mc.height, mc.width});
      float* p = x.f32();
      for (int64_t i = 0; i < x.numel(); ++i) p[i] = rng.uniform(0.0f, 1.0f);
    }
    std::vector<int32_t> labels(static_cast<size_t>(rows * M));
    for (auto& l : labels) l = static_cast<int32_t>(rng.below(static_cast<uint32_t>(mc.num_classes)));
    const PipelineLoss loss = classification_loss(labels, M);
    for (int s = 0; s < 2 * (warmup + steps); ++s) {
      const bool tiny = s % 2 == 0;
      comm.barrier();
      if (comm.rank() == 0) cpu::set_tiny_linear_enabled(tiny);
      comm.barrier();
      stage->zero_grad();
      const PipelineStepStats st = pipe.train_step(x, loss);
      if (s >= 2 * warmup) seconds[static_cast<size_t>(comm.rank())].push_back(st.seconds);
    }
  });
  cpu::set_tiny_linear_enabled(was_enabled);
  std::vector<double> on, off;  // a step lasts as long as its slower stage
  for (size_t s = 0; s < seconds[0].size(); ++s)
    (s % 2 == 0 ? on : off).push_back(std::max(seconds[0][s], seconds[1][s]));
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return {median(on), median(off)};
}

int kernel_tables(const Flags& f, JsonlWriter& json) {
  const std::vector<int> ns = parse_list("kernel-rows", f.get_string("kernel-rows"));
  const int samples = static_cast<int>(f.get_int("kernel-samples"));
  if (samples < 1) throw UsageError("--kernel-samples must be at least 1");
  omp_set_num_threads(1);
  std::printf(
      "# Linear kernels at micro-batch rows n: oneDNN sgemm vs tiny-batch kernels, one thread, microseconds "
      "per call\n# (median of %d samples, taken in turn); x = dnnl/tiny (> 1: tiny is faster); bwd = dx + "
      "dW + db; pick = what linear_forward/backward use\n",
      samples);
  std::printf("%-8s %5s %4s %4s %9s %9s %6s %9s %9s %6s  %s\n", "layer", "in", "out", "n", "fwd_dnnl",
              "fwd_tiny", "x", "bwd_dnnl", "bwd_tiny", "x", "pick fwd/bwd");
  Rng rng(11);
  for (const LinearShape& sh : tiny_shapes()) {
    for (int n : ns) {
      auto fill = [&](int64_t count) {
        std::vector<float> v(static_cast<size_t>(count));
        for (float& e : v) e = rng.uniform(-1.0f, 1.0f);
        return v;
      };
      const int64_t in = sh.in, out = sh.out;
      const auto x = fill(n * in), w = fill(out * in), b = fill(out), dy = fill(n * out);
      std::vector<float> y(static_cast<size_t>(n * out)), dx(static_cast<size_t>(n * in));
      std::vector<float> dw(static_cast<size_t>(out * in)), db(static_cast<size_t>(out));
      // The tiny path exactly as linear_backward runs it, whatever the dispatch rule says.
      const std::vector<std::function<void()>> fns{
          [&] { cpu::linear_forward_gemm(x.data(), w.data(), b.data(), y.data(), n, in, out); },
          [&] { cpu::tiny_linear_forward(x.data(), w.data(), b.data(), y.data(), n, in, out); },
          [&] {
            cpu::linear_backward_gemm(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), n, in,
                                      out);
          },
          [&] {
            cpu::tiny_linear_backward_data(w.data(), dy.data(), dx.data(), n, in, out);
            cpu::tiny_linear_backward_weight(x.data(), dy.data(), dw.data(), db.data(), n, in, out);
          }};
      const std::vector<double> t = median_call_seconds(fns, samples);
      const bool pick_fwd = cpu::linear_forward_uses_tiny(n, in, out);
      const bool pick_bwd = cpu::linear_backward_uses_tiny(n, in, out);
      std::printf("%-8s %5lld %4lld %4d %9.2f %9.2f %6.2f %9.2f %9.2f %6.2f  %s/%s\n", sh.layer.c_str(),
                  static_cast<long long>(in), static_cast<long long>(out), n, t[0] * 1e6, t[1] * 1e6,
                  t[0] / t[1], t[2] * 1e6, t[3] * 1e6, t[2] / t[3], pick_fwd ? "tiny" : "dnnl",
                  pick_bwd ? "tiny" : "dnnl");
      std::fflush(stdout);
      JsonObject line;
      json.write(line.add("bench", "tiny_linear")
                     .add("layer", sh.layer)
                     .add("in", in)
                     .add("out", out)
                     .add("rows", n)
                     .add("forward_dnnl_seconds", t[0])
                     .add("forward_tiny_seconds", t[1])
                     .add("backward_dnnl_seconds", t[2])
                     .add("backward_tiny_seconds", t[3])
                     .add("dispatch_forward_tiny", pick_fwd)
                     .add("dispatch_backward_tiny", pick_bwd));
    }
  }
  const std::vector<int> rows = parse_list("e2e-rows", f.get_string("e2e-rows"));
  const int M = static_cast<int>(f.get_int("e2e-micro-batches"));
  const int steps = static_cast<int>(f.get_int("e2e-steps"));
  if (M < 1 || steps < 1) throw UsageError("--e2e-micro-batches and --e2e-steps must be at least 1");
  std::printf(
      "\n# mlp as a 2-stage pipeline (1f1b, stages by params, ranks as threads, 1 OpenMP thread each),\n"
      "# M = %d micro-batches of `rows` rows; median step over %d steps each, alternating:\n"
      "# pick = the dispatch (tiny where linear.cpp's rule says), dnnl = oneDNN forced; x = dnnl/pick\n",
      M, steps);
  std::printf("%4s %12s %12s %6s\n", "rows", "step_ms_pick", "step_ms_dnnl", "x");
  for (int r : rows) {
    const auto [pick_s, dnnl_s] = mlp_pipeline_step(r, M, static_cast<int>(f.get_int("warmup")), steps);
    std::printf("%4d %12.3f %12.3f %6.2f\n", r, pick_s * 1e3, dnnl_s * 1e3, dnnl_s / pick_s);
    std::fflush(stdout);
    JsonObject line;
    json.write(line.add("bench", "tiny_linear_mlp_pipeline")
                   .add("rows", r)
                   .add("micro_batches", M)
                   .add("step_seconds_dispatch", pick_s)
                   .add("step_seconds_dnnl", dnnl_s));
  }
  return 0;
}

int run(const Flags& f) {
  const std::vector<int> stages = parse_list("stages", f.get_string("stages"));
  const std::vector<int> micro = parse_list("micro-batches", f.get_string("micro-batches"));
  if (f.get_float("forward-ms") <= 0 || f.get_float("backward-ms") <= 0)
    throw UsageError("--forward-ms and --backward-ms must be positive");
  if (f.get_int("steps") < 1 || f.get_int("warmup") < 0 || f.get_int("rows") < 1 || f.get_int("width") < 1)
    throw UsageError("--steps, --rows and --width must be at least 1, --warmup at least 0");
  JsonlWriter json;
  if (!f.get_string("json").empty()) json.open(f.get_string("json"));
  if (f.get_bool("kernels")) return kernel_tables(f, json);
  const ScheduleKind kinds[] = {ScheduleKind::gpipe, ScheduleKind::one_f_one_b};

  std::printf(
      "# pipeline step time: stages of fixed cost (forward %.2f ms, backward %.2f ms per micro-batch of "
      "[%lld, %lld] f32), ranks as threads, median of %lld steps\n",
      f.get_float("forward-ms"), f.get_float("backward-ms"), static_cast<long long>(f.get_int("rows")),
      static_cast<long long>(f.get_int("width")), static_cast<long long>(f.get_int("steps")));
  std::printf(
      "# ideal = (M+P-1)(f+b); bubble = 1 - compute/step per stage, averaged; formula = (P-1)/(M+P-1);\n"
      "# extra = (bubble - formula) x step: idle per stage beyond the schedule's (message latency, jitter);\n"
      "# held = peak KiB held for backward per rank (stage 0/1/...)\n");
  std::printf("%2s %3s %-6s %9s %9s %7s %8s %8s %7s %8s  %s\n", "P", "M", "sched", "step_ms", "ideal_ms",
              "step/id", "bubble", "formula", "err", "extra_ms", "held KiB per rank");
  int within = 0, checked = 0;
  for (int P : stages) {
    for (int M : micro) {
      for (ScheduleKind kind : kinds) {
        const TimedRow row = time_pipeline(P, M, kind, f);
        const double err = row.bubble_formula > 0
                               ? std::fabs(row.bubble - row.bubble_formula) / row.bubble_formula
                               : std::fabs(row.bubble);
        const bool goal = M >= 4 * P;
        if (goal) {
          ++checked;
          within += err <= 0.10;
        }
        const double extra_ms = (row.bubble - row.bubble_formula) * row.step_s * 1e3;
        std::printf("%2d %3d %-6s %9.2f %9.2f %7.3f %8.4f %8.4f %6.1f%%%s %8.2f  %s\n", P, M,
                    row.schedule.c_str(), row.step_s * 1e3, row.ideal_s * 1e3, row.step_s / row.ideal_s,
                    row.bubble, row.bubble_formula, 100 * err, goal ? (err <= 0.10 ? " " : "!") : " ",
                    extra_ms, kib_list(row.peak_held).c_str());
        std::fflush(stdout);
        JsonObject line;
        line.add("bench", "pipeline_time")
            .add("stages", P)
            .add("micro_batches", M)
            .add("schedule", row.schedule)
            .add("step_seconds", row.step_s)
            .add("ideal_seconds", row.ideal_s)
            .add("bubble", row.bubble)
            .add("bubble_formula", row.bubble_formula)
            .add("bubble_relative_error", err)
            .add("extra_idle_seconds", extra_ms * 1e-3);
        for (size_t r = 0; r < row.peak_held.size(); ++r)
          line.add("peak_held_bytes_rank" + std::to_string(r), static_cast<int64_t>(row.peak_held[r]));
        json.write(line);
      }
    }
  }
  std::printf("# bubble within 10%% of the formula at M >= 4P: %d of %d rows\n\n", within, checked);

  const std::string model = f.get_string("model");
  if (model.empty()) return kernel_tables(f, json);
  const int64_t rows = f.get_int("model-rows");
  std::printf(
      "# activation memory held for backward, model %s, %lld rows per micro-batch, stages by params\n",
      model.c_str(), static_cast<long long>(rows));
  std::printf("# goal: 1F1B's peak <= P/M of GPipe's on every rank\n");
  std::printf("%2s %3s %-34s %-34s %9s %7s\n", "P", "M", "gpipe KiB per rank", "1f1b KiB per rank",
              "max ratio", "P/M");
  int ok = 0, rows_done = 0;
  for (int P : stages) {
    for (int M : micro) {
      const std::vector<size_t> g = model_memory(model, P, M, ScheduleKind::gpipe, rows);
      const std::vector<size_t> o = model_memory(model, P, M, ScheduleKind::one_f_one_b, rows);
      double worst = 0;
      for (size_t r = 0; r < g.size(); ++r)
        if (g[r] > 0) worst = std::max(worst, static_cast<double>(o[r]) / static_cast<double>(g[r]));
      const double bound = std::min(1.0, static_cast<double>(P) / M);
      ++rows_done;
      ok += worst <= bound + 1e-12;
      std::printf("%2d %3d %-34s %-34s %9.3f %7.3f%s\n", P, M, kib_list(g).c_str(), kib_list(o).c_str(),
                  worst, bound, worst <= bound + 1e-12 ? "" : " !");
      std::fflush(stdout);
      JsonObject line;
      line.add("bench", "pipeline_memory").add("model", model).add("stages", P).add("micro_batches", M);
      for (size_t r = 0; r < g.size(); ++r) {
        line.add("gpipe_peak_held_bytes_rank" + std::to_string(r), static_cast<int64_t>(g[r]));
        line.add("1f1b_peak_held_bytes_rank" + std::to_string(r), static_cast<int64_t>(o[r]));
      }
      json.write(line.add("max_ratio", worst).add("bound", bound));
    }
  }
  std::printf("# 1F1B within P/M of GPipe on every rank: %d of %d rows\n\n", ok, rows_done);
  return kernel_tables(f, json);
}

}  // namespace

int main(int argc, char** argv) {
  tern::Flags f("tern_pipeline_bench",
                "Pipeline parallelism: step time and bubble of gpipe and 1f1b against (P-1)/(M+P-1), and the "
                "activation memory per rank.");
  f.add_string("stages", "2,4", "pipeline stages P, comma separated");
  f.add_string("micro-batches", "1,2,4,8,16,32", "micro-batches M per step, comma separated");
  // Long enough that the scheduler's jitter on a shared machine (tens of microseconds per wake-up,
  // more when loaded) stays small next to a stage's work; --forward-ms 2 shows its effect.
  f.add_float("forward-ms", 10.0, "fixed forward time of each stage per micro-batch");
  f.add_float("backward-ms", 20.0, "fixed backward time of each stage per micro-batch");
  f.add_int("rows", 4, "rows per micro-batch of the timed runs");
  f.add_int("width", 1024, "f32 values per row of the timed runs' activations");
  f.add_int("steps", 5, "timed steps per row (the median is reported)");
  f.add_int("warmup", 1, "untimed steps first");
  f.add_string("model", "cnn", "zoo model for the memory table, e.g. cnn or gpt-tiny (empty: skip it)");
  f.add_int("model-rows", 4, "rows per micro-batch of the memory table");
  f.add_bool("kernels", false, "run only the tiny-batch Linear kernel table (oneDNN vs tiny), mlp rows too");
  f.add_string("kernel-rows", "1,2,4", "rows n of the kernel table, comma separated");
  f.add_int("kernel-samples", 41, "timed samples per kernel (the median is reported)");
  f.add_string("e2e-rows", "1,2,3,4", "micro-batch rows of the mlp pipeline rows, comma separated");
  f.add_int("e2e-micro-batches", 8, "micro-batches per step of the mlp pipeline rows");
  f.add_int("e2e-steps", 30, "timed steps per path of the mlp pipeline rows (the median is reported)");
  f.add_string("json", "", "write one JSON line per row to this file");
  return tern::run_program(f, argc, argv, [&] { return run(f); });
}
