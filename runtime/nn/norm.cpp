#include "runtime/nn/norm.h"

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

Tensor BatchNorm2d::forward(const Tensor& x) {
  TERN_CHECK(
      x.defined() && x.dtype() == DType::f32 && (x.ndim() == 4 || x.ndim() == 2) && x.dim(1) == channels_,
      describe(), ": expected an f32 input [N, ", channels_, ", H, W] or [N, ", channels_, "], got ",
      x.defined() ? x.str() : "an undefined tensor");
  const int64_t N = x.dim(0), S = spatial_size(x);
  Tensor y = Tensor::empty(x.shape());
  if (training()) {
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
  return y;
}

Tensor BatchNorm2d::backward(const Tensor& dy) {
  TERN_CHECK(x_.defined(), describe(), ": backward called before forward");
  TERN_CHECK(dy.defined() && dy.dtype() == DType::f32 && dy.shape() == x_.shape(), describe(),
             ": expected an f32 gradient shaped like the input ", x_.str(), ", got ",
             dy.defined() ? dy.str() : "an undefined tensor");
  const int64_t N = x_.dim(0), S = spatial_size(x_);
  Tensor dx = Tensor::empty(x_.shape());
  if (forward_training_) {
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
