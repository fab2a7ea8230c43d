#include "runtime/nn/layer_norm.h"

#include "runtime/kernels/cpu/layer_norm.h"

namespace tern {

LayerNorm::LayerNorm(int64_t dim, float eps) : dim_(dim), eps_(eps) {
  TERN_CHECK(dim > 0 && eps >= 0, "LayerNorm(", dim, ", eps=", eps, "): need dim > 0 and eps >= 0");
  weight = Param(Tensor::full({dim}, 1.0), /*decays=*/false);
  bias = Param(Tensor::zeros({dim}), /*decays=*/false);
  register_param("weight", weight);
  register_param("bias", bias);
}

Tensor LayerNorm::forward(const Tensor& x) {
  TERN_CHECK(x.defined() && x.dtype() == DType::f32 && x.ndim() >= 1 && x.dim(-1) == dim_, describe(),
             ": expected f32 input [..., ", dim_, "], got ", x.defined() ? x.str() : "an undefined tensor");
  const int64_t rows = x.numel() / dim_;
  x_ = x;
  mean_ = Tensor::empty({rows});
  rstd_ = Tensor::empty({rows});
  Tensor y = Tensor::empty(x.shape());
  cpu::layer_norm_forward(x.f32(), rows, dim_, weight.value.f32(), bias.value.f32(), eps_, y.f32(),
                          mean_.f32(), rstd_.f32());
  return y;
}

Tensor LayerNorm::backward(const Tensor& dy) {
  TERN_CHECK(x_.defined(), describe(), ": backward before forward");
  TERN_CHECK(dy.shape() == x_.shape(), describe(), ": expected gradient ", shape_str(x_.shape()), ", got ",
             dy.str());
  Tensor dx = Tensor::empty(x_.shape());
  cpu::layer_norm_backward(dy.f32(), x_.f32(), x_.numel() / dim_, dim_, weight.value.f32(), mean_.f32(),
                           rstd_.f32(), dx.f32(), weight.grad.f32(), bias.grad.f32());
  return input_grad() ? dx : Tensor();
}

std::string LayerNorm::describe() const { return detail::concat("LayerNorm(", dim_, ")"); }

}  // namespace tern
