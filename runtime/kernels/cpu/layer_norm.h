// Layer normalisation kernels: each row of an [N, C] array is normalised over its C values, then
// scaled and shifted per column. The pre-norm transformer blocks of gpt-tiny use them
// (runtime/nn/layer_norm.h); batch and group norm live in norm.h.
#pragma once

#include <cstdint>

namespace tern::cpu {

// y[n, :] = (x[n, :] - mean_n) * rstd_n * gamma + beta, with mean_n and the biased variance of
// row n (two passes, so a large mean does not cost precision) and rstd_n = 1/sqrt(var_n + eps).
// Writes mean[n] and rstd[n] for the backward pass. y may alias x.
void layer_norm_forward(const float* x, int64_t N, int64_t C, const float* gamma, const float* beta,
                        float eps, float* y, float* mean, float* rstd);

// From the saved statistics: dx (overwritten; the statistics depend on x, so
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma), and dgamma += Σ_n dy * xhat,
// dbeta += Σ_n dy (accumulated, like linear_backward, so micro-batches add up).
void layer_norm_backward(const float* dy, const float* x, int64_t N, int64_t C, const float* gamma,
                         const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta);

}  // namespace tern::cpu
