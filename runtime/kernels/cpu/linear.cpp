#include "runtime/kernels/cpu/linear.h"

#include "runtime/kernels/cpu/gemm.h"

namespace tern::cpu {

void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                    int64_t out) {
  if (b) {
    for (int64_t i = 0; i < n; ++i) {
      float* row = y + i * out;
#pragma omp simd
      for (int64_t j = 0; j < out; ++j) row[j] = b[j];
    }
  }
  gemm(false, true, n, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out);
}

void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     int64_t n, int64_t in, int64_t out) {
  if (dx) gemm(false, false, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
  gemm(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
  if (db) {
    for (int64_t i = 0; i < n; ++i) {
      const float* row = dy + i * out;
#pragma omp simd
      for (int64_t j = 0; j < out; ++j) db[j] += row[j];
    }
  }
}

}  // namespace tern::cpu
