#include "runtime/kernels/cpu/sparse_update.h"

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

}  // namespace tern::cpu
