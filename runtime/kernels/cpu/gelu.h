// GELU activation kernels in GPT-2's tanh approximation, over flat f32 arrays: the MLP of each
// gpt-tiny block (runtime/nn/gelu.h). Plain functions, never throw.
#pragma once

#include <cstdint>

namespace tern::cpu {

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Hendrycks & Gimpel 2016, eq. for the
// tanh approximation GPT-2 uses). y may alias x.
void gelu_forward(const float* x, float* y, int64_t n);

// dx = dy * d/dx of the above, from the saved input x. dx may alias dy.
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);

}  // namespace tern::cpu
