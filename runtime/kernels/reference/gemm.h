// Naive reference for cpu::gemm: triple loop, double accumulation. Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace tern::ref
