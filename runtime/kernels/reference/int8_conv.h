// Naive references for the int8 kernels of cpu/int8_conv.h and cpu/requantize.h: one grouped
// NHWC convolution with 64-bit accumulation and a double-precision multiplier. Tests only.
#pragma once

#include <cstdint>

#include "runtime/kernels/cpu/int8_conv.h"

namespace tern::ref {

// clamp(out_zero_point + round_half_up(acc * m), act_min, act_max), m in double.
int8_t requantize(int64_t acc, double m, const cpu::Requant& rq);

// Grouped convolution over NHWC; w [c_out, kernel, kernel, c_in / groups]. groups = 1 is
// cpu::int8_conv2d, groups = c_in = c_out is cpu::int8_depthwise_conv2d_inplace (not in place).
void int8_conv2d(const cpu::Int8ConvShape& s, int32_t groups, const int8_t* x, int32_t x_zero_point,
                 const int8_t* w, const int32_t* bias, const cpu::Requant& rq, int8_t* y);

void int8_linear(const int8_t* x, int32_t x_zero_point, const int8_t* w, const int32_t* bias, int32_t in,
                 int32_t out, const cpu::Requant& rq, int8_t* y);

}  // namespace tern::ref
