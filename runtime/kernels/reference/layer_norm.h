// Naive reference for the cpu layer norm kernels (runtime/kernels/cpu/layer_norm.h): the
// textbook formulas in double, same signatures and semantics. Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

void layer_norm_forward(const float* x, int64_t N, int64_t C, const float* gamma, const float* beta,
                        float eps, float* y, float* mean, float* rstd);
void layer_norm_backward(const float* dy, const float* x, int64_t N, int64_t C, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta);

}  // namespace tern::ref
