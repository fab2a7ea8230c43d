#include "ondevice/qas.h"

namespace tern::ondevice {

namespace {
inline int64_t channel_of(const int32_t* channels, int64_t j) { return channels ? channels[j] : j; }

void scale_rows(float* grad, int64_t k, int64_t cols, const int32_t* channels, const float* weight_scale,
                float input_scale, int power) noexcept {
  for (int64_t j = 0; j < k; ++j) {
    const float s = weight_scale[channel_of(channels, j)] * input_scale;
    const float f = power == 1 ? s : 1.0f / (s * s);
    float* row = grad + j * cols;
#pragma omp simd
    for (int64_t i = 0; i < cols; ++i) row[i] *= f;
  }
}
}  // namespace

void qas_scale_weight_grad(float* grad, int64_t k, int64_t cols, const int32_t* channels,
                           const float* weight_scale, bool enabled) noexcept {
  if (enabled) scale_rows(grad, k, cols, channels, weight_scale, 1.0f, -2);
}

void qas_scale_bias_grad(float* grad, int64_t k, const int32_t* channels, const float* weight_scale,
                         float input_scale, bool enabled) noexcept {
  if (enabled) scale_rows(grad, k, 1, channels, weight_scale, input_scale, -2);
}

void to_quantized_weight_grad(float* grad, int64_t k, int64_t cols, const int32_t* channels,
                              const float* weight_scale) noexcept {
  scale_rows(grad, k, cols, channels, weight_scale, 1.0f, 1);
}

void to_quantized_bias_grad(float* grad, int64_t k, const int32_t* channels, const float* weight_scale,
                            float input_scale) noexcept {
  scale_rows(grad, k, 1, channels, weight_scale, input_scale, 1);
}

}  // namespace tern::ondevice
