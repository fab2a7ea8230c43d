#include "runtime/kernels/reference/sparse_update.h"

#include <algorithm>
#include <cmath>

#include "runtime/kernels/cpu/sparse_update.h"

namespace tern::ref {

void sparse_axpy(float* y, const int32_t* idx, const float* x, int64_t k, float alpha) {
  for (int64_t i = 0; i < k; ++i) {
    const float add = alpha * x[i];
    y[idx[i]] = y[idx[i]] + add;
  }
}

void sparse_gather(const float* y, const int32_t* idx, int64_t k, float* out) {
  for (int64_t i = 0; i < k; ++i) out[i] = y[idx[i]];
}

void sparse_zero(float* y, const int32_t* idx, int64_t k) {
  for (int64_t i = 0; i < k; ++i) y[idx[i]] = 0;
}

void sparse_rows_sgd(float* w, int64_t cols, const int32_t* rows_idx, int64_t k, const float* g, float lr,
                     float weight_decay) {
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t c = 0; c < cols; ++c) {
      float& wv = w[rows_idx[j] * cols + c];
      const float step = g[j * cols + c] + weight_decay * wv;
      wv = wv - lr * step;
    }
  }
}

void fixed_point_sgd(int8_t* hi, uint8_t* lo, const float* g, int64_t n, float lr, uint32_t key,
                     int64_t first) {
  const double unit = lo != nullptr ? 256.0 : 1.0, half = lo != nullptr ? 0.5 : 0.0;
  for (int64_t e = 0; e < n; ++e) {
    const double value = hi[e] + (lo != nullptr ? (lo[e] - 128) / 256.0 : 0.0);
    // The update rounded to the grid of multiples of 1/unit, up with probability its fraction there.
    const float update = -lr * g[e] * static_cast<float>(unit);  // in float, as the kernel adds u to it
    const double steps = std::floor(update + cpu::fixed_point_draw(key, first + e));
    double next = value + steps / unit;
    // hi in [-127, 127]: the values that round there, on the grid.
    next = std::clamp(next, -127.0 - half, lo != nullptr ? 127.5 - 1.0 / 256 : 127.0);
    const double rounded = std::floor(next + half);  // hi = round(value), halves up
    hi[e] = static_cast<int8_t>(rounded);
    if (lo != nullptr) lo[e] = static_cast<uint8_t>(std::lround((next - rounded) * 256.0 + 128.0));
  }
}

}  // namespace tern::ref
