// Naive reference for the cpu causal attention kernels (runtime/kernels/cpu/attention.h): loops
// over positions in double, straight from the definitions. Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

void causal_attention_forward(const float* qkv, int64_t B, int64_t T, int64_t C, int64_t H, float* y,
                              float* att);
// Recomputes the probabilities from qkv in double instead of trusting att, so a wrong saved
// att in the fast kernel shows up as a mismatch.
void causal_attention_backward(const float* dy, const float* qkv, const float* att, int64_t B, int64_t T,
                               int64_t C, int64_t H, float* dqkv);

}  // namespace tern::ref
