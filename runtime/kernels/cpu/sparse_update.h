// Sparse-update kernels: read, add to or update only chosen indices or rows of a tensor. One
// implementation for the data-parallel trainer (sparse aggregated gradients) and on-device training.
#pragma once

#include <cstdint>

namespace tern::cpu {

// y[idx[i]] += alpha * x[i] for i in [0, k). Indices may repeat (each entry is added).
void sparse_axpy(float* y, const int32_t* idx, const float* x, int64_t k, float alpha);
// out[i] = y[idx[i]].
void sparse_gather(const float* y, const int32_t* idx, int64_t k, float* out);
// y[idx[i]] = 0.
void sparse_zero(float* y, const int32_t* idx, int64_t k);
// SGD on chosen rows of a [rows, cols] weight: w[r, :] -= lr * (g[j, :] + weight_decay * w[r, :])
// for r = rows_idx[j], j in [0, k); g holds only the k chosen rows. Rows must not repeat.
void sparse_rows_sgd(float* w, int64_t cols, const int32_t* rows_idx, int64_t k, const float* g, float lr,
                     float weight_decay);

}  // namespace tern::cpu
