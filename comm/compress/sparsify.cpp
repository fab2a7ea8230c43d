#include "comm/compress/sparsify.h"

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>

#include "runtime/error.h"
#include "runtime/kernels/cpu/sparse_update.h"

namespace tern {

namespace {

// Selection works on the bit pattern of |x|: for non-negative floats, unsigned-integer order is
// magnitude order, so a threshold is a key and histograms of key digits find the k-th largest
// exactly. NaN patterns sort above infinity, so a NaN is sent rather than hidden in a residual.
inline uint32_t magnitude_key(float x) { return std::bit_cast<uint32_t>(x) & 0x7fffffffu; }
inline float key_value(uint32_t key) { return std::bit_cast<float>(key); }

// The cut that yields exactly k entries: every key above `key`, and the first `equal_taken` entries
// (in index order) whose key equals it, which breaks ties toward the lower index.
struct Cut {
  uint32_t key = 0;
  int64_t equal_taken = INT64_MAX;
};

// One radix digit: walks the histogram from the largest bin down to the bin holding the k-th
// largest; returns that bin and how many of its entries are still needed (>= 1).
std::pair<uint32_t, int64_t> find_bin(const uint32_t* hist, uint32_t bins, int64_t k) {
  int64_t above = 0;
  for (uint32_t b = bins; b-- > 0;) {
    if (above + hist[b] >= k) return {b, k - above};
    above += hist[b];
  }
  return {0, k - above};  // unreachable for 1 <= k <= m
}

// The k-th largest of m keys (1 <= k <= m) by a three-digit radix select (11 + 10 + 10 bits of the
// 31-bit key): one histogram pass over all keys, one pass keeping the keys of the chosen top-digit
// bin, then two small passes over those.
template <typename KeyAt>
Cut kth_largest(int64_t m, int64_t k, KeyAt key_at) {
  // Four interleaved histograms, so that runs of equal digits do not serialise on one counter.
  constexpr uint32_t kTopBins = 1u << 11;
  std::vector<uint32_t> hist(4 * kTopBins, 0);
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    ++hist[0 * kTopBins + (key_at(i) >> 20)];
    ++hist[1 * kTopBins + (key_at(i + 1) >> 20)];
    ++hist[2 * kTopBins + (key_at(i + 2) >> 20)];
    ++hist[3 * kTopBins + (key_at(i + 3) >> 20)];
  }
  for (; i < m; ++i) ++hist[key_at(i) >> 20];
  for (uint32_t b = 0; b < kTopBins; ++b)
    hist[b] += hist[kTopBins + b] + hist[2 * kTopBins + b] + hist[3 * kTopBins + b];
  const auto [b1, k1] = find_bin(hist.data(), kTopBins, k);

  std::vector<uint32_t> keys;
  keys.reserve(hist[b1]);
  for (int64_t j = 0; j < m; ++j) {
    const uint32_t key = key_at(j);
    if ((key >> 20) == b1) keys.push_back(key);
  }
  uint32_t low[1024] = {};
  for (uint32_t key : keys) ++low[(key >> 10) & 1023u];
  const auto [b2, k2] = find_bin(low, 1024, k1);
  const uint32_t prefix = (b1 << 10) | b2;
  std::fill(low, low + 1024, 0u);
  for (uint32_t key : keys)
    if ((key >> 10) == prefix) ++low[key & 1023u];
  const auto [b3, k3] = find_bin(low, 1024, k2);
  return {(prefix << 10) | b3, k3};
}

// Appends base + i for the entries of x[0, n) that pass `cut`, in index order; stops early and
// returns false once more than `cap` have been appended. Blocks with no key at or above the cut
// (nearly all of them for a small k) cost one vectorised compare.
bool collect(const float* x, int64_t n, Cut cut, int32_t base, size_t cap, std::vector<int32_t>& idx) {
  constexpr int64_t kBlock = 32;
  const size_t start = idx.size();
  int64_t equal_left = cut.equal_taken;
  auto scalar = [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const uint32_t key = magnitude_key(x[i]);
      if (key < cut.key) continue;
      if (key == cut.key) {
        if (equal_left == 0) continue;
        --equal_left;
      }
      idx.push_back(base + static_cast<int32_t>(i));
    }
    return idx.size() - start <= cap;
  };
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    uint32_t any = 0;
#pragma omp simd reduction(| : any)
    for (int64_t j = 0; j < kBlock; ++j) any |= magnitude_key(x[i + j]) >= cut.key ? 1u : 0u;
    if (any && !scalar(i, i + kBlock)) return false;
  }
  return scalar(i, n);
}

// Keeps, in place and in order, the entries of idx[start, end) (indices base + i into x) that are
// the k largest among them; returns the cut used.
Cut keep_top_k(const float* x, int32_t base, int64_t k, std::vector<int32_t>& idx, size_t start) {
  const int32_t* cand = idx.data() + start;
  const int64_t m = static_cast<int64_t>(idx.size() - start);
  const Cut cut = kth_largest(m, k, [&](int64_t j) { return magnitude_key(x[cand[j] - base]); });
  size_t out = start;
  int64_t equal_left = cut.equal_taken;
  for (size_t j = start; j < idx.size(); ++j) {
    const uint32_t key = magnitude_key(x[idx[j] - base]);
    if (key < cut.key || (key == cut.key && equal_left-- <= 0)) continue;
    idx[out++] = idx[j];
  }
  idx.resize(out);
  return cut;
}

// Keys of s entries of x[0, n) (s < n), one uniformly placed in each of s equal strata: as random
// as a uniform sample (more even, in fact) yet in memory order. Positions are drawn first and
// the loads prefetched ahead, because at 1% of a large x each load is a cache miss.
std::vector<uint32_t> stratified_sample(const float* x, int64_t n, int64_t s, Rng& rng) {
  std::vector<uint32_t> sample(static_cast<size_t>(s));
  std::vector<int64_t> pos(static_cast<size_t>(s));
  for (int64_t j = 0; j < s; ++j) {
    const int64_t lo = j * n / s, hi = (j + 1) * n / s;
    pos[static_cast<size_t>(j)] = lo + rng.below(static_cast<uint32_t>(hi - lo));
  }
  constexpr int64_t kAhead = 32;
  for (int64_t j = 0; j < s; ++j) {
    if (j + kAhead < s) __builtin_prefetch(x + pos[static_cast<size_t>(j + kAhead)]);
    sample[static_cast<size_t>(j)] = magnitude_key(x[pos[static_cast<size_t>(j)]]);
  }
  return sample;
}

// Room for `extra` more entries, growing geometrically: callers append one tensor after another
// to the same list, and an exact reserve per call would copy the list each time.
void reserve_more(std::vector<int32_t>& idx, size_t extra) {
  if (idx.capacity() - idx.size() < extra) idx.reserve(std::max(idx.size() + extra, 2 * idx.capacity()));
}

void check_range(int64_t n, int32_t base, const char* what) {
  TERN_CHECK(n >= 0 && base >= 0 && n <= int64_t{INT32_MAX} - base, what, ": ", n, " entries at base ", base,
             " do not fit 32-bit indices");
}

}  // namespace

void topk_select(const float* x, int64_t n, int64_t k, int32_t base, std::vector<int32_t>& idx) {
  check_range(n, base, "topk_select");
  k = std::clamp<int64_t>(k, 0, n);
  if (k == 0) return;
  const size_t start = idx.size();
  if (k == n) {
    for (int64_t i = 0; i < n; ++i) idx.push_back(base + static_cast<int32_t>(i));
    return;
  }
  // Small k of a large x: a sample's order statistics give a key that at least k entries reach
  // (with overwhelming probability), so one collecting pass over x leaves ~1.5k candidates to
  // select from exactly. When the guess misses (too few, or far too many candidates: many equal
  // values), the radix select below handles it. The sample is deterministic; only speed depends
  // on it, never the result.
  if (n >= (int64_t{1} << 16) && k <= n / 64) {
    const int64_t s = std::clamp<int64_t>(n / 64, 4096, 65536);
    Rng rng(0x5e1ec7, static_cast<uint64_t>(n));
    std::vector<uint32_t> sample = stratified_sample(x, n, s, rng);
    // Entries of the sample above the k-th largest of x: Binomial(s, k/n), mean r0. Taking the
    // r-th largest sample with r four standard deviations (and a margin) above r0 keeps the guess
    // below the true k-th largest.
    const double r0 = static_cast<double>(s) * static_cast<double>(k) / static_cast<double>(n);
    const int64_t r = std::min<int64_t>(s, static_cast<int64_t>(std::ceil(r0 + 4 * std::sqrt(r0) + 4)));
    std::nth_element(sample.begin(), sample.begin() + (r - 1), sample.end(), std::greater<uint32_t>());
    const Cut guess{sample[static_cast<size_t>(r - 1)], INT64_MAX};
    const size_t cap = static_cast<size_t>(3 * static_cast<double>(n) * static_cast<double>(r) / s) + 1024;
    reserve_more(idx, cap / 2);
    if (collect(x, n, guess, base, cap, idx) && static_cast<int64_t>(idx.size() - start) >= k) {
      keep_top_k(x, base, k, idx, start);
      return;
    }
    idx.resize(start);
  }
  const Cut cut = kth_largest(n, k, [x](int64_t i) { return magnitude_key(x[i]); });
  reserve_more(idx, static_cast<size_t>(k));
  collect(x, n, cut, base, SIZE_MAX, idx);
}

ThresholdSelectStats threshold_select(const float* x, int64_t n, int64_t k, int32_t base, Rng& rng,
                                      std::vector<int32_t>& idx, int64_t min_sample) {
  check_range(n, base, "threshold_select");
  ThresholdSelectStats stats;
  k = std::clamp<int64_t>(k, 0, n);
  if (k == 0) return stats;
  // The sample: max(min_sample, 1% of n) entries, one uniformly placed in each of as many equal
  // strata (the reference code samples at a stride from a random start; strata keep its memory
  // order without aliasing with periodic structure in x). Small tensors are used whole.
  const int64_t s = std::max<int64_t>(std::max<int64_t>(1, min_sample), (n + 99) / 100);
  std::vector<uint32_t> sample;
  if (s >= n) {
    sample.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) sample[static_cast<size_t>(i)] = magnitude_key(x[i]);
  } else {
    sample = stratified_sample(x, n, s, rng);
  }
  // The threshold is the smallest of the sample's top k/n fraction.
  const int64_t m = static_cast<int64_t>(sample.size());
  const int64_t top =
      std::clamp<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(m) * static_cast<double>(k) /
                                                         static_cast<double>(n))),
                          1, m);
  std::nth_element(sample.begin(), sample.begin() + (top - 1), sample.end(), std::greater<uint32_t>());
  // Zeros are never selected (key 1 is the smallest positive float): they carry nothing.
  uint32_t threshold = std::max<uint32_t>(1, sample[static_cast<size_t>(top - 1)]);

  constexpr int kMaxRounds = 10;    // as the reference code's max_adaptation_iters
  constexpr float kLowerBy = 0.8f;  // its compress_lower_bound: the step when too few pass
  const double enough = (1.0 - kSelectTolerance) * static_cast<double>(k);
  const size_t start = idx.size();
  for (;;) {
    collect(x, n, Cut{threshold, INT64_MAX}, base, SIZE_MAX, idx);
    const int64_t count = static_cast<int64_t>(idx.size() - start);
    stats.threshold = key_value(threshold);
    if (count > k) {
      stats.threshold = key_value(keep_top_k(x, base, k, idx, start).key);
      stats.exact_fallback = true;
      break;
    }
    if (static_cast<double>(count) >= enough || threshold == 1) break;
    // Too few: lower the threshold; after kMaxRounds, take every non-zero entry (then the exact
    // top-k among them), which bounds the work and guarantees the count.
    ++stats.rounds;
    threshold =
        stats.rounds > kMaxRounds ? 1 : std::max<uint32_t>(1, magnitude_key(key_value(threshold) * kLowerBy));
    idx.resize(start);
  }
  return stats;
}

double dgc_ratio_at(const DgcOptions& options, int64_t epoch) {
  const double ratio = options.ratio;
  const int64_t warmup = options.warmup_epochs;
  if (warmup <= 0 || epoch >= warmup) return ratio;
  // The reference code's schedule: ratio^((e + 1) / (E + 1)) in epoch e < E, i.e. E + 1 equal
  // steps in log-space from 1 to ratio; with ratio 0.001 and E = 4 these are the paper's 25%,
  // 6.25%, 1.5625%, 0.4%, then 0.1%.
  const double e = static_cast<double>(std::max<int64_t>(0, epoch));
  return std::max(ratio, std::pow(ratio, (e + 1) / static_cast<double>(warmup + 1)));
}

Dgc::Dgc(const DgcOptions& options, const BucketLayout& layout, int world_size)
    : options_(options), layout_(layout), world_size_(world_size) {
  TERN_CHECK(options.ratio > 0 && options.ratio <= 1, "dgc: ratio must be in (0, 1], got ", options.ratio);
  TERN_CHECK(options.momentum >= 0 && options.momentum < 1, "dgc: momentum must be in [0, 1), got ",
             options.momentum);
  TERN_CHECK(options.clip >= 0, "dgc: clip must be >= 0 (0 = off), got ", options.clip);
  TERN_CHECK(options.warmup_epochs >= 0, "dgc: warmup_epochs must be >= 0, got ", options.warmup_epochs);
  TERN_CHECK(options.min_sample >= 1, "dgc: min_sample must be >= 1, got ", options.min_sample);
  TERN_CHECK(world_size >= 1, "dgc: world size must be >= 1, got ", world_size);
  int64_t extent = 0;
  for (const Segment& s : layout) {
    TERN_CHECK(s.offset >= 0 && s.numel >= 0, "dgc: segment '", s.name, "' has offset ", s.offset,
               " and numel ", s.numel, "; both must be >= 0");
    check_range(s.numel, static_cast<int32_t>(std::min<int64_t>(s.offset, INT32_MAX)), "dgc");
    extent = std::max(extent, s.offset + s.numel);
  }
  u_ = Tensor::zeros({extent});
  v_ = Tensor::zeros({extent});
}

void Dgc::compress(const float* grad, const StepInfo& step, SparseVector& out) {
  const double ratio = dgc_ratio_at(options_, step.epoch);
  // The sample positions depend on (seed, step) only, so a run resumed from a checkpoint (which
  // saves u and v) selects exactly what the uninterrupted run would have.
  Rng rng(mix_seed(options_.seed ^ mix_seed(static_cast<uint64_t>(step.step))));
  const float m = static_cast<float>(options_.momentum);
  // Local clipping: each of N ranks clips its own gradient to clip / sqrt(N), so that the sum of
  // N independent ones is bounded by about clip (paper, sec. 3.2).
  const double max_norm = options_.clip / std::sqrt(static_cast<double>(world_size_));
  float* u_all = u_.f32();
  float* v_all = v_.f32();
  for (const Segment& s : layout_) {
    if (s.numel == 0) continue;
    const float* g = grad + s.offset;
    float* u = u_all + s.offset;
    float* v = v_all + s.offset;
    float scale = 1.0f;
    if (options_.clip > 0) {
      double sq = 0;
#pragma omp simd reduction(+ : sq)
      for (int64_t i = 0; i < s.numel; ++i) sq += static_cast<double>(g[i]) * g[i];
      const double norm = std::sqrt(sq);
      if (norm > max_norm) scale = static_cast<float>(max_norm / norm);
    }
    // Momentum correction: accumulate the velocity u, not the gradient, into v.
#pragma omp simd
    for (int64_t i = 0; i < s.numel; ++i) {
      u[i] = m * u[i] + scale * g[i];
      v[i] += u[i];
    }
    const int64_t k = std::min<int64_t>(
        s.numel, std::max<int64_t>(1, static_cast<int64_t>(std::ceil(ratio * static_cast<double>(s.numel)))));
    scratch_.clear();
    threshold_select(v, s.numel, k, static_cast<int32_t>(s.offset), rng, scratch_, options_.min_sample);
    // Send v there; momentum-factor masking clears both u and v where it was sent.
    const int64_t sent = static_cast<int64_t>(scratch_.size());
    const size_t at = out.values.size();
    out.indices.insert(out.indices.end(), scratch_.begin(), scratch_.end());
    out.values.resize(at + scratch_.size());
    cpu::sparse_gather(v_all, scratch_.data(), sent, out.values.data() + at);
    cpu::sparse_zero(u_all, scratch_.data(), sent);
    cpu::sparse_zero(v_all, scratch_.data(), sent);
  }
}

}  // namespace tern
