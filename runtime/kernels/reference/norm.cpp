#include "runtime/kernels/reference/norm.h"

#include <cmath>
#include <utility>
#include <vector>

// Each normalisation is written once over an explicit list of element indices (a BatchNorm
// channel, a GroupNorm group), with the formulas of Ioffe & Szegedy (2015) and double sums.

namespace tern::ref {
namespace {

struct Stats {
  double mean, var;
};

Stats stats(const float* x, const std::vector<int64_t>& idx) {
  double m = 0;
  for (int64_t i : idx) m += x[i];
  m /= static_cast<double>(idx.size());
  double v = 0;
  for (int64_t i : idx) v += (x[i] - m) * (x[i] - m);
  return {m, v / static_cast<double>(idx.size())};
}

// y = gamma * (x - mean) * invstd + beta over the set; element i belongs to channel (i / S) % C.
void normalise(const float* x, const std::vector<int64_t>& idx, double mean, double invstd,
               const float* gamma, const float* beta, int64_t C, int64_t S, float* y) {
  for (int64_t i : idx) {
    const int64_t c = (i / S) % C;
    y[i] = static_cast<float>(gamma[c] * (x[i] - mean) * invstd + beta[c]);
  }
}

// The chain rule through mean and variance of the set (the paper's backward pass).
void normalise_backward(const float* dy, const float* x, const std::vector<int64_t>& idx, double mean,
                        double invstd, const float* gamma, int64_t C, int64_t S, float* dx) {
  const double m = static_cast<double>(idx.size());
  double dvar = 0, dmean = 0, sum_dev = 0;
  for (int64_t i : idx) {
    const double dxhat = static_cast<double>(dy[i]) * gamma[(i / S) % C];
    dvar += dxhat * (x[i] - mean) * -0.5 * invstd * invstd * invstd;
    dmean += -dxhat * invstd;
    sum_dev += x[i] - mean;
  }
  dmean += dvar * -2.0 * sum_dev / m;
  for (int64_t i : idx) {
    const double dxhat = static_cast<double>(dy[i]) * gamma[(i / S) % C];
    dx[i] = static_cast<float>(dxhat * invstd + dvar * 2.0 * (x[i] - mean) / m + dmean / m);
  }
}

std::vector<int64_t> channel(int64_t N, int64_t C, int64_t S, int64_t c) {
  std::vector<int64_t> idx;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t s = 0; s < S; ++s) idx.push_back((n * C + c) * S + s);
  return idx;
}

std::vector<int64_t> group(int64_t C, int64_t S, int64_t G, int64_t n, int64_t g) {
  std::vector<int64_t> idx;
  const int64_t Cg = C / G;
  for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
    for (int64_t s = 0; s < S; ++s) idx.push_back((n * C + c) * S + s);
  return idx;
}

// dgamma[c] = sum dy * xhat, dbeta[c] = sum dy over channel c, xhat from the per-element stats.
template <typename MeanInvstd>
void affine_grads(const float* dy, const float* x, int64_t N, int64_t C, int64_t S, MeanInvstd stats_of,
                  float* dgamma, float* dbeta) {
  for (int64_t c = 0; c < C; ++c) {
    double dg = 0, db = 0;
    for (int64_t i : channel(N, C, S, c)) {
      const auto [mean, invstd] = stats_of(i);
      dg += static_cast<double>(dy[i]) * (x[i] - mean) * invstd;
      db += dy[i];
    }
    dgamma[c] = static_cast<float>(dg);
    dbeta[c] = static_cast<float>(db);
  }
}

}  // namespace

void batch_norm_forward_train(const float* x, int64_t N, int64_t C, int64_t S, const float* gamma,
                              const float* beta, float momentum, float eps, float* y, float* save_mean,
                              float* save_invstd, float* running_mean, float* running_var) {
  for (int64_t c = 0; c < C; ++c) {
    const auto idx = channel(N, C, S, c);
    const Stats st = stats(x, idx);
    const double invstd = 1.0 / std::sqrt(st.var + eps);
    normalise(x, idx, st.mean, invstd, gamma, beta, C, S, y);
    save_mean[c] = static_cast<float>(st.mean);
    save_invstd[c] = static_cast<float>(invstd);
    const double n = static_cast<double>(idx.size());
    const double unbiased = n > 1 ? st.var * n / (n - 1) : st.var;
    running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * st.mean);
    running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
  }
}

void batch_norm_forward_eval(const float* x, int64_t N, int64_t C, int64_t S, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var,
                             float eps, float* y) {
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
    normalise(x, channel(N, C, S, c), running_mean[c], invstd, gamma, beta, C, S, y);
  }
}

void batch_norm_backward_train(const float* dy, const float* x, int64_t N, int64_t C, int64_t S,
                               const float* gamma, const float* save_mean, const float* save_invstd,
                               float* dx, float* dgamma, float* dbeta) {
  for (int64_t c = 0; c < C; ++c)
    normalise_backward(dy, x, channel(N, C, S, c), save_mean[c], save_invstd[c], gamma, C, S, dx);
  affine_grads(
      dy, x, N, C, S,
      [&](int64_t i) {
        const int64_t c = (i / S) % C;
        return std::pair<double, double>(save_mean[c], save_invstd[c]);
      },
      dgamma, dbeta);
}

void batch_norm_backward_eval(const float* dy, const float* x, int64_t N, int64_t C, int64_t S,
                              const float* gamma, const float* running_mean, const float* running_var,
                              float eps, float* dx, float* dgamma, float* dbeta) {
  auto stats_of = [&](int64_t i) {
    const int64_t c = (i / S) % C;
    return std::pair<double, double>(running_mean[c],
                                     1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps));
  };
  for (int64_t i = 0; i < N * C * S; ++i)
    dx[i] = static_cast<float>(static_cast<double>(dy[i]) * gamma[(i / S) % C] * stats_of(i).second);
  affine_grads(dy, x, N, C, S, stats_of, dgamma, dbeta);
}

void group_norm_forward(const float* x, int64_t N, int64_t C, int64_t S, int64_t G, const float* gamma,
                        const float* beta, float eps, float* y, float* save_mean, float* save_invstd) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const auto idx = group(C, S, G, n, g);
      const Stats st = stats(x, idx);
      const double invstd = 1.0 / std::sqrt(st.var + eps);
      normalise(x, idx, st.mean, invstd, gamma, beta, C, S, y);
      save_mean[n * G + g] = static_cast<float>(st.mean);
      save_invstd[n * G + g] = static_cast<float>(invstd);
    }
  }
}

void group_norm_backward(const float* dy, const float* x, int64_t N, int64_t C, int64_t S, int64_t G,
                         const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                         float* dgamma, float* dbeta) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g)
      normalise_backward(dy, x, group(C, S, G, n, g), save_mean[n * G + g], save_invstd[n * G + g], gamma, C,
                         S, dx);
  affine_grads(
      dy, x, N, C, S,
      [&](int64_t i) {
        const int64_t n = i / (C * S), g = (i / S) % C / (C / G);
        return std::pair<double, double>(save_mean[n * G + g], save_invstd[n * G + g]);
      },
      dgamma, dbeta);
}

}  // namespace tern::ref
