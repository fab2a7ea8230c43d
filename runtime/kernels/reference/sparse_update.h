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
// cpu::fixed_point_sgd written out on real values: decode each weight to hi + (lo - 128) / 256 (or hi),
// subtract lr * g in double, round stochastically to a multiple of 2^-F with the kernel's draw u,
// clamp, and split into hi and lo again by rounding and subtraction (lo null: no fraction bits).
void fixed_point_sgd(int8_t* hi, uint8_t* lo, const float* g, int64_t n, float lr, uint32_t key,
                     int64_t first);

}  // namespace tern::ref
