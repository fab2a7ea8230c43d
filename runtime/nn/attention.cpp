#include "runtime/nn/attention.h"

#include "runtime/kernels/cpu/attention.h"
#include "runtime/nn/init.h"

namespace tern {

namespace {
int64_t checked_dim(int64_t dim, int64_t heads) {
  TERN_CHECK(dim > 0 && heads > 0 && dim % heads == 0, "CausalSelfAttention(", dim, ", heads=", heads,
             "): the width must be a positive multiple of the head count");
  return dim;
}
}  // namespace

CausalSelfAttention::CausalSelfAttention(int64_t dim, int64_t heads, Rng& rng, float out_std)
    : qkv(checked_dim(dim, heads), 3 * dim, rng), proj(dim, dim, rng), dim_(dim), heads_(heads) {
  fill_normal(qkv.weight.value, rng, kGptInitStd);
  fill_normal(proj.weight.value, rng, out_std);
  register_child("qkv", qkv);
  register_child("proj", proj);
}

Tensor CausalSelfAttention::forward(const Tensor& x) {
  TERN_CHECK(x.defined() && x.ndim() == 3 && x.dim(2) == dim_, describe(), ": expected input [B, T, ", dim_,
             "], got ", x.defined() ? x.str() : "an undefined tensor");
  B_ = x.dim(0);
  T_ = x.dim(1);
  qkv_out_ = qkv.forward(x.reshape({B_ * T_, dim_}));
  att_ = Tensor::empty({B_, heads_, T_, T_});
  Tensor y = Tensor::empty({B_ * T_, dim_});
  cpu::causal_attention_forward(qkv_out_.f32(), B_, T_, dim_, heads_, y.f32(), att_.f32());
  return proj.forward(y).reshape({B_, T_, dim_});
}

Tensor CausalSelfAttention::backward(const Tensor& dy) {
  TERN_CHECK(att_.defined(), describe(), ": backward before forward");
  TERN_CHECK(dy.ndim() == 3 && dy.dim(0) == B_ && dy.dim(1) == T_ && dy.dim(2) == dim_, describe(),
             ": expected gradient [", B_, ", ", T_, ", ", dim_, "], got ", dy.str());
  Tensor dmix = proj.run_backward(dy.reshape({B_ * T_, dim_}));
  Tensor dqkv = Tensor::empty(qkv_out_.shape());
  cpu::causal_attention_backward(dmix.f32(), qkv_out_.f32(), att_.f32(), B_, T_, dim_, heads_, dqkv.f32());
  Tensor dx = qkv.run_backward(dqkv);
  return dx.defined() ? dx.reshape({B_, T_, dim_}) : dx;
}

std::string CausalSelfAttention::describe() const {
  return detail::concat("CausalSelfAttention(", dim_, ", heads=", heads_, ")");
}

}  // namespace tern
