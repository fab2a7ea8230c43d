#include "runtime/nn/linear.h"

#include <cmath>

#include "runtime/kernels/cpu/linear.h"

namespace tern {

Linear::Linear(int64_t in_features, int64_t out_features, Rng& rng, bool has_bias)
    : in_(in_features), out_(out_features) {
  TERN_CHECK(in_features > 0 && out_features > 0, "Linear(", in_features, "->", out_features,
             "): feature counts must be positive");
  weight = Param(Tensor::empty({out_, in_}));
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_));
  float* w = weight.value.f32();
  for (int64_t i = 0; i < weight.value.numel(); ++i) w[i] = rng.uniform(-bound, bound);
  register_param("weight", weight);
  if (has_bias) {
    bias = Param(Tensor::zeros({out_}), /*decays=*/false);
    register_param("bias", bias);
  }
}

Tensor Linear::forward(const Tensor& x) {
  TERN_CHECK(x.ndim() == 2 && x.dim(1) == in_, describe(), ": expected input [N, ", in_, "], got ",
             x.str());
  x_ = x;
  Tensor y = Tensor::empty({x.dim(0), out_});
  cpu::linear_forward(x.f32(), weight.value.f32(), bias.value.defined() ? bias.value.f32() : nullptr,
                      y.f32(), x.dim(0), in_, out_);
  return y;
}

Tensor Linear::backward(const Tensor& dy) {
  TERN_CHECK(x_.defined(), describe(), ": backward before forward");
  TERN_CHECK(dy.ndim() == 2 && dy.dim(0) == x_.dim(0) && dy.dim(1) == out_, describe(),
             ": expected gradient [", x_.dim(0), ", ", out_, "], got ", dy.str());
  Tensor dx = input_grad() ? Tensor::empty(x_.shape()) : Tensor();
  cpu::linear_backward(x_.f32(), weight.value.f32(), dy.f32(), dx.defined() ? dx.f32() : nullptr,
                       weight.grad.f32(),
                       bias.grad.defined() ? bias.grad.f32() : nullptr, x_.dim(0), in_, out_);
  return dx;
}

std::string Linear::describe() const {
  return detail::concat("Linear(", in_, "->", out_, bias.value.defined() ? "" : ", no bias", ")");
}

Tensor Flatten::forward(const Tensor& x) {
  TERN_CHECK(x.ndim() >= 1, "Flatten: input must have a batch dimension, got ", x.str());
  in_shape_ = x.shape();
  return x.reshape({x.dim(0), -1});
}

Tensor Flatten::backward(const Tensor& dy) { return input_grad() ? dy.reshape(in_shape_) : Tensor(); }

}  // namespace tern
