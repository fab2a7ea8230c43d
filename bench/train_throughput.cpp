// Single-process training throughput: Tern vs PyTorch on the same models, batch and thread count,
// measured in one run (the ratio is the figure: machines here are noisy). Also reports the GEMM
// rate the build reaches on 1024³ and the MLP's shapes beside the machine's measured FMA peak.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "models/registry.h"
#include "optim/sgd.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#include "runtime/kernels/cpu/gemm.h"
#include "runtime/rng.h"
#include "runtime/train/trainer.h"

namespace {

using namespace tern;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Peak single-core fp32 rate: 12 independent AVX-512 FMA chains (enough to cover latency x ports).
__attribute__((target("avx512f"))) double fma_peak_gflops() {
  __m512 acc[12];
  for (auto& a : acc) a = _mm512_set1_ps(1.0f);
  const __m512 m = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  const int64_t iters = 20'000'000;
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < iters; ++i)
    for (auto& a : acc) a = _mm512_fmadd_ps(a, m, b);
  const double s = seconds_since(t0);
  alignas(64) float lanes[16];
  float sink = 0;
  for (auto& a : acc) {
    _mm512_store_ps(lanes, a);
    sink += lanes[0];
  }
  if (sink == 42.0f) std::puts("");  // keep the loop alive
  return static_cast<double>(iters) * 12 * 16 * 2 / s / 1e9;
}

double gemm_gflops(int64_t M, int64_t N, int64_t K, bool ta, bool tb, double min_seconds) {
  Rng rng(1);
  std::vector<float> A(static_cast<size_t>(M * K)), B(static_cast<size_t>(K * N)), C(static_cast<size_t>(M * N));
  for (float& v : A) v = rng.uniform(-1, 1);
  for (float& v : B) v = rng.uniform(-1, 1);
  auto run = [&] { cpu::gemm(ta, tb, M, N, K, 1.0f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.0f, C.data(), N); };
  run();
  int64_t reps = 0;
  const auto t0 = Clock::now();
  do {
    run();
    ++reps;
  } while (seconds_since(t0) < min_seconds);
  return 2.0 * static_cast<double>(M * N * K) * static_cast<double>(reps) / seconds_since(t0) / 1e9;
}

double tern_samples_per_s(const std::string& name, int64_t batch, double min_seconds) {
  ModelConfig mc;  // Fashion-MNIST shape: 1x28x28, 10 classes
  auto model = make_model(name, mc);
  SgdOptions so;
  so.lr = 0.01f;
  so.momentum = 0.9f;
  so.weight_decay = 5e-4f;
  Sgd opt(model->params(), so);
  Trainer trainer(*model, opt, nullptr);
  Rng rng(0);
  Batch b;
  b.x = Tensor::empty({batch, 1, 28, 28});
  for (int64_t i = 0; i < b.x.numel(); ++i) b.x.f32()[i] = rng.normal();
  for (int64_t i = 0; i < batch; ++i) b.y.push_back(static_cast<int32_t>(rng.below(10)));
  for (int i = 0; i < 10; ++i) trainer.train_step(b);  // warm-up: primitive creation, allocator
  int64_t steps = 0;
  const auto t0 = Clock::now();
  do {
    trainer.train_step(b);
    ++steps;
  } while (seconds_since(t0) < min_seconds || steps < 5);
  return static_cast<double>(steps * batch) / seconds_since(t0);
}

// Runs the PyTorch peer; returns samples/s, or a negative value with the reason in `note`.
double torch_samples_per_s(const std::string& script, const std::string& name, int64_t batch, double seconds,
                           const std::string& env, std::string* note) {
  // One thread everywhere: torch's own pool, and OpenBLAS's pthreads, which ignore torch's setting.
  const std::string cmd = env + " OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /usr/bin/python3 " + script + " --model " + name + " --batch-size " +
                          std::to_string(batch) + " --seconds " + std::to_string(seconds) + " --threads 1 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  const int rc = pclose(p);
  const auto key = out.find("\"samples_per_s\": ");
  if (rc != 0 || key == std::string::npos) {
    *note = out.empty() ? "peer failed to run" : out.substr(0, out.find('\n'));
    return -1;
  }
  if (const auto b = out.find("\"blas\": \""); b != std::string::npos) {
    const auto e = out.find('"', b + 9);
    *note = out.substr(b + 9, e - b - 9);
  }
  return std::stod(out.substr(key + 17));
}

// Median of the measurements; -1 (n/a) if there are none or any failed.
double median(std::vector<double> v) {
  if (v.empty()) return -1;
  for (double x : v)
    if (x < 0) return -1;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

int run(const tern::Flags& f);

int main(int argc, char** argv) {
  Flags f("train_throughput", "Training samples/s of Tern vs PyTorch (same models, batch, 1 thread), and GEMM GFLOP/s.");
  f.add_string("models", "mlp,cnn", "comma-separated models to time");
  f.add_int("batch-size", 64, "samples per step");
  f.add_float("seconds", 2.0, "minimum timed seconds per measurement");
  f.add_int("repeats", 3, "measurements per contender, alternated; the median is reported");
  f.add_string("peer", std::string(TERN_SOURCE_DIR) + "/bench/torch_train_peer.py", "PyTorch peer script ('' to skip)");
  f.add_bool("skylakex-peer", true, "also time PyTorch with OPENBLAS_CORETYPE=SkylakeX (its fastest BLAS kernels here)");
  f.add_string("json", "", "also write results as JSON lines to this file");
  return run_program(f, argc, argv, [&] { return run(f); });
}

int run(const Flags& f) {
  omp_set_num_threads(1);
  const double secs = f.get_float("seconds");
  const int64_t batch = f.get_int("batch-size");
  JsonlWriter json;
  if (!f.get_string("json").empty()) json.open(f.get_string("json"));

  const double peak = __builtin_cpu_supports("avx512f") ? fma_peak_gflops() : 0.0;
  std::printf("GEMM (oneDNN dnnl_sgemm, 1 thread), fp32 FMA peak measured: %.0f GFLOP/s\n", peak);
  std::printf("  %-34s %10s %8s\n", "shape (M x N x K)", "GFLOP/s", "of peak");
  struct Shape3 {
    const char* what;
    int64_t M, N, K;
    bool ta, tb;
  };
  const Shape3 shapes[] = {{"1024^3", 1024, 1024, 1024, false, false},
                           {"MLP fc1 fwd  64x512x784 (x.Wt)", 64, 512, 784, false, true},
                           {"MLP fc1 dW  512x784x64 (dyt.x)", 512, 784, 64, true, false},
                           {"MLP fc1 dx   64x784x512 (dy.W)", 64, 784, 512, false, false},
                           {"MLP fc2 fwd  64x256x512", 64, 256, 512, false, true}};
  for (const auto& s : shapes) {
    const double g = gemm_gflops(s.M, s.N, s.K, s.ta, s.tb, secs / 3);
    std::printf("  %-34s %10.1f %7.0f%%\n", s.what, g, peak > 0 ? 100 * g / peak : 0.0);
    json.write(JsonObject().add("bench", "gemm").add("shape", s.what).add("gflops", g).add("peak_gflops", peak));
  }

  std::printf("\nTraining step (forward, loss, backward, SGD momentum), batch %lld, 1 thread, median of %lld:\n",
              static_cast<long long>(batch), static_cast<long long>(f.get_int("repeats")));
  std::printf("  %-6s %14s %14s %8s %16s %8s\n", "model", "tern samp/s", "torch samp/s", "ratio", "torch SkylakeX", "ratio");
  std::string models = f.get_string("models");
  std::string peer_blas;
  size_t start = 0;
  while (start <= models.size()) {
    const size_t comma = models.find(',', start);
    const std::string name = models.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? models.size() + 1 : comma + 1;
    if (name.empty()) continue;
    // Alternate the contenders and keep each one's median, so a burst of load from elsewhere on
    // a shared machine hits both sides rather than one.
    std::vector<double> terns, torches, torches_skx;
    std::string note, note2;
    for (int64_t r = 0; r < f.get_int("repeats"); ++r) {
      terns.push_back(tern_samples_per_s(name, batch, secs));
      if (f.get_string("peer").empty()) continue;
      torches.push_back(torch_samples_per_s(f.get_string("peer"), name, batch, secs, "OPENBLAS_CORETYPE=", &note));
      if (f.get_bool("skylakex-peer"))
        torches_skx.push_back(
            torch_samples_per_s(f.get_string("peer"), name, batch, secs, "OPENBLAS_CORETYPE=SkylakeX", &note2));
    }
    const double tern = median(terns), torch = median(torches), torch_skx = median(torches_skx);
    auto cell = [](double v) { return v > 0 ? std::to_string(static_cast<int64_t>(v)) : std::string("n/a"); };
    auto ratio = [&](double v) {
      char b[16];
      std::snprintf(b, sizeof b, "%.2fx", tern / v);
      return v > 0 ? std::string(b) : std::string("n/a");
    };
    std::printf("  %-6s %14.0f %14s %8s %16s %8s\n", name.c_str(), tern, cell(torch).c_str(), ratio(torch).c_str(),
                cell(torch_skx).c_str(), ratio(torch_skx).c_str());
    if (torch < 0 && !note.empty()) std::printf("         peer: %s\n", note.c_str());
    if (torch > 0) peer_blas = note;
    json.write(JsonObject()
                   .add("bench", "train_throughput")
                   .add("model", name)
                   .add("batch_size", batch)
                   .add("tern_samples_per_s", tern)
                   .add("torch_samples_per_s", torch)
                   .add("ratio", torch > 0 ? tern / torch : 0.0)
                   .add("torch_skylakex_samples_per_s", torch_skx)
                   .add("ratio_skylakex", torch_skx > 0 ? tern / torch_skx : 0.0));
  }
  if (!peer_blas.empty()) std::printf("PyTorch's GEMM went through %s\n", peer_blas.c_str());
  return 0;
}
