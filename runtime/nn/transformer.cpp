#include "runtime/nn/transformer.h"

#include "runtime/nn/init.h"

namespace tern {

namespace {
// a + b into a new tensor (the children cache their inputs, so nothing is updated in place).
Tensor sum(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape());
  float* o = out.f32();
  const float* ap = a.f32();
  const float* bp = b.f32();
  const int64_t n = out.numel();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = ap[i] + bp[i];
  return out;
}

int64_t checked_ratio(int64_t dim, int64_t mlp_ratio) {
  TERN_CHECK(dim > 0 && mlp_ratio > 0, "TransformerBlock(", dim, ", mlp_ratio=", mlp_ratio,
             "): sizes must be positive");
  return dim * mlp_ratio;
}
}  // namespace

TransformerBlock::TransformerBlock(int64_t dim, int64_t heads, Rng& rng, float residual_std,
                                   int64_t mlp_ratio)
    : ln1(dim),
      attn(dim, heads, rng, residual_std),
      ln2(dim),
      fc(dim, checked_ratio(dim, mlp_ratio), rng),
      proj(dim * mlp_ratio, dim, rng),
      dim_(dim),
      heads_(heads),
      hidden_(dim * mlp_ratio) {
  fill_normal(fc.weight.value, rng, kGptInitStd);
  fill_normal(proj.weight.value, rng, residual_std);
  register_child("ln1", ln1);
  register_child("attn", attn);
  register_child("ln2", ln2);
  register_child("fc", fc);
  register_child("gelu", gelu);
  register_child("proj", proj);
}

Tensor TransformerBlock::forward(const Tensor& x) {
  TERN_CHECK(x.defined() && x.ndim() == 3 && x.dim(2) == dim_, describe(), ": expected input [B, T, ", dim_,
             "], got ", x.defined() ? x.str() : "an undefined tensor");
  B_ = x.dim(0);
  T_ = x.dim(1);
  Tensor h = sum(x, attn.forward(ln1.forward(x)));
  Tensor m = ln2.forward(h).reshape({B_ * T_, dim_});
  m = proj.forward(gelu.forward(fc.forward(m)));
  return sum(h, m.reshape({B_, T_, dim_}));
}

Tensor TransformerBlock::backward(const Tensor& dy) {
  TERN_CHECK(B_ > 0, describe(), ": backward before forward");
  TERN_CHECK(dy.ndim() == 3 && dy.dim(0) == B_ && dy.dim(1) == T_ && dy.dim(2) == dim_, describe(),
             ": expected gradient [", B_, ", ", T_, ", ", dim_, "], got ", dy.str());
  // Each residual passes the gradient through unchanged and adds the branch's.
  Tensor g = proj.run_backward(dy.reshape({B_ * T_, dim_}));
  g = fc.run_backward(gelu.run_backward(g));
  Tensor dh = sum(dy, ln2.run_backward(g.reshape({B_, T_, dim_})));
  Tensor dx = ln1.run_backward(attn.run_backward(dh));
  return input_grad() ? sum(dh, dx) : Tensor();
}

std::string TransformerBlock::describe() const {
  return detail::concat("TransformerBlock(", dim_, ", heads=", heads_, ", mlp=", hidden_, ")");
}

LmHead::LmHead(int64_t dim, int64_t vocab, Rng& rng)
    : norm(dim), out(dim, vocab, rng, /*bias=*/false), dim_(dim), vocab_(vocab) {
  fill_normal(out.weight.value, rng, kGptInitStd);
  register_child("norm", norm);
  register_child("out", out);
}

Tensor LmHead::forward(const Tensor& x) {
  TERN_CHECK(x.defined() && x.ndim() == 3 && x.dim(2) == dim_, describe(), ": expected input [B, T, ", dim_,
             "], got ", x.defined() ? x.str() : "an undefined tensor");
  B_ = x.dim(0);
  T_ = x.dim(1);
  return out.forward(norm.forward(x).reshape({B_ * T_, dim_})).reshape({B_, T_, vocab_});
}

Tensor LmHead::backward(const Tensor& dy) {
  TERN_CHECK(B_ > 0, describe(), ": backward before forward");
  TERN_CHECK(dy.ndim() == 3 && dy.dim(0) == B_ && dy.dim(1) == T_ && dy.dim(2) == vocab_, describe(),
             ": expected gradient [", B_, ", ", T_, ", ", vocab_, "], got ", dy.str());
  Tensor g = out.run_backward(dy.reshape({B_ * T_, vocab_}));
  return norm.run_backward(g.reshape({B_, T_, dim_}));
}

std::string LmHead::describe() const { return detail::concat("LmHead(", dim_, "->", vocab_, ")"); }

}  // namespace tern
