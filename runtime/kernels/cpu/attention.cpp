#include "runtime/kernels/cpu/attention.h"

#include <cmath>
#include <vector>

#include "runtime/kernels/cpu/gemm.h"

namespace tern::cpu {

// Each (batch, head) pair is an independent T x T problem: the loops over them run in parallel
// and every GEMM inside runs on its thread. The full T x T score matrix is computed and the part
// above the diagonal discarded: with GEMM that is cheaper than skipping it element by element.

void causal_attention_forward(const float* qkv, int64_t B, int64_t T, int64_t C, int64_t H, float* y,
                              float* att) {
  const int64_t D = C / H, ld = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for schedule(static) if (B * H > 1 && B * T * T * C >= (int64_t{1} << 18))
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    const float* q = qkv + b * T * ld + h * D;
    const float* k = q + C;
    const float* v = q + 2 * C;
    float* p = att + bh * T * T;
    gemm(false, true, T, T, D, scale, q, ld, k, ld, 0.0f, p, T);
    for (int64_t i = 0; i < T; ++i) {
      float* row = p + i * T;
      float mx = row[0];
      for (int64_t j = 1; j <= i; ++j) mx = std::fmax(mx, row[j]);
      float sum = 0;
      for (int64_t j = 0; j <= i; ++j) {
        row[j] = std::exp(row[j] - mx);
        sum += row[j];
      }
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
      for (int64_t j = i + 1; j < T; ++j) row[j] = 0.0f;
    }
    gemm(false, false, T, D, T, 1.0f, p, T, v, ld, 0.0f, y + b * T * C + h * D, C);
  }
}

void causal_attention_backward(const float* dy, const float* qkv, const float* att, int64_t B, int64_t T,
                               int64_t C, int64_t H, float* dqkv) {
  const int64_t D = C / H, ld = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel if (B * H > 1 && B * T * T * C >= (int64_t{1} << 18))
  {
    std::vector<float> ds(static_cast<size_t>(T * T));  // dP, then dS in place
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* q = qkv + b * T * ld + h * D;
      const float* k = q + C;
      const float* v = q + 2 * C;
      const float* p = att + bh * T * T;
      const float* g = dy + b * T * C + h * D;
      float* dq = dqkv + b * T * ld + h * D;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      gemm(false, true, T, T, D, 1.0f, g, C, v, ld, 0.0f, ds.data(), T);  // dP = dY Vᵀ
      gemm(true, false, T, D, T, 1.0f, p, T, g, C, 0.0f, dv, ld);         // dV = Pᵀ dY
      for (int64_t i = 0; i < T; ++i) {
        const float* pr = p + i * T;
        float* dr = ds.data() + i * T;
        float dot = 0;
        for (int64_t j = 0; j <= i; ++j) dot += pr[j] * dr[j];
        for (int64_t j = 0; j <= i; ++j) dr[j] = pr[j] * (dr[j] - dot);
        for (int64_t j = i + 1; j < T; ++j) dr[j] = 0.0f;  // masked: no gradient
      }
      gemm(false, false, T, D, T, scale, ds.data(), T, k, ld, 0.0f, dq, ld);  // dQ = dS K / sqrt(D)
      gemm(true, false, T, D, T, scale, ds.data(), T, q, ld, 0.0f, dk, ld);   // dK = dSᵀ Q / sqrt(D)
    }
  }
}

}  // namespace tern::cpu
