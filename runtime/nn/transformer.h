// The parts of a GPT-2-style decoder that gpt-tiny (models/gpt.cpp) stacks in a Sequential:
// TransformerBlock (pre-norm attention and MLP, each around a residual) and LmHead (final
// LayerNorm and the projection to vocabulary logits). Both map f32 [B, T, C] tensors.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/nn/attention.h"
#include "runtime/nn/gelu.h"
#include "runtime/nn/layer_norm.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/module.h"
#include "runtime/rng.h"

namespace tern {

// h = x + attn(ln1(x)); y = h + proj(gelu(fc(ln2(h)))), fc: C -> mlp_ratio*C, proj: back to C.
// The two projections into the residual stream (attn.proj, proj) start from N(0, residual_std^2).
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t dim, int64_t heads, Rng& rng, float residual_std = 0.02f, int64_t mlp_ratio = 4);

  // x: f32 [B, T, dim]. It must stay unchanged until backward() (ln1 caches it without a copy).
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(B_, T_); }  // children swap their own

  LayerNorm ln1;
  CausalSelfAttention attn;
  LayerNorm ln2;
  Linear fc;
  GELU gelu;
  Linear proj;

 private:
  int64_t dim_, heads_, hidden_;
  int64_t B_ = 0, T_ = 0;
};

// logits = out(norm(x)): [B, T, C] -> [B, T, vocab], the output Linear without bias (GPT-2's
// lm_head), weights N(0, 0.02^2). Untied: it does not share the token embedding's table, so the
// pipeline can place it on a different stage from the Embedding.
class LmHead : public Module {
 public:
  LmHead(int64_t dim, int64_t vocab, Rng& rng);

  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(B_, T_); }  // children swap their own

  LayerNorm norm;
  Linear out;

 protected:
  void on_input_grad_change() override { norm.set_input_grad(input_grad()); }

 private:
  int64_t dim_, vocab_;
  int64_t B_ = 0, T_ = 0;
};

}  // namespace tern
