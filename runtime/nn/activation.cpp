#include "runtime/nn/activation.h"

#include "runtime/kernels/cpu/activation.h"

namespace tern {

namespace {

void check_input(const char* name, const Tensor& x) {
  TERN_CHECK(x.defined() && x.dtype() == DType::f32, name, ": expected an f32 input, got ", x.str());
}

// The saved tensor tells both whether forward ran and the shape dy must have.
void check_dy(const char* name, const Tensor& saved, const Tensor& dy) {
  TERN_CHECK(saved.defined(), name, ": backward before forward");
  TERN_CHECK(dy.defined() && dy.dtype() == DType::f32 && dy.shape() == saved.shape(), name,
             ": expected gradient f32", shape_str(saved.shape()), ", got ", dy.str());
}

}  // namespace

Tensor ReLU::forward(const Tensor& x) {
  check_input("ReLU", x);
  y_ = Tensor::empty(x.shape());
  cpu::relu_forward(x.f32(), y_.f32(), x.numel());
  return y_;
}

Tensor ReLU::backward(const Tensor& dy) {
  check_dy("ReLU", y_, dy);
  Tensor dx = Tensor::empty(dy.shape());
  cpu::relu_backward(y_.f32(), dy.f32(), dx.f32(), dy.numel());
  return dx;
}

Tensor ReLU6::forward(const Tensor& x) {
  check_input("ReLU6", x);
  y_ = Tensor::empty(x.shape());
  cpu::relu6_forward(x.f32(), y_.f32(), x.numel());
  return y_;
}

Tensor ReLU6::backward(const Tensor& dy) {
  check_dy("ReLU6", y_, dy);
  Tensor dx = Tensor::empty(dy.shape());
  cpu::relu6_backward(y_.f32(), dy.f32(), dx.f32(), dy.numel());
  return dx;
}

Tensor HSwish::forward(const Tensor& x) {
  check_input("HSwish", x);
  x_ = x;
  Tensor y = Tensor::empty(x.shape());
  cpu::hswish_forward(x.f32(), y.f32(), x.numel());
  return y;
}

Tensor HSwish::backward(const Tensor& dy) {
  check_dy("HSwish", x_, dy);
  Tensor dx = Tensor::empty(dy.shape());
  cpu::hswish_backward(x_.f32(), dy.f32(), dx.f32(), dy.numel());
  return dx;
}

}  // namespace tern
