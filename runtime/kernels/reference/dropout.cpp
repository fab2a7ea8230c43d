#include "runtime/kernels/reference/dropout.h"

namespace tern::ref {

void dropout_mask(Rng& rng, float p, float* mask, int64_t n) {
  const double scale = 1.0 / (1.0 - static_cast<double>(p));
  for (int64_t i = 0; i < n; ++i) {
    if (rng.uniform() < p)
      mask[i] = 0;
    else
      mask[i] = static_cast<float>(scale);
  }
}

void dropout_apply(const float* x, const float* mask, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<double>(x[i]) * mask[i]);
}

}  // namespace tern::ref
