#include "runtime/nn/gelu.h"

#include "runtime/kernels/cpu/gelu.h"

namespace tern {

Tensor GELU::forward(const Tensor& x) {
  TERN_CHECK(x.defined() && x.dtype() == DType::f32, "GELU: expected an f32 input, got ",
             x.defined() ? x.str() : "an undefined tensor");
  x_ = x;
  Tensor y = Tensor::empty(x.shape());
  cpu::gelu_forward(x.f32(), y.f32(), x.numel());
  return y;
}

Tensor GELU::backward(const Tensor& dy) {
  TERN_CHECK(x_.defined(), "GELU: backward before forward");
  TERN_CHECK(dy.shape() == x_.shape(), "GELU: expected gradient ", shape_str(x_.shape()), ", got ", dy.str());
  if (!input_grad()) return Tensor();
  Tensor dx = Tensor::empty(x_.shape());
  cpu::gelu_backward(x_.f32(), dy.f32(), dx.f32(), x_.numel());
  return dx;
}

}  // namespace tern
