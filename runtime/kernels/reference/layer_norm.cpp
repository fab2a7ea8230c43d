#include "runtime/kernels/reference/layer_norm.h"

#include <cmath>
#include <vector>

namespace tern::ref {

void layer_norm_forward(const float* x, int64_t N, int64_t C, const float* gamma, const float* beta,
                        float eps, float* y, float* mean, float* rstd) {
  for (int64_t n = 0; n < N; ++n) {
    double m = 0;
    for (int64_t c = 0; c < C; ++c) m += x[n * C + c];
    m /= static_cast<double>(C);
    double var = 0;
    for (int64_t c = 0; c < C; ++c) var += (x[n * C + c] - m) * (x[n * C + c] - m);
    var /= static_cast<double>(C);
    const double r = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < C; ++c)
      y[n * C + c] = static_cast<float>((x[n * C + c] - m) * r * gamma[c] + beta[c]);
    mean[n] = static_cast<float>(m);
    rstd[n] = static_cast<float>(r);
  }
}

// Written as the chain rule through mean and variance (not the fused formula of the fast kernel):
// dL/dx_i = Σ_j dL/dxhat_j dxhat_j/dx_i with dxhat_j/dx_i = r (δ_ij - 1/C - xhat_i xhat_j / C).
void layer_norm_backward(const float* dy, const float* x, int64_t N, int64_t C, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  std::vector<double> xhat(static_cast<size_t>(C)), g(static_cast<size_t>(C));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      xhat[c] = (static_cast<double>(x[n * C + c]) - mean[n]) * rstd[n];
      g[c] = static_cast<double>(dy[n * C + c]) * gamma[c];
      dgamma[c] += static_cast<float>(dy[n * C + c] * xhat[c]);
      dbeta[c] += dy[n * C + c];
    }
    for (int64_t i = 0; i < C; ++i) {
      double s = 0;
      for (int64_t j = 0; j < C; ++j) {
        const double jac = rstd[n] * ((i == j ? 1.0 : 0.0) - 1.0 / static_cast<double>(C) -
                                      xhat[i] * xhat[j] / static_cast<double>(C));
        s += g[j] * jac;
      }
      dx[n * C + i] = static_cast<float>(s);
    }
  }
}

}  // namespace tern::ref
