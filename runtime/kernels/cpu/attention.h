// Causal multi-head self-attention kernels (Vaswani et al. 2017, with GPT's causal mask): the
// core of gpt-tiny's CausalSelfAttention (runtime/nn/attention.h), between its input projection
// to q, k, v and its output projection. Plain functions over pointers, never throw.
#pragma once

#include <cstdint>

namespace tern::cpu {

// qkv is [B, T, 3C]: each position's query (C values), then key, then value, as one Linear to 3C
// produces them; head h of H uses columns [h*D, (h+1)*D) of each, D = C/H (C a multiple of H).
// For every batch b, head h and position i:
//   att[b, h, i, j] = softmax_j(q_i · k_j / sqrt(D)) over j <= i, and 0 for j > i (the mask),
//   y[b, i, h*D:(h+1)*D] = Σ_j att[b, h, i, j] v_j.
// The softmax subtracts each row's maximum first, so large scores do not overflow. y is
// [B, T, C] (heads side by side); att [B, H, T, T] keeps the probabilities for the backward pass.
void causal_attention_forward(const float* qkv, int64_t B, int64_t T, int64_t C, int64_t H, float* y,
                              float* att);

// The exact gradient of the above: from dy [B, T, C], the saved att and qkv, writes dqkv
// [B, T, 3C] (overwritten). With P = att, dS = P ⊙ (dP - rowsum(dP ⊙ P)) for dP = dY Vᵀ;
// dQ = dS K / sqrt(D), dK = dSᵀ Q / sqrt(D), dV = Pᵀ dY.
void causal_attention_backward(const float* dy, const float* qkv, const float* att, int64_t B, int64_t T,
                               int64_t C, int64_t H, float* dqkv);

}  // namespace tern::cpu
