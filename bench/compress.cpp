// Gradient-compression kernels on one core: GB/s of f32 input for exact top-k (vs the naive
// std::nth_element peer), DGC's sampled threshold selection, and each quantizer's encode and
// decode_add (vs memcpy of the same bytes), and PowerSGD's compute. Ratios are measured in the same run.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/compress/powersgd.h"
#include "comm/compress/quantizers.h"
#include "comm/local/local.h"
#include "comm/compress/sparsify.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#include "runtime/rng.h"

namespace {

using namespace tern;
using Clock = std::chrono::steady_clock;

int64_t parse_count(const std::string& s) {
  const char unit = s.empty() ? '\0' : s.back();
  const int64_t mult = unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1;
  const std::string digits = mult == 1 ? s : s.substr(0, s.size() - 1);
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(digits, &used);
  } catch (...) {
    used = 0;
  }
  if (used != digits.size() || v <= 0) throw UsageError("bad size '" + s + "' in --sizes (e.g. 1M,4M,16M)");
  return v * mult;
}

std::vector<int64_t> parse_sizes(const std::string& list) {
  std::vector<int64_t> sizes;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t comma = std::min(list.find(',', at), list.size());
    sizes.push_back(parse_count(list.substr(at, comma - at)));
    at = comma + 1;
  }
  for (int64_t n : sizes)
    if (n > (int64_t{1} << 31) - 1)
      throw UsageError("--sizes: " + std::to_string(n) + " is over 2^31 - 1 elements");
  return sizes;
}

// Median seconds of `reps` runs of fn (after one untimed warm-up run).
double median_seconds(int reps, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The naive peer: on a copy of |x|, nth_element to the k-th largest, then one pass collecting
// the indices at or above it (the first k of them, so ties do not overflow).
void nth_element_topk(const float* x, int64_t n, int64_t k, std::vector<float>& mag,
                      std::vector<int32_t>& idx) {
  idx.clear();
  if (k <= 0) return;
  mag.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) mag[static_cast<size_t>(i)] = std::fabs(x[i]);
  std::nth_element(mag.begin(), mag.begin() + (k - 1), mag.end(), std::greater<float>());
  const float kth = mag[static_cast<size_t>(k - 1)];
  for (int64_t i = 0; i < n && static_cast<int64_t>(idx.size()) < k; ++i)
    if (std::fabs(x[i]) >= kth) idx.push_back(static_cast<int32_t>(i));
}

struct Row {
  int64_t n;
  std::string op;
  double seconds;
  std::string versus;  // what `ratio` compares against
  double ratio;        // versus's time / this op's time (> 1: this op is faster)
  std::string note;
};

class Table {
 public:
  explicit Table(bool json) : json_(json) {
    if (json_) return;
    std::printf("# one core; GB/s of f32 input; ratio = time of 'vs' / time of op (> 1: op is faster)\n");
    std::printf("%10s  %-24s %10s %9s  %-12s %8s  %s\n", "n", "op", "time(ms)", "GB/s", "vs", "ratio",
                "note");
  }
  void print(const Row& r) {
    const double gbs = static_cast<double>(r.n) * 4 / r.seconds / 1e9;
    if (json_) {
      std::printf("%s\n", JsonObject()
                              .add("n", r.n)
                              .add("op", r.op)
                              .add("time_ms", r.seconds * 1e3)
                              .add("gbs", gbs)
                              .add("versus", r.versus)
                              .add("ratio", r.ratio)
                              .add("note", r.note)
                              .str()
                              .c_str());
    } else {
      std::printf("%10lld  %-24s %10.3f %9.2f  %-12s %8.2f  %s\n", static_cast<long long>(r.n), r.op.c_str(),
                  r.seconds * 1e3, gbs, r.versus.c_str(), r.ratio, r.note.c_str());
    }
    std::fflush(stdout);
  }

 private:
  bool json_;
};

void bench_size(int64_t n, int reps, double ratio, uint64_t seed, Table& table) {
  // Gradient-like input: normal values.
  std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
  Rng rng(seed);
  for (float& v : x) v = rng.normal();
  const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(ratio * static_cast<double>(n))));

  const double t_copy =
      median_seconds(reps, [&] { std::memcpy(y.data(), x.data(), static_cast<size_t>(n) * sizeof(float)); });
  table.print({n, "memcpy", t_copy, "-", 1.0, ""});

  std::vector<int32_t> idx, idx_peer;
  std::vector<float> mag;
  const double t_nth = median_seconds(reps, [&] { nth_element_topk(x.data(), n, k, mag, idx_peer); });
  const double t_topk = median_seconds(reps, [&] {
    idx.clear();
    topk_select(x.data(), n, k, 0, idx);
  });
  // Normal values are distinct almost surely, so both must pick the same set.
  const std::string agree = idx == idx_peer ? "same set" : "DIFFERENT SET";
  table.print({n, "nth_element topk", t_nth, "-", 1.0, "k=" + std::to_string(k)});
  table.print({n, "topk_select", t_topk, "nth_element", t_nth / t_topk, agree});

  Rng sel_rng(seed + 1);
  ThresholdSelectStats stats;
  const double t_thr = median_seconds(reps, [&] {
    idx.clear();
    stats = threshold_select(x.data(), n, k, 0, sel_rng, idx);
  });
  table.print({n, "threshold_select", t_thr, "nth_element", t_nth / t_thr,
               "count=" + std::to_string(idx.size()) + " rounds=" + std::to_string(stats.rounds) +
                   (stats.exact_fallback ? " exact" : "")});

  const std::unique_ptr<Quantizer> quantizers[] = {make_qsgd(16), make_terngrad(), make_signsgd(),
                                                   make_onebit()};
  for (const auto& q : quantizers) {
    std::vector<uint8_t> code(q->encoded_bytes(n));
    Rng qrng(seed + 2);
    const double t_enc = median_seconds(reps, [&] { q->encode(x.data(), n, code.data(), qrng); });
    std::fill(y.begin(), y.end(), 0.0f);
    const double t_dec = median_seconds(reps, [&] { q->decode_add(code.data(), n, 1.0f, y.data()); });
    const std::string bytes = std::to_string(code.size()) + " B";
    table.print({n, q->spec() + " encode", t_enc, "memcpy", t_copy / t_enc, bytes});
    table.print({n, q->spec() + " decode_add", t_dec, "memcpy", t_copy / t_dec, ""});
  }

  // PowerSGD's compute on one rank (no wire): the gradient as a [1024, n/1024] matrix, rank 2,
  // past start_iter: P = MQ, orthonormalise, Q = MᵀP, M̂ = PQᵀ, error feedback.
  const int64_t rows = 1024, cols = n / rows;
  if (cols >= 2) {
    const BucketLayout layout = {Segment{"w", 0, rows * cols, {rows, cols}}};
    PowerSgdOptions o;
    o.rank = 2;
    o.start_iter = 0;
    PowerSgd psgd(o, layout);
    auto one = make_single_communicator();
    Tensor g = Tensor::empty({rows * cols});
    int64_t step = 0;
    const double t_psgd = median_seconds(reps, [&] {
      std::memcpy(g.f32(), x.data(), static_cast<size_t>(rows * cols) * sizeof(float));
      psgd.reduce(g, layout, *one, StepInfo{step++, 0}, nullptr);
    });
    table.print({rows * cols, "powersgd r2 compute", t_psgd, "memcpy", t_copy / t_psgd,
                 std::to_string(rows) + "x" + std::to_string(cols) + ", includes a copy in"});
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags f("tern_compress_bench",
          "GB/s of f32 input for top-k/threshold selection, the quantizers and PowerSGD's compute on one core; ratios vs "
          "std::nth_element and memcpy measured in the same run (median of --reps).");
  f.add_string("sizes", "1M,4M,16M,64M", "element counts, comma-separated (K/M suffixes)");
  f.add_int("reps", 5, "timed repetitions per row (the median is reported)");
  f.add_float("ratio", 0.001, "fraction kept by topk_select and threshold_select");
  f.add_int("seed", 1, "seed of the input and of the stochastic codecs");
  f.add_bool("json", false, "print one JSON object per row instead of the table");
  return run_program(f, argc, argv, [&] {
    const std::vector<int64_t> sizes = parse_sizes(f.get_string("sizes"));
    const int reps = static_cast<int>(f.get_int("reps"));
    const double ratio = f.get_float("ratio");
    if (reps < 1) throw UsageError("--reps must be >= 1");
    if (!(ratio > 0 && ratio <= 1)) throw UsageError("--ratio must be in (0, 1]");
    omp_set_num_threads(1);  // "one core": PowerSGD's GEMMs would otherwise spread over OpenMP threads
    Table table(f.get_bool("json"));
    for (int64_t n : sizes) bench_size(n, reps, ratio, static_cast<uint64_t>(f.get_int("seed")), table);
    return 0;
  });
}
