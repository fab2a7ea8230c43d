#include "runtime/nn/dropout.h"

#include "runtime/kernels/cpu/dropout.h"

namespace tern {

Dropout::Dropout(float p, uint64_t seed) : p_(p), rng_(seed) {
  // Written so that NaN fails too. p = 1 would zero everything and scale by infinity.
  TERN_CHECK(p >= 0.0f && p < 1.0f, "Dropout: p must be in [0, 1), got ", p);
}

std::string Dropout::describe() const { return detail::concat("Dropout(p=", p_, ")"); }

Tensor Dropout::forward(const Tensor& x) {
  TERN_CHECK(x.defined() && x.dtype() == DType::f32, describe(), ": expected an f32 input, got ", x.str());
  ran_ = true;
  shape_ = x.shape();
  masked_ = training() && p_ > 0.0f;
  if (!masked_) return x;
  // The mask is private to this module, so its storage is reused while the shape stays.
  if (!mask_.defined() || mask_.shape() != x.shape()) mask_ = Tensor::empty(x.shape());
  cpu::dropout_mask(rng_, p_, mask_.f32(), x.numel());
  Tensor y = Tensor::empty(x.shape());
  cpu::dropout_apply(x.f32(), mask_.f32(), y.f32(), x.numel());
  return y;
}

Tensor Dropout::backward(const Tensor& dy) {
  TERN_CHECK(ran_, describe(), ": backward before forward");
  TERN_CHECK(dy.defined() && dy.dtype() == DType::f32 && dy.shape() == shape_, describe(),
             ": expected gradient f32", shape_str(shape_), ", got ", dy.str());
  if (!masked_) return dy;
  Tensor dx = Tensor::empty(dy.shape());
  cpu::dropout_apply(dy.f32(), mask_.f32(), dx.f32(), dy.numel());
  return dx;
}

}  // namespace tern
