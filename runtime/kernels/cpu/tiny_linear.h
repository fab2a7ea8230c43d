// Register-blocked Linear kernels for tiny batches (n = 1..4 rows: pipeline micro-batches), faster
// there than oneDNN's sgemm. cpu::linear_forward/backward pick them (the rule and numbers: linear.cpp).
//
// They serve n = 1, 2, 3 and 4: every x / dy row of a block lives in registers against several
// rows (forward, weight gradient) or column blocks (data gradient) of W. Larger n is correct
// (rows are taken 4 at a time) but streams W once per 4 rows, so callers use gemm there.
// Same layouts and meaning as linear.h; any in/out (masked tails); no allocation, never throws.
// AVX-512 when the build targets it (__AVX512F__), plain C++ loops otherwise.
#pragma once

#include <cstdint>

namespace tern::cpu {

// The largest row count the kernels keep in registers at once.
inline constexpr int64_t kTinyLinearMaxRows = 4;

// Whether this build has the AVX-512 kernels. Without them the plain loops are correct but mostly
// 1.5-5x slower than oneDNN (measured at -march=x86-64-v3), so linear.cpp's dispatch leaves them out.
bool tiny_linear_vectorised();

// y[n, out] = x[n, in] · w[out, in]ᵀ + b[out] (b may be null).
void tiny_linear_forward(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                         int64_t out);
// dx[n, in] = dy[n, out] · w[out, in] (overwritten).
void tiny_linear_backward_data(const float* w, const float* dy, float* dx, int64_t n, int64_t in,
                               int64_t out);
// dw[out, in] += dy[n, out]ᵀ · x[n, in] (a rank-n update); db[out] += Σ_n dy (db may be null).
void tiny_linear_backward_weight(const float* x, const float* dy, float* dw, float* db, int64_t n, int64_t in,
                                 int64_t out);

}  // namespace tern::cpu
