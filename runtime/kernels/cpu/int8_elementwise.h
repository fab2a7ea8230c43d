// Batch-1 int8 kernels of the on-device model that carry no weights: the residual add of an
// inverted-residual block, global average pooling and max pooling, over NHWC activations.
// Like cpu/int8_conv.h they never allocate or throw and assume validated shapes.
#pragma once

#include <cstdint>

namespace tern::cpu {

// The residual add: y = clamp(y_zero_point + round(a_mult * (a - a_zero_point) + b_mult *
// (b - b_zero_point)), act_min, act_max) with a_mult = s_a / s_y and b_mult = s_b / s_y. Float
// multipliers: the sum of two differently scaled terms has no single integer multiplier, and f32
// rounding only moves results that sit within ~2^-16 of a rounding tie. y may alias a or b.
struct Int8AddParams {
  int32_t a_zero_point = 0, b_zero_point = 0, y_zero_point = 0;
  float a_mult = 1.0f, b_mult = 1.0f;
  int32_t act_min = -128, act_max = 127;
};
void int8_add(const int8_t* a, const int8_t* b, int64_t n, const Int8AddParams& p, int8_t* y) noexcept;

// x [pixels, c] -> y [c]: the mean of each channel, rounded half away from zero, in the input's
// scale and zero point (a mean stays inside its inputs' range, so it needs no new range). y may
// alias x (pooling in place): y[c] is written once channel c is summed, over x[0, c], which no
// later channel reads.
void int8_global_avg_pool(const int8_t* x, int32_t pixels, int32_t c, int32_t zero_point, int8_t* y) noexcept;

// Max pooling with square windows, floor-mode output size and padding that never wins (as
// cpu::max_pool2d_forward); same scale and zero point in and out. x [h, w, c] -> y [out_h, out_w, c].
struct Int8PoolShape {
  int32_t h = 1, w = 1, c = 1;
  int32_t kernel = 2, stride = 2, pad = 0;
  int32_t out_h() const { return (h + 2 * pad - kernel) / stride + 1; }
  int32_t out_w() const { return (w + 2 * pad - kernel) / stride + 1; }
};
void int8_max_pool2d(const Int8PoolShape& s, const int8_t* x, int8_t* y) noexcept;

}  // namespace tern::cpu
