// Naive references for the cpu sparse-update kernels: one plain loop each, in index order. Tests
// only.
#pragma once

#include <cstdint>

namespace tern::ref {

void sparse_axpy(float* y, const int32_t* idx, const float* x, int64_t k, float alpha);
void sparse_gather(const float* y, const int32_t* idx, int64_t k, float* out);
void sparse_zero(float* y, const int32_t* idx, int64_t k);
void sparse_rows_sgd(float* w, int64_t cols, const int32_t* rows_idx, int64_t k, const float* g, float lr,
                     float weight_decay);

}  // namespace tern::ref
