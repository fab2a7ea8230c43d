// Naive references for the cpu:: batch and group norm kernels (runtime/kernels/cpu/norm.h):
// textbook formulas, double accumulation, same signatures and semantics. Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

void batch_norm_forward_train(const float* x, int64_t N, int64_t C, int64_t S, const float* gamma,
                              const float* beta, float momentum, float eps, float* y, float* save_mean,
                              float* save_invstd, float* running_mean, float* running_var);

void batch_norm_forward_eval(const float* x, int64_t N, int64_t C, int64_t S, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var,
                             float eps, float* y);

void batch_norm_backward_train(const float* dy, const float* x, int64_t N, int64_t C, int64_t S,
                               const float* gamma, const float* save_mean, const float* save_invstd,
                               float* dx, float* dgamma, float* dbeta);

void batch_norm_backward_eval(const float* dy, const float* x, int64_t N, int64_t C, int64_t S,
                              const float* gamma, const float* running_mean, const float* running_var,
                              float eps, float* dx, float* dgamma, float* dbeta);

void group_norm_forward(const float* x, int64_t N, int64_t C, int64_t S, int64_t G, const float* gamma,
                        const float* beta, float eps, float* y, float* save_mean, float* save_invstd);

void group_norm_backward(const float* dy, const float* x, int64_t N, int64_t C, int64_t S, int64_t G,
                         const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                         float* dgamma, float* dbeta);

}  // namespace tern::ref
