// Single-precision GEMM for linear layers and everything shaped like one, through oneDNN's
// dnnl_sgemm (AVX-512 here, unlike the BLAS Debian ships; see shared ARCHITECTURE.md).
#pragma once

#include <cstdint>

namespace tern::cpu {

// Row-major C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, op = transpose when trans_*.
// lda/ldb/ldc are the row strides of A, B, C as stored. Never throws (kernels do not).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace tern::cpu
