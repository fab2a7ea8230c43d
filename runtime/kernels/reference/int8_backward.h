// Naive references for cpu/int8_backward.h: dense gradients of a grouped NHWC convolution over
// dequantised values, in double precision. Tests only.
#pragma once

#include <cstdint>

#include "runtime/kernels/cpu/int8_conv.h"

namespace tern::ref {

// The full weight gradient dw [c_out, kernel, kernel, c_in / groups] of the real weights for the
// real input x_scale * (x - x_zero_point); a linear layer is a 1x1 convolution of one pixel.
void int8_conv2d_weight_grad(const cpu::Int8ConvShape& s, int32_t groups, const int8_t* x,
                             int32_t x_zero_point, float x_scale, const float* dy, float* dw);
// dx [h, w, c_in] for the real weights w_scale[oc] * w.
void int8_conv2d_input_grad(const cpu::Int8ConvShape& s, int32_t groups, const float* dy, const int8_t* w,
                            const float* w_scale, float* dx);
void bias_grad(const float* dy, int64_t pixels, int64_t c, float* db);

}  // namespace tern::ref
