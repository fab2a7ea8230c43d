#include "runtime/kernels/cpu/norm.h"

#include <algorithm>
#include <cmath>

// Layout: x[n, c, s] at (n * C + c) * S + s. With S > 1 the kernels walk one channel (or group)
// at a time over its N contiguous runs of S values, so the passes after the first find the
// channel in cache. With S == 1 ([N, C] inputs) a run would be one value, so those kernels walk
// rows instead and keep per-channel accumulators for a block of channels on the stack.
//
// Sums run in float within blocks of kRun values (vector lanes, bounded rounding error) and in
// double across blocks and runs, so the statistics stay accurate for large N * S.

namespace tern::cpu {
namespace {

constexpr int64_t kRun = 512;       // float partial sums cover at most this many values
constexpr int64_t kChannels = 256;  // channel block of the S == 1 path

// Each reduction keeps kLanes independent float partial sums, so the adds pipeline instead of
// waiting on one accumulator (a single vector accumulator is latency-bound at a fraction of the
// possible rate); the compiler maps the lanes onto vector registers. The lanes carry over from
// one run to the next, so short runs (S = 64 at a ResNet's last stage) pay no reduction each,
// and flush into a double after about kRun values to bound the float rounding.
constexpr int64_t kLanes = 16;

// Sum of f(p) over `runs` runs of `len` consecutive offsets p, run r starting at r * stride.
template <typename Term>
double strided_sum(int64_t runs, int64_t stride, int64_t len, Term f) {
  double total = 0;
  float acc[kLanes] = {};
  int64_t pending = 0;  // values added to acc since the last flush
  auto flush = [&] {
    float s = 0;
    for (int64_t l = 0; l < kLanes; ++l) {
      s += acc[l];
      acc[l] = 0;
    }
    total += s;
    pending = 0;
  };
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t base = r * stride;
    for (int64_t i0 = 0; i0 < len; i0 += kRun) {
      const int64_t end = std::min(len, i0 + kRun);
      int64_t i = i0;
      for (; i + kLanes <= end; i += kLanes)
        for (int64_t l = 0; l < kLanes; ++l) acc[l] += f(base + i + l);
      for (int64_t l = 0; i + l < end; ++l) acc[l] += f(base + i + l);
      pending += end - i0;
      if (pending >= kRun) flush();
    }
  }
  flush();
  return total;
}

// Adds sum(dy) and sum(dy * (x - mean)) over one run to *sdy and *sdyd. Here the compiler's own
// simd reduction measured faster than explicit lanes (two sets of lanes spill). Out of line and
// unspecialised: GCC 12 left its inlined or constant-propagated copies scalar.
[[gnu::noinline, gnu::noclone]] void add_dy_and_dy_dev(const float* dy, const float* x, int64_t len,
                                                       float mean, double* sdy, double* sdyd) {
  for (int64_t i0 = 0; i0 < len; i0 += kRun) {
    const int64_t end = std::min(len, i0 + kRun);
    float s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = i0; i < end; ++i) {
      s1 += dy[i];
      s2 += dy[i] * (x[i] - mean);
    }
    *sdy += s1;
    *sdyd += s2;
  }
}

void scale_shift(const float* x, int64_t n, float a, float b, float* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = a * x[i] + b;
}

// dx = a * dy + b * (x - mean) + c: the shape of every normalisation's input gradient.
void combine(const float* dy, const float* x, int64_t n, float a, float b, float mean, float c, float* dx) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = a * dy[i] + b * (x[i] - mean) + c;
}

float inv_std(double var, float eps) {
  return static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
}

void update_running(float momentum, float mean, double var, int64_t count, float* running_mean,
                    float* running_var) {
  const double unbiased = count > 1 ? var * count / (count - 1) : var;
  *running_mean = (1.0f - momentum) * *running_mean + momentum * mean;
  *running_var = (1.0f - momentum) * *running_var + momentum * static_cast<float>(unbiased);
}

// --- S == 1: rows of C values, channel blocks of kChannels.

void batch_norm_forward_train_rows(const float* x, int64_t N, int64_t C, const float* gamma,
                                   const float* beta, float momentum, float eps, float* y, float* save_mean,
                                   float* save_invstd, float* running_mean, float* running_var) {
  double acc[kChannels];
  float mean[kChannels], a[kChannels], b[kChannels];
  for (int64_t c0 = 0; c0 < C; c0 += kChannels) {
    const int64_t cb = std::min(kChannels, C - c0);
    std::fill(acc, acc + cb, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const float* row = x + n * C + c0;
#pragma omp simd
      for (int64_t j = 0; j < cb; ++j) acc[j] += row[j];
    }
    for (int64_t j = 0; j < cb; ++j) mean[j] = static_cast<float>(acc[j] / N);
    std::fill(acc, acc + cb, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const float* row = x + n * C + c0;
#pragma omp simd
      for (int64_t j = 0; j < cb; ++j) {
        const float d = row[j] - mean[j];
        acc[j] += d * d;
      }
    }
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t c = c0 + j;
      const double var = acc[j] / N;
      const float invstd = inv_std(var, eps);
      a[j] = gamma[c] * invstd;
      b[j] = beta[c] - mean[j] * a[j];
      save_mean[c] = mean[j];
      save_invstd[c] = invstd;
      update_running(momentum, mean[j], var, N, running_mean + c, running_var + c);
    }
    for (int64_t n = 0; n < N; ++n) {
      const float* row = x + n * C + c0;
      float* out = y + n * C + c0;
#pragma omp simd
      for (int64_t j = 0; j < cb; ++j) out[j] = a[j] * row[j] + b[j];
    }
  }
}

// dx = k * dy + b * (x - mean) + c per channel, with dgamma/dbeta from the same two sums.
// For the eval backward pass b = c = 0 (the statistics are constants).
template <typename InvStd>
void batch_norm_backward_rows(const float* dy, const float* x, int64_t N, int64_t C, const float* gamma,
                              const float* mean_of, InvStd invstd_of, bool batch_stats, float* dx,
                              float* dgamma, float* dbeta) {
  double sdy[kChannels], sdyd[kChannels];
  float mean[kChannels], k[kChannels], b[kChannels], c_[kChannels];
  for (int64_t c0 = 0; c0 < C; c0 += kChannels) {
    const int64_t cb = std::min(kChannels, C - c0);
    std::fill(sdy, sdy + cb, 0.0);
    std::fill(sdyd, sdyd + cb, 0.0);
    for (int64_t j = 0; j < cb; ++j) mean[j] = mean_of[c0 + j];
    for (int64_t n = 0; n < N; ++n) {
      const float* g = dy + n * C + c0;
      const float* row = x + n * C + c0;
#pragma omp simd
      for (int64_t j = 0; j < cb; ++j) {
        sdy[j] += g[j];
        sdyd[j] += g[j] * (row[j] - mean[j]);
      }
    }
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t c = c0 + j;
      const float invstd = invstd_of(c);
      const double dg = sdyd[j] * invstd;
      dgamma[c] = static_cast<float>(dg);
      dbeta[c] = static_cast<float>(sdy[j]);
      k[j] = gamma[c] * invstd;
      b[j] = batch_stats ? static_cast<float>(-k[j] * invstd * dg / N) : 0.0f;
      c_[j] = batch_stats ? static_cast<float>(-k[j] * sdy[j] / N) : 0.0f;
    }
    for (int64_t n = 0; n < N; ++n) {
      const float* g = dy + n * C + c0;
      const float* row = x + n * C + c0;
      float* out = dx + n * C + c0;
#pragma omp simd
      for (int64_t j = 0; j < cb; ++j) out[j] = k[j] * g[j] + b[j] * (row[j] - mean[j]) + c_[j];
    }
  }
}

}  // namespace

void batch_norm_forward_train(const float* x, int64_t N, int64_t C, int64_t S, const float* gamma,
                              const float* beta, float momentum, float eps, float* y, float* save_mean,
                              float* save_invstd, float* running_mean, float* running_var) {
  const int64_t count = N * S;
  if (count == 0) {  // no values: nothing to normalise, keep the running stats
    for (int64_t c = 0; c < C; ++c) {
      save_mean[c] = 0.0f;
      save_invstd[c] = inv_std(0.0, eps);
    }
    return;
  }
  if (S == 1) {
    batch_norm_forward_train_rows(x, N, C, gamma, beta, momentum, eps, y, save_mean, save_invstd,
                                  running_mean, running_var);
    return;
  }
  for (int64_t c = 0; c < C; ++c) {
    const float* xc = x + c * S;
    const double total = strided_sum(N, C * S, S, [xc](int64_t p) { return xc[p]; });
    const float mean = static_cast<float>(total / count);
    const double var = strided_sum(N, C * S, S,
                                   [xc, mean](int64_t p) {
                                     const float d = xc[p] - mean;
                                     return d * d;
                                   }) /
                       count;
    const float invstd = inv_std(var, eps);
    const float a = gamma[c] * invstd;
    const float b = beta[c] - mean * a;
    for (int64_t n = 0; n < N; ++n) scale_shift(x + (n * C + c) * S, S, a, b, y + (n * C + c) * S);
    save_mean[c] = mean;
    save_invstd[c] = invstd;
    update_running(momentum, mean, var, count, running_mean + c, running_var + c);
  }
}

void batch_norm_forward_eval(const float* x, int64_t N, int64_t C, int64_t S, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var,
                             float eps, float* y) {
  if (S == 1) {
    float a[kChannels], b[kChannels];
    for (int64_t c0 = 0; c0 < C; c0 += kChannels) {
      const int64_t cb = std::min(kChannels, C - c0);
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t c = c0 + j;
        a[j] = gamma[c] * inv_std(running_var[c], eps);
        b[j] = beta[c] - running_mean[c] * a[j];
      }
      for (int64_t n = 0; n < N; ++n) {
        const float* row = x + n * C + c0;
        float* out = y + n * C + c0;
#pragma omp simd
        for (int64_t j = 0; j < cb; ++j) out[j] = a[j] * row[j] + b[j];
      }
    }
    return;
  }
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const float a = gamma[c] * inv_std(running_var[c], eps);
      const float b = beta[c] - running_mean[c] * a;
      scale_shift(x + (n * C + c) * S, S, a, b, y + (n * C + c) * S);
    }
  }
}

void batch_norm_backward_train(const float* dy, const float* x, int64_t N, int64_t C, int64_t S,
                               const float* gamma, const float* save_mean, const float* save_invstd,
                               float* dx, float* dgamma, float* dbeta) {
  if (S == 1) {
    batch_norm_backward_rows(
        dy, x, N, C, gamma, save_mean, [save_invstd](int64_t c) { return save_invstd[c]; }, true, dx, dgamma,
        dbeta);
    return;
  }
  const int64_t count = N * S;
  for (int64_t c = 0; c < C; ++c) {
    const float mean = save_mean[c], invstd = save_invstd[c];
    double sdy = 0, sdyd = 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t off = (n * C + c) * S;
      add_dy_and_dy_dev(dy + off, x + off, S, mean, &sdy, &sdyd);
    }
    const double dg = sdyd * invstd;
    dgamma[c] = static_cast<float>(dg);
    dbeta[c] = static_cast<float>(sdy);
    if (count == 0) continue;
    // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * invstd.
    const float k = gamma[c] * invstd;
    const float b = static_cast<float>(-k * invstd * dg / count);
    const float shift = static_cast<float>(-k * sdy / count);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t off = (n * C + c) * S;
      combine(dy + off, x + off, S, k, b, mean, shift, dx + off);
    }
  }
}

void batch_norm_backward_eval(const float* dy, const float* x, int64_t N, int64_t C, int64_t S,
                              const float* gamma, const float* running_mean, const float* running_var,
                              float eps, float* dx, float* dgamma, float* dbeta) {
  if (S == 1) {
    batch_norm_backward_rows(
        dy, x, N, C, gamma, running_mean,
        [running_var, eps](int64_t c) { return inv_std(running_var[c], eps); }, false, dx, dgamma, dbeta);
    return;
  }
  for (int64_t c = 0; c < C; ++c) {
    const float mean = running_mean[c];
    const float invstd = inv_std(running_var[c], eps);
    double sdy = 0, sdyd = 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t off = (n * C + c) * S;
      add_dy_and_dy_dev(dy + off, x + off, S, mean, &sdy, &sdyd);
    }
    dgamma[c] = static_cast<float>(sdyd * invstd);
    dbeta[c] = static_cast<float>(sdy);
    const float k = gamma[c] * invstd;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t off = (n * C + c) * S;
      combine(dy + off, x + off, S, k, 0.0f, mean, 0.0f, dx + off);
    }
  }
}

void group_norm_forward(const float* x, int64_t N, int64_t C, int64_t S, int64_t G, const float* gamma,
                        const float* beta, float eps, float* y, float* save_mean, float* save_invstd) {
  const int64_t Cg = C / G;
  const int64_t count = Cg * S;  // a group's values are contiguous: Cg channels of S
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t c0 = g * Cg;
      const float* xg = x + (n * C + c0) * S;
      float* yg = y + (n * C + c0) * S;
      const double total = strided_sum(1, 0, count, [xg](int64_t p) { return xg[p]; });
      const float mean = count > 0 ? static_cast<float>(total / count) : 0.0f;
      const double sq = strided_sum(1, 0, count, [xg, mean](int64_t p) {
        const float d = xg[p] - mean;
        return d * d;
      });
      const double var = count > 0 ? sq / count : 0.0;
      const float invstd = inv_std(var, eps);
      save_mean[n * G + g] = mean;
      save_invstd[n * G + g] = invstd;
      if (S == 1) {
#pragma omp simd
        for (int64_t j = 0; j < Cg; ++j) yg[j] = gamma[c0 + j] * invstd * (xg[j] - mean) + beta[c0 + j];
        continue;
      }
      for (int64_t j = 0; j < Cg; ++j) {
        const float a = gamma[c0 + j] * invstd;
        scale_shift(xg + j * S, S, a, beta[c0 + j] - mean * a, yg + j * S);
      }
    }
  }
}

void group_norm_backward(const float* dy, const float* x, int64_t N, int64_t C, int64_t S, int64_t G,
                         const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                         float* dgamma, float* dbeta) {
  std::fill(dgamma, dgamma + C, 0.0f);
  std::fill(dbeta, dbeta + C, 0.0f);
  const int64_t Cg = C / G;
  const int64_t count = Cg * S;
  if (count == 0) return;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t c0 = g * Cg;
      const int64_t off = (n * C + c0) * S;
      const float mean = save_mean[n * G + g], invstd = save_invstd[n * G + g];
      // With dxhat = gamma * dy: sum_dxhat = sum_c gamma_c sum_s dy, and
      // sum(dxhat * xhat) = invstd * sum_c gamma_c sum_s dy (x - mean).
      double sum_dxhat = 0, sum_dxhat_dev = 0;
      if (S == 1) {  // one value per channel: vectorise across the group's channels instead
        const float* g = dy + off;
        const float* v = x + off;
        float s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t j = 0; j < Cg; ++j) {
          const float dev = v[j] - mean;
          dbeta[c0 + j] += g[j];
          dgamma[c0 + j] += g[j] * dev * invstd;
          s1 += gamma[c0 + j] * g[j];
          s2 += gamma[c0 + j] * g[j] * dev;
        }
        const float b = -s2 * invstd * invstd * invstd / count;
        const float shift = -s1 * invstd / count;
        float* out = dx + off;
#pragma omp simd
        for (int64_t j = 0; j < Cg; ++j) out[j] = gamma[c0 + j] * invstd * g[j] + b * (v[j] - mean) + shift;
        continue;
      }
      for (int64_t j = 0; j < Cg; ++j) {
        double sdy = 0, sdyd = 0;
        add_dy_and_dy_dev(dy + off + j * S, x + off + j * S, S, mean, &sdy, &sdyd);
        dbeta[c0 + j] += static_cast<float>(sdy);
        dgamma[c0 + j] += static_cast<float>(sdyd * invstd);
        sum_dxhat += gamma[c0 + j] * sdy;
        sum_dxhat_dev += gamma[c0 + j] * sdyd;
      }
      // dx = invstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
      const float b = static_cast<float>(-sum_dxhat_dev * invstd * invstd * invstd / count);
      const float shift = static_cast<float>(-sum_dxhat * invstd / count);
      for (int64_t j = 0; j < Cg; ++j) {
        const int64_t o = off + j * S;
        combine(dy + o, x + o, S, gamma[c0 + j] * invstd, b, mean, shift, dx + o);
      }
    }
  }
}

}  // namespace tern::cpu
