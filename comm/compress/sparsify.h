// Sparsifiers: exact top-k selection, DGC's sampled-threshold selection, and DGC's per-bucket
// state (momentum correction, local clipping, momentum-factor masking, warm-up).
#pragma once

#include <cstdint>
#include <vector>

#include "comm/compress/compressor.h"
#include "runtime/rng.h"

namespace tern {

// Exact top-k by magnitude: appends to idx the indices (base + i) of the k entries of x[0, n) with
// the largest |x_i|, ties broken toward the lower index, sorted ascending. k is clamped to
// [0, n]. Faster than std::nth_element on large n (a threshold pass, not a full partition).
void topk_select(const float* x, int64_t n, int64_t k, int32_t base, std::vector<int32_t>& idx);

// Result of one sampled selection, for tests and metrics.
struct ThresholdSelectStats {
  float threshold = 0;  // the |x| threshold finally used
  int rounds = 0;       // threshold refinements after the first estimate
  bool exact_fallback = false;  // ended with an exact top-k on the candidates
};

// DGC's selection (Lin et al., ICLR 2018, sec. 3 / reference code): estimate the k-th largest
// |x| from a random sample of max(min_sample, 1% of n) entries of x, select |x_i| >= threshold,
// and refine when the count is far from k (too many: exact top-k among the selected; too few:
// lower the threshold and select again). Zeros are never selected. Appends to idx (base + i,
// ascending); the count lands in [k(1 - kSelectTolerance), k] unless fewer entries than that are
// non-zero. Returns what it did.
inline constexpr double kSelectTolerance = 0.2;
ThresholdSelectStats threshold_select(const float* x, int64_t n, int64_t k, int32_t base, Rng& rng,
                                      std::vector<int32_t>& idx, int64_t min_sample = 1000);

struct DgcOptions {
  double ratio = 0.001;        // fraction of each tensor sent once warm-up is over
  double momentum = 0.9;       // momentum correction's m (the optimizer's own momentum is off)
  double clip = 0;             // local gradient clipping: max L2 norm per tensor before scaling
                               // by world_size^-1/2 (0 = off)
  int64_t warmup_epochs = 4;   // sparsity 75%, 93.75%, 98.4375%, 99.6%, then `ratio`
  int64_t min_sample = 1000;   // threshold estimation sample size: max(min_sample, 1% of n)
  uint64_t seed = 0;
};

// The sparsity ratio (fraction kept) DGC uses in `epoch`: 0.25, 0.0625, 0.015625, 0.004, ...
// (exponential warm-up over warmup_epochs epochs), never below `ratio`.
double dgc_ratio_at(const DgcOptions& options, int64_t epoch);

// DGC's per-bucket state. For each tensor of the layout: clip the gradient (if clip > 0),
// u = m*u + g (momentum correction), v = v + u (accumulation), select the top ratio·numel of |v|
// by threshold_select, send v at those indices, and zero u and v there (momentum-factor masking).
class Dgc {
 public:
  Dgc(const DgcOptions& options, const BucketLayout& layout, int world_size);
  // Appends to out the (index into the bucket, value) pairs this rank sends for this step.
  // grad is the bucket's flat buffer (not modified).
  void compress(const float* grad, const StepInfo& step, SparseVector& out);
  // velocity u and accumulation v, flat over the bucket (zeros outside the layout's segments).
  Tensor& velocity() { return u_; }
  Tensor& accumulation() { return v_; }
  const DgcOptions& options() const { return options_; }

 private:
  DgcOptions options_;
  BucketLayout layout_;
  int world_size_;
  Tensor u_, v_;
  std::vector<int32_t> scratch_;
};

}  // namespace tern
