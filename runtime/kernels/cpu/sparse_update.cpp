#include "runtime/kernels/cpu/sparse_update.h"

#include <math.h>

#include "runtime/kernels/cpu/mix32.h"

namespace tern::cpu {

// The index lists are short next to the tensors they touch (top-k of a gradient, a few embedding
// rows), so these loops are bound by scattered memory accesses, not arithmetic; they stay
// sequential where indices may repeat, which also keeps the order of the additions fixed.

void sparse_axpy(float* y, const int32_t* idx, const float* x, int64_t k, float alpha) {
  for (int64_t i = 0; i < k; ++i) y[idx[i]] += alpha * x[i];
}

void sparse_gather(const float* y, const int32_t* idx, int64_t k, float* out) {
  for (int64_t i = 0; i < k; ++i) out[i] = y[idx[i]];
}

void sparse_zero(float* y, const int32_t* idx, int64_t k) {
  for (int64_t i = 0; i < k; ++i) y[idx[i]] = 0.0f;
}

void sparse_rows_sgd(float* w, int64_t cols, const int32_t* rows_idx, int64_t k, const float* g, float lr,
                     float weight_decay) {
  // Rows are distinct, so they can be updated in parallel; each row is a contiguous, vectorised
  // update. Threads only pay off when there is enough work to split.
#pragma omp parallel for schedule(static) if (k * cols >= (int64_t{1} << 16))
  for (int64_t j = 0; j < k; ++j) {
    float* row = w + static_cast<int64_t>(rows_idx[j]) * cols;
    const float* grow = g + j * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) row[c] -= lr * (grow[c] + weight_decay * row[c]);
  }
}

float fixed_point_draw(uint32_t key, int64_t index) noexcept {
  return static_cast<float>(mix32(key ^ static_cast<uint32_t>(index)) >> 8) * (1.0f / 16777216.0f);
}

void fixed_point_sgd(int8_t* hi, uint8_t* lo, const float* g, int64_t n, float lr, uint32_t key,
                     int64_t first) noexcept {
  const int shift = lo != nullptr ? 8 : 0;
  const int32_t half = lo != nullptr ? 128 : 0, unit = 1 << shift;
  const int32_t t_min = -127 * unit - half, t_max = 127 * unit + (unit - 1 - half);
  const float scale = static_cast<float>(unit), limit = static_cast<float>(255 * unit);
  for (int64_t e = 0; e < n; ++e) {
    float step = -lr * g[e] * scale;
    step = step < -limit ? -limit : (step > limit ? limit : step);  // past the whole range: no int overflow
    const int32_t d = static_cast<int32_t>(floorf(step + fixed_point_draw(key, first + e)));
    int32_t t = hi[e] * unit + (lo != nullptr ? lo[e] - half : 0) + d;
    t = t < t_min ? t_min : (t > t_max ? t_max : t);
    const int32_t biased = t + half;               // hi * 2^F + lo, >= -127 * 2^F
    hi[e] = static_cast<int8_t>(biased >> shift);  // an arithmetic shift: the floor
    if (lo != nullptr) lo[e] = static_cast<uint8_t>(biased & (unit - 1));
  }
}

}  // namespace tern::cpu
