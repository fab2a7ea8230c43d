#include "runtime/kernels/cpu/layer_norm.h"

#include <cmath>

namespace tern::cpu {

namespace {
// Rows are independent; threads pay off only once there are enough of them.
constexpr int64_t kParallelValues = int64_t{1} << 15;
}  // namespace

void layer_norm_forward(const float* x, int64_t N, int64_t C, const float* gamma, const float* beta,
                        float eps, float* y, float* mean, float* rstd) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelValues)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    float* yr = y + n * C;
    // Summed relative to the row's first value: a row whose mean is far larger than its spread
    // (a 300 offset on values of ±2) would otherwise lose the mean's low bits to the running sum's
    // magnitude — 1e-4 of error in y when the loop ran on one lane (an -O2 build) instead of 16.
    const float shift = C > 0 ? xr[0] : 0.0f;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c] - shift;
    const float m = shift + sum / static_cast<float>(C);
    float sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const float r = 1.0f / std::sqrt(sq / static_cast<float>(C) + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * r * gamma[c] + beta[c];
    mean[n] = m;
    rstd[n] = r;
  }
}

void layer_norm_backward(const float* dy, const float* x, int64_t N, int64_t C, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelValues)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* dyr = dy + n * C;
    float* dxr = dx + n * C;
    const float m = mean[n], r = rstd[n];
    float g_mean = 0, gx_mean = 0;
#pragma omp simd reduction(+ : g_mean, gx_mean)
    for (int64_t c = 0; c < C; ++c) {
      const float g = dyr[c] * gamma[c];
      g_mean += g;
      gx_mean += g * (xr[c] - m) * r;
    }
    g_mean /= static_cast<float>(C);
    gx_mean /= static_cast<float>(C);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (xr[c] - m) * r;
      dxr[c] = r * (dyr[c] * gamma[c] - g_mean - xhat * gx_mean);
    }
  }
  // The parameter sums run over rows in order, on one thread, so they are the same every run.
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* dyr = dy + n * C;
    const float m = mean[n], r = rstd[n];
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      dgamma[c] += dyr[c] * (xr[c] - m) * r;
      dbeta[c] += dyr[c];
    }
  }
}

}  // namespace tern::cpu
