#include "runtime/kernels/cpu/linear.h"

#include <atomic>

#include "runtime/kernels/cpu/gemm.h"
#include "runtime/kernels/cpu/tiny_linear.h"

namespace tern::cpu {

namespace {
std::atomic<bool> g_tiny_enabled{true};
}  // namespace

void set_tiny_linear_enabled(bool enabled) { g_tiny_enabled.store(enabled, std::memory_order_relaxed); }
bool tiny_linear_enabled() { return g_tiny_enabled.load(std::memory_order_relaxed); }

// The rule: the tiny kernels for n = 1..4 rows, forward and backward, every shape; oneDNN above.
// Measured by `tern_pipeline_bench --kernels` (one thread, Zen 4 with AVX-512, 6 runs on a shared
// machine; x = oneDNN time / tiny time, the range over the runs):
//   layer  in x out      n=1 fwd   / bwd         n=2 fwd   / bwd         n=4 fwd   / bwd
//   mlp.fc1  784 x 512   1.01-1.12 / 1.12-1.19   0.99-1.02 / 1.18-1.30   1.28-1.43 / 1.25-1.33
//   mlp.fc2  512 x 256   0.99-1.03 / 1.68-1.96   0.94-1.01 / 1.60-1.85   1.18-1.32 / 1.24-1.34
//   mlp.fc3  256 x 10    2.06-2.83 / 2.97-3.18   1.81-2.06 / 3.09-3.55   1.66-1.75 / 2.45-2.60
//   cnn.fc1 3136 x 128   1.16-1.17 / 1.16-1.22   1.01-1.03 / 1.15-1.20   1.27-1.31 / 1.20-1.36
//   cnn.fc2  128 x 10    2.67-3.58 / 4.69-4.91   2.53-2.91 / 4.96-5.99   2.16-2.26 / 3.12-3.95
// Forward at n = 1, 2 on the large layers is a tie: both stream W at the cache's bandwidth. The
// backward wins everywhere (oneDNN's K = n <= 4 weight gradient is its weak spot), and so does
// the mlp as a 2-stage pipeline: 1.10-1.25x per step at micro-batch rows 1..4. At n = 5 the
// kernels take W twice (4 + 1 rows) and lose on the large layers (0.82-0.89x), hence n <= 4.
// A build without AVX-512 has only the plain loops, mostly 1.5-5x slower than oneDNN: gemm throughout.
bool linear_forward_uses_tiny(int64_t n, int64_t, int64_t) {
  return tiny_linear_vectorised() && tiny_linear_enabled() && n >= 1 && n <= kTinyLinearMaxRows;
}
bool linear_backward_uses_tiny(int64_t n, int64_t, int64_t) {
  return tiny_linear_vectorised() && tiny_linear_enabled() && n >= 1 && n <= kTinyLinearMaxRows;
}

void linear_forward_gemm(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
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

void linear_backward_gemm(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
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

void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                    int64_t out) {
  if (linear_forward_uses_tiny(n, in, out))
    tiny_linear_forward(x, w, b, y, n, in, out);
  else
    linear_forward_gemm(x, w, b, y, n, in, out);
}

void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     int64_t n, int64_t in, int64_t out) {
  if (!linear_backward_uses_tiny(n, in, out)) return linear_backward_gemm(x, w, dy, dx, dw, db, n, in, out);
  if (dx) tiny_linear_backward_data(w, dy, dx, n, in, out);
  tiny_linear_backward_weight(x, dy, dw, db, n, in, out);
}

}  // namespace tern::cpu
