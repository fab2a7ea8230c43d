// CausalSelfAttention: GPT's masked multi-head self-attention over [B, T, C]: one Linear to
// q, k, v ([B, T, 3C]), the causal attention kernel (runtime/kernels/cpu/attention.h), and an
// output Linear back to C. Used by TransformerBlock (runtime/nn/transformer.h).
#pragma once

#include <cstdint>
#include <string>

#include "runtime/nn/linear.h"
#include "runtime/nn/module.h"
#include "runtime/rng.h"

namespace tern {

class CausalSelfAttention : public Module {
 public:
  // dim must be a multiple of heads. Weights ~ N(0, 0.02^2), the output projection's
  // N(0, out_std^2) (GPT-2 scales it down with depth: gpt_residual_std in init.h); biases zero.
  CausalSelfAttention(int64_t dim, int64_t heads, Rng& rng, float out_std = 0.02f);

  // x: f32 [B, T, dim]; y: f32 [B, T, dim], position t attending to positions 0..t only.
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  // Its own cache only: the pipeline swaps the children (qkv, proj) itself.
  void swap_forward_state(ForwardState& s) override { s.swap(B_, T_, qkv_out_, att_); }

  Linear qkv;   // dim -> 3 dim: queries, keys, values of every head
  Linear proj;  // dim -> dim

 protected:
  void on_input_grad_change() override { qkv.set_input_grad(input_grad()); }

 private:
  int64_t dim_, heads_;
  int64_t B_ = 0, T_ = 0;
  Tensor qkv_out_;  // [B*T, 3 dim] of the last forward
  Tensor att_;      // [B, heads, T, T] softmax probabilities
};

}  // namespace tern
