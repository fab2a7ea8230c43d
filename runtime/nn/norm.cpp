#include "runtime/nn/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/kernels/cpu/norm.h"

namespace tern {
namespace {

// Product of the dims after the channel dim: the S of the kernels' [N, C, S] view.
int64_t spatial_size(const Tensor& x) {
  int64_t s = 1;
  for (int i = 2; i < x.ndim(); ++i) s *= x.dim(i);
  return s;
}

void accumulate(Tensor& grad, const Tensor& delta) {
  float* g = grad.f32();
  const float* d = delta.f32();
  for (int64_t i = 0; i < grad.numel(); ++i) g[i] += d[i];
}

// Float partial sums cover at most this many values before joining a double (as the kernels).
constexpr int64_t kRun = 512;

// acc[c] += sum over n, s of term(c, x[n, c, s]) for x laid out [N, C, S], walking memory in
// order (so S == 1 inputs are read row by row).
template <typename Term>
void add_channel_sums(const float* x, int64_t N, int64_t C, int64_t S, Term term, double* acc) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const float* run = x + (n * C + c) * S;
      for (int64_t i0 = 0; i0 < S; i0 += kRun) {
        const int64_t end = std::min(S, i0 + kRun);
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < end; ++i) s += term(c, run[i]);
        acc[c] += s;
      }
    }
  }
}

// sdy[c] += sum(dy), sdyd[c] += sum(dy * (x - mean[c])) over channel c's values.
void add_backward_sums(const float* dy, const float* x, int64_t N, int64_t C, int64_t S, const float* mean,
                       double* sdy, double* sdyd) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t off = (n * C + c) * S;
      const float m = mean[c];
      for (int64_t i0 = 0; i0 < S; i0 += kRun) {
        const int64_t end = std::min(S, i0 + kRun);
        float s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t i = i0; i < end; ++i) {
          s1 += dy[off + i];
          s2 += dy[off + i] * (x[off + i] - m);
        }
        sdy[c] += s1;
        sdyd[c] += s2;
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// BatchNorm2d

BatchNorm2d::BatchNorm2d(int64_t channels, float momentum, float eps)
    : channels_(channels), momentum_(momentum), eps_(eps) {
  TERN_CHECK(channels > 0, "BatchNorm2d: channels must be positive, got ", channels);
  TERN_CHECK(eps > 0, "BatchNorm2d(", channels, "): eps must be positive, got ", eps);
  weight = Param(Tensor::full({channels}, 1.0), /*decays=*/false);
  bias = Param(Tensor::zeros({channels}), /*decays=*/false);
  running_mean.value = Tensor::zeros({channels});
  running_var.value = Tensor::full({channels}, 1.0);
  register_param("weight", weight);
  register_param("bias", bias);
  register_buffer("running_mean", running_mean);
  register_buffer("running_var", running_var);
  save_mean_ = Tensor::zeros({channels});
  save_invstd_ = Tensor::zeros({channels});
  dgamma_ = Tensor::zeros({channels});
  dbeta_ = Tensor::zeros({channels});
}

std::string BatchNorm2d::describe() const { return detail::concat("BatchNorm2d(", channels_, ")"); }

// The batch statistics are written in place by forward, so after handing them to `s` the layer
// needs fresh ones (the state's own on every swap but the first).
void BatchNorm2d::swap_forward_state(ForwardState& s) {
  s.swap(x_, forward_training_, forward_synchronised_, save_mean_, save_invstd_, global_count_);
  if (!save_mean_.defined()) save_mean_ = Tensor::zeros({channels_});
  if (!save_invstd_.defined()) save_invstd_ = Tensor::zeros({channels_});
}

void BatchNorm2d::set_stats_allreduce(StatsAllreduce allreduce) {
  stats_allreduce_ = std::move(allreduce);
  if (stats_allreduce_) sync_sums_.reserve(static_cast<size_t>(2 * channels_));
}

// The kernel's two-pass statistics (cpu::batch_norm_forward_train), with each pass's
// per-channel sums added up across ranks before they are used.
void BatchNorm2d::forward_train_synchronised(const Tensor& x, Tensor& y) {
  const int64_t N = x.dim(0), C = channels_, S = spatial_size(x);
  const float* xp = x.f32();
  std::vector<double>& sums = sync_sums_;

  sums.assign(static_cast<size_t>(C + 1), 0.0);
  add_channel_sums(
      xp, N, C, S, [](int64_t, float v) { return v; }, sums.data());
  sums[static_cast<size_t>(C)] = static_cast<double>(N * S);
  stats_allreduce_(sums);
  const double count = sums[static_cast<size_t>(C)];
  TERN_CHECK(count > 1, describe(),
             ": expected more than 1 value per channel over all ranks when training, got ", count,
             " (this rank's input ", x.str(), ")");
  global_count_ = count;
  float* mean = save_mean_.f32();
  for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<float>(sums[static_cast<size_t>(c)] / count);

  sums.assign(static_cast<size_t>(C), 0.0);
  add_channel_sums(
      xp, N, C, S,
      [mean](int64_t c, float v) {
        const float d = v - mean[c];
        return d * d;
      },
      sums.data());
  stats_allreduce_(sums);

  const float* gamma = weight.value.f32();
  const float* beta = bias.value.f32();
  float* invstd = save_invstd_.f32();
  float* running_mean_p = running_mean.value.f32();
  float* running_var_p = running_var.value.f32();
  float* yp = y.f32();
  for (int64_t c = 0; c < C; ++c) {
    const double var = sums[static_cast<size_t>(c)] / count;
    invstd[c] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps_)));
    const float a = gamma[c] * invstd[c];
    const float b = beta[c] - mean[c] * a;
    for (int64_t n = 0; n < N; ++n) {
      const float* in = xp + (n * C + c) * S;
      float* out = yp + (n * C + c) * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) out[i] = a * in[i] + b;
    }
    // PyTorch's running update, with the unbiased variance of the global batch.
    const double unbiased = var * count / (count - 1);
    running_mean_p[c] = (1.0f - momentum_) * running_mean_p[c] + momentum_ * mean[c];
    running_var_p[c] = (1.0f - momentum_) * running_var_p[c] + momentum_ * static_cast<float>(unbiased);
  }
}

// dx from the global sums (the mean and variance depend on every rank's x); dgamma and dbeta
// from this rank's own, as the gradient average across ranks expects.
void BatchNorm2d::backward_train_synchronised(const Tensor& dy, Tensor& dx) {
  const int64_t N = x_.dim(0), C = channels_, S = spatial_size(x_);
  const float* mean = save_mean_.f32();
  const float* invstd = save_invstd_.f32();
  std::vector<double>& sums = sync_sums_;  // sum(dy) of each channel, then sum(dy * (x - mean))
  sums.assign(static_cast<size_t>(2 * C), 0.0);
  add_backward_sums(dy.f32(), x_.f32(), N, C, S, mean, sums.data(), sums.data() + C);
  float* dgamma = dgamma_.f32();
  float* dbeta = dbeta_.f32();
  for (int64_t c = 0; c < C; ++c) {
    dgamma[c] = static_cast<float>(sums[static_cast<size_t>(C + c)] * invstd[c]);
    dbeta[c] = static_cast<float>(sums[static_cast<size_t>(c)]);
  }
  stats_allreduce_(sums);

  const float* gamma = weight.value.f32();
  const float* dyp = dy.f32();
  const float* xp = x_.f32();
  float* dxp = dx.f32();
  const double count = global_count_;
  for (int64_t c = 0; c < C; ++c) {
    // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), means over all ranks.
    const float k = gamma[c] * invstd[c];
    const double dg = sums[static_cast<size_t>(C + c)] * invstd[c];
    const float b = static_cast<float>(-k * invstd[c] * dg / count);
    const float shift = static_cast<float>(-k * sums[static_cast<size_t>(c)] / count);
    const float m = mean[c];
    for (int64_t n = 0; n < N; ++n) {
      const int64_t off = (n * C + c) * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) dxp[off + i] = k * dyp[off + i] + b * (xp[off + i] - m) + shift;
    }
  }
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  TERN_CHECK(
      x.defined() && x.dtype() == DType::f32 && (x.ndim() == 4 || x.ndim() == 2) && x.dim(1) == channels_,
      describe(), ": expected an f32 input [N, ", channels_, ", H, W] or [N, ", channels_, "], got ",
      x.defined() ? x.str() : "an undefined tensor");
  const int64_t N = x.dim(0), S = spatial_size(x);
  Tensor y = Tensor::empty(x.shape());
  if (training() && synchronised()) {
    forward_train_synchronised(x, y);
  } else if (training()) {
    // As PyTorch: one value per channel has no variance to normalise by.
    TERN_CHECK(N * S > 1, describe(), ": expected more than 1 value per channel when training, got ",
               x.str());
    cpu::batch_norm_forward_train(x.f32(), N, channels_, S, weight.value.f32(), bias.value.f32(), momentum_,
                                  eps_, y.f32(), save_mean_.f32(), save_invstd_.f32(),
                                  running_mean.value.f32(), running_var.value.f32());
  } else {
    cpu::batch_norm_forward_eval(x.f32(), N, channels_, S, weight.value.f32(), bias.value.f32(),
                                 running_mean.value.f32(), running_var.value.f32(), eps_, y.f32());
  }
  x_ = x;
  forward_training_ = training();
  forward_synchronised_ = synchronised();
  return y;
}

Tensor BatchNorm2d::backward(const Tensor& dy) {
  TERN_CHECK(x_.defined(), describe(), ": backward called before forward");
  TERN_CHECK(dy.defined() && dy.dtype() == DType::f32 && dy.shape() == x_.shape(), describe(),
             ": expected an f32 gradient shaped like the input ", x_.str(), ", got ",
             dy.defined() ? dy.str() : "an undefined tensor");
  const int64_t N = x_.dim(0), S = spatial_size(x_);
  Tensor dx = Tensor::empty(x_.shape());
  if (forward_training_ && forward_synchronised_) {
    backward_train_synchronised(dy, dx);
  } else if (forward_training_) {
    cpu::batch_norm_backward_train(dy.f32(), x_.f32(), N, channels_, S, weight.value.f32(), save_mean_.f32(),
                                   save_invstd_.f32(), dx.f32(), dgamma_.f32(), dbeta_.f32());
  } else {
    cpu::batch_norm_backward_eval(dy.f32(), x_.f32(), N, channels_, S, weight.value.f32(),
                                  running_mean.value.f32(), running_var.value.f32(), eps_, dx.f32(),
                                  dgamma_.f32(), dbeta_.f32());
  }
  accumulate(weight.grad, dgamma_);
  accumulate(bias.grad, dbeta_);
  return dx;
}

// ---------------------------------------------------------------------------------------------
// GroupNorm

GroupNorm::GroupNorm(int64_t groups, int64_t channels, float eps)
    : groups_(groups), channels_(channels), eps_(eps) {
  TERN_CHECK(groups > 0 && channels > 0, "GroupNorm: groups and channels must be positive, got ", groups,
             " and ", channels);
  TERN_CHECK(channels % groups == 0, "GroupNorm: channels (", channels, ") must be divisible by groups (",
             groups, ")");
  TERN_CHECK(eps > 0, "GroupNorm(", groups, ", ", channels, "): eps must be positive, got ", eps);
  weight = Param(Tensor::full({channels}, 1.0), /*decays=*/false);
  bias = Param(Tensor::zeros({channels}), /*decays=*/false);
  register_param("weight", weight);
  register_param("bias", bias);
  dgamma_ = Tensor::zeros({channels});
  dbeta_ = Tensor::zeros({channels});
}

std::string GroupNorm::describe() const {
  return detail::concat("GroupNorm(", groups_, ", ", channels_, ")");
}

Tensor GroupNorm::forward(const Tensor& x) {
  TERN_CHECK(x.defined() && x.dtype() == DType::f32 && x.ndim() >= 2 && x.dim(1) == channels_, describe(),
             ": expected an f32 input [N, ", channels_, ", *], got ",
             x.defined() ? x.str() : "an undefined tensor");
  const int64_t N = x.dim(0), S = spatial_size(x);
  if (!save_mean_.defined() || save_mean_.dim(0) != N) {
    save_mean_ = Tensor::empty({N, groups_});
    save_invstd_ = Tensor::empty({N, groups_});
  }
  Tensor y = Tensor::empty(x.shape());
  cpu::group_norm_forward(x.f32(), N, channels_, S, groups_, weight.value.f32(), bias.value.f32(), eps_,
                          y.f32(), save_mean_.f32(), save_invstd_.f32());
  x_ = x;
  return y;
}

Tensor GroupNorm::backward(const Tensor& dy) {
  TERN_CHECK(x_.defined(), describe(), ": backward called before forward");
  TERN_CHECK(dy.defined() && dy.dtype() == DType::f32 && dy.shape() == x_.shape(), describe(),
             ": expected an f32 gradient shaped like the input ", x_.str(), ", got ",
             dy.defined() ? dy.str() : "an undefined tensor");
  Tensor dx = Tensor::empty(x_.shape());
  cpu::group_norm_backward(dy.f32(), x_.f32(), x_.dim(0), channels_, spatial_size(x_), groups_,
                           weight.value.f32(), save_mean_.f32(), save_invstd_.f32(), dx.f32(), dgamma_.f32(),
                           dbeta_.f32());
  accumulate(weight.grad, dgamma_);
  accumulate(bias.grad, dbeta_);
  return dx;
}

}  // namespace tern
