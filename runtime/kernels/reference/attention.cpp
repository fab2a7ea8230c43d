#include "runtime/kernels/reference/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace tern::ref {

namespace {
// Probabilities of row i of head h in batch b: p[j] for j <= i.
std::vector<double> probabilities(const float* qkv, int64_t b, int64_t h, int64_t i, int64_t T, int64_t C,
                                  int64_t D) {
  const float* q = qkv + (b * T + i) * 3 * C + h * D;
  std::vector<double> p(static_cast<size_t>(i + 1));
  double mx = -INFINITY;
  for (int64_t j = 0; j <= i; ++j) {
    const float* k = qkv + (b * T + j) * 3 * C + C + h * D;
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += static_cast<double>(q[d]) * k[d];
    p[j] = s / std::sqrt(static_cast<double>(D));
    mx = std::max(mx, p[j]);
  }
  double sum = 0;
  for (double& v : p) sum += (v = std::exp(v - mx));
  for (double& v : p) v /= sum;
  return p;
}
}  // namespace

void causal_attention_forward(const float* qkv, int64_t B, int64_t T, int64_t C, int64_t H, float* y,
                              float* att) {
  const int64_t D = C / H;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const std::vector<double> p = probabilities(qkv, b, h, i, T, C, D);
        for (int64_t j = 0; j < T; ++j)
          att[((b * H + h) * T + i) * T + j] = j <= i ? static_cast<float>(p[j]) : 0.0f;
        for (int64_t d = 0; d < D; ++d) {
          double s = 0;
          for (int64_t j = 0; j <= i; ++j) s += p[j] * qkv[(b * T + j) * 3 * C + 2 * C + h * D + d];
          y[(b * T + i) * C + h * D + d] = static_cast<float>(s);
        }
      }
}

void causal_attention_backward(const float* dy, const float* qkv, const float* /*att*/, int64_t B, int64_t T,
                               int64_t C, int64_t H, float* dqkv) {
  const int64_t D = C / H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> grad(static_cast<size_t>(B * T * 3 * C), 0.0);
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t d) {
    return static_cast<size_t>((b * T + t) * 3 * C + part * C + h * D + d);
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const std::vector<double> p = probabilities(qkv, b, h, i, T, C, D);
        const float* g = dy + (b * T + i) * C + h * D;
        // dL/dp_j = dy_i · v_j; through the softmax, dL/ds_j = p_j (dL/dp_j - Σ_k p_k dL/dp_k).
        std::vector<double> dp(p.size());
        double dot = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += static_cast<double>(g[d]) * qkv[at(b, j, 2, h, d)];
          dp[j] = s;
          dot += p[j] * s;
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = p[j] * (dp[j] - dot) * scale;
          for (int64_t d = 0; d < D; ++d) {
            grad[at(b, i, 0, h, d)] += ds * qkv[at(b, j, 1, h, d)];  // s_ij = q_i · k_j * scale
            grad[at(b, j, 1, h, d)] += ds * qkv[at(b, i, 0, h, d)];
            grad[at(b, j, 2, h, d)] += p[j] * g[d];  // y_i = Σ_j p_ij v_j
          }
        }
      }
  for (size_t i = 0; i < grad.size(); ++i) dqkv[i] = static_cast<float>(grad[i]);
}

}  // namespace tern::ref
