#include "comm/compress/error_feedback.h"

#include <cstring>

#include "runtime/kernels/cpu/sparse_update.h"

namespace tern {

void ErrorFeedback::add_to(float* x, int64_t offset, int64_t n) const {
  const float* __restrict r = residual_.f32() + offset;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] += r[i];
}

void ErrorFeedback::keep(const float* accumulated, const float* sent, int64_t offset, int64_t n) {
  float* __restrict r = residual_.f32() + offset;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) r[i] = accumulated[i] - sent[i];
}

void ErrorFeedback::keep_all(const float* accumulated, int64_t offset, int64_t n) {
  if (n > 0) std::memcpy(residual_.f32() + offset, accumulated, static_cast<size_t>(n) * sizeof(float));
}

void ErrorFeedback::forget(const int32_t* idx, int64_t k) { cpu::sparse_zero(residual_.f32(), idx, k); }

}  // namespace tern
