#include "runtime/kernels/reference/sparse_update.h"

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

}  // namespace tern::ref
