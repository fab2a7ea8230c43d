// Fully-connected layer kernels: y = x·Wᵀ + b over a batch, and their gradients, on cpu::gemm.
// W is [out, in] (the layout PyTorch uses, so weights compare directly).
#pragma once

#include <cstdint>

namespace tern::cpu {

// y[n, out] = x[n, in] · w[out, in]ᵀ + b[out] (b may be null).
// Tiny batches (see linear.cpp for the rule) go to the register-blocked kernels of tiny_linear.h,
// the rest to oneDNN's sgemm.
void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                    int64_t out);
// dx[n, in] = dy · w (overwritten; skipped when dx is null); dw += dyᵀ · x; db += Σ_n dy
// (db may be null). Weight gradients accumulate so micro-batches can add up.
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     int64_t n, int64_t in, int64_t out);

// The same, always on oneDNN's sgemm, whatever n: what the dispatch falls back to, callable on its
// own so bench/pipeline can time both paths side by side.
void linear_forward_gemm(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                         int64_t out);
void linear_backward_gemm(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                          int64_t n, int64_t in, int64_t out);

// For benchmarks and tests only: false makes linear_forward/backward take the gemm path for every
// n (process-wide, atomic; default true), to time a whole model both ways.
void set_tiny_linear_enabled(bool enabled);
bool tiny_linear_enabled();
// Whether linear_forward / linear_backward would use the tiny kernels for this shape now.
bool linear_forward_uses_tiny(int64_t n, int64_t in, int64_t out);
bool linear_backward_uses_tiny(int64_t n, int64_t in, int64_t out);

}  // namespace tern::cpu
