// Fully-connected layer kernels: y = x·Wᵀ + b over a batch, and their gradients, on cpu::gemm.
// W is [out, in] (the layout PyTorch uses, so weights compare directly).
#pragma once

#include <cstdint>

namespace tern::cpu {

// y[n, out] = x[n, in] · w[out, in]ᵀ + b[out] (b may be null).
void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                    int64_t out);
// dx[n, in] = dy · w (overwritten; skipped when dx is null); dw += dyᵀ · x; db += Σ_n dy
// (db may be null). Weight gradients accumulate so micro-batches can add up.
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     int64_t n, int64_t in, int64_t out);

}  // namespace tern::cpu
