#include "runtime/kernels/cpu/dropout.h"

namespace tern::cpu {

void dropout_mask(Rng& rng, float p, float* mask, int64_t n) {
  const float scale = 1.0f / (1.0f - p);
  // uniform() is out of line, so draw into the mask first and threshold in a second, vectorised
  // pass rather than branching per draw.
  for (int64_t i = 0; i < n; ++i) mask[i] = rng.uniform();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) mask[i] = mask[i] < p ? 0.0f : scale;
}

void dropout_apply(const float* x, const float* mask, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * mask[i];
}

}  // namespace tern::cpu
