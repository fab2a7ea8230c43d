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

// SGD on n weights kept in fixed point, w -= lr * g, each weight's value t / 2^F held as an int8 plane
// hi = round(value) (what int8 kernels read) and, with F = 8, a plane lo of fraction bits (t = hi * 256 +
// lo - 128); with F = 0 (lo null) hi alone. Each update is rounded stochastically to a multiple of 2^-F —
// floor(-lr * g * 2^F + u), u uniform in [0, 1) — so its expected value is exact and no update is lost
// for being small; hi stays in [-127, 127]. u for element e is fixed_point_draw(key, first + e), a hash,
// so an update split into parts (first = each part's offset) draws what one call would.
void fixed_point_sgd(int8_t* hi, uint8_t* lo, const float* g, int64_t n, float lr, uint32_t key,
                     int64_t first) noexcept;
// The uniform draw in [0, 1) fixed_point_sgd uses for element `index` under `key`.
float fixed_point_draw(uint32_t key, int64_t index) noexcept;

}  // namespace tern::cpu
