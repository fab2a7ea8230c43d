// Batch and group normalisation kernels over f32 activations laid out as [N, C, S] (NCHW with
// S = H*W; S = 1 for [N, C]). Used by the BatchNorm2d and GroupNorm modules (runtime/nn/norm.h).
#pragma once

#include <cstdint>

namespace tern::cpu {

// Training forward: per channel c, over the N*S values of x[:, c, :], the batch mean and biased
// variance normalise x; y = gamma * xhat + beta. Writes save_mean[c] and save_invstd[c] =
// 1/sqrt(var + eps) for the backward pass, and updates the running stats PyTorch's way:
// running = (1 - momentum) * running + momentum * batch, running_var with the unbiased variance
// (times n/(n-1); with n == 1 the biased one, since callers reject that case anyway).
void batch_norm_forward_train(const float* x, int64_t N, int64_t C, int64_t S, const float* gamma,
                              const float* beta, float momentum, float eps, float* y, float* save_mean,
                              float* save_invstd, float* running_mean, float* running_var);

// Inference forward: normalises with the running statistics.
void batch_norm_forward_eval(const float* x, int64_t N, int64_t C, int64_t S, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var,
                             float eps, float* y);

// Training backward from the statistics saved by batch_norm_forward_train: dx (the mean and
// variance depend on x), and dgamma[c], dbeta[c] (overwritten, not accumulated).
void batch_norm_backward_train(const float* dy, const float* x, int64_t N, int64_t C, int64_t S,
                               const float* gamma, const float* save_mean, const float* save_invstd,
                               float* dx, float* dgamma, float* dbeta);

// Inference backward: the statistics are constants, so dx = gamma / sqrt(running_var + eps) * dy.
void batch_norm_backward_eval(const float* dy, const float* x, int64_t N, int64_t C, int64_t S,
                              const float* gamma, const float* running_mean, const float* running_var,
                              float eps, float* dx, float* dgamma, float* dbeta);

// Group norm forward: for each sample n and group g of C/G consecutive channels, the mean and
// biased variance over those channels' S positions normalise them; the affine is per channel.
// Writes save_mean and save_invstd, each [N, G]. C must be a multiple of G.
void group_norm_forward(const float* x, int64_t N, int64_t C, int64_t S, int64_t G, const float* gamma,
                        const float* beta, float eps, float* y, float* save_mean, float* save_invstd);

// Group norm backward from the saved [N, G] statistics: dx, and dgamma[c], dbeta[c] (overwritten).
void group_norm_backward(const float* dy, const float* x, int64_t N, int64_t C, int64_t S, int64_t G,
                         const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                         float* dgamma, float* dbeta);

}  // namespace tern::cpu
