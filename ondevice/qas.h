// Quantization-aware scaling (QAS, Lin et al. 2022, "On-Device Training Under 256KB Memory",
// Sec. 2.2): the gradient rescaling that lets SGD train the parameters of an int8 graph as stably
// as fp32 training, with no extra hyperparameters. tern-finetune applies it before each update.
//
// The int8 graph trains its parameters in their quantised units: the weight W_bar = W / s_W (s_W
// per output channel) and the bias b_bar = b / (s_W * s_x) (s_x the layer input's scale). By the
// chain rule their gradients are G_W_bar = s_W * G_W and G_b_bar = s_W * s_x * G_b, so the
// weight-to-gradient norm ratio that SGD's learning rate is tuned for is off by s_W^-2 for the
// weight and by (s_W * s_x)^-2 for the bias. QAS (the paper's Eq. 2) rescales the gradients:
//
//     G~_W_bar = G_W_bar * s_W^-2          G~_b_bar = G_b_bar * s_W^-2 * s_x^-2
//
// per output channel, restoring ||W_bar|| / ||G~_W_bar|| = ||W|| / ||G_W||. (MIT's tiny-training
// code applies the same factors in its SGDScale optimizer.) With QAS off the gradients pass
// unchanged, so its effect can be measured. All functions here are noexcept and allocation-free:
// the device runs them too.
#pragma once

#include <cstdint>

namespace tern::ondevice {

// The factors themselves: s_W^-2 and (s_W * s_x)^-2.
inline float qas_weight_factor(float weight_scale) noexcept { return 1.0f / (weight_scale * weight_scale); }
inline float qas_bias_factor(float weight_scale, float input_scale) noexcept {
  const float s = weight_scale * input_scale;
  return 1.0f / (s * s);
}

// Rescales k rows of a weight gradient in quantised units, grad [k, cols]: row j belongs to output
// channel channels[j] (channels null: row j is channel j, a full-layer gradient) and is multiplied
// by qas_weight_factor(weight_scale[channel]). Nothing happens when `enabled` is false.
void qas_scale_weight_grad(float* grad, int64_t k, int64_t cols, const int32_t* channels,
                           const float* weight_scale, bool enabled) noexcept;
// The same for a bias gradient grad [k]: times qas_bias_factor(weight_scale[channel], input_scale).
void qas_scale_bias_grad(float* grad, int64_t k, const int32_t* channels, const float* weight_scale,
                         float input_scale, bool enabled) noexcept;

// The chain rule between units, for a loop that computes gradients of the real values (as the
// kernels of cpu/int8_backward.h do): G_W_bar = s_W * G_W per row, G_b_bar = s_W * s_x * G_b.
void to_quantized_weight_grad(float* grad, int64_t k, int64_t cols, const int32_t* channels,
                              const float* weight_scale) noexcept;
void to_quantized_bias_grad(float* grad, int64_t k, const int32_t* channels, const float* weight_scale,
                            float input_scale) noexcept;

}  // namespace tern::ondevice
