// Requantisation: an int32 accumulator of an int8 layer back to int8 with an integer-only
// multiplier, the step that ends every int8 conv and linear kernel (on-device training, issue 7).
#pragma once

#include <cstdint>

namespace tern::cpu {

// A positive real multiplier M as multiplier * 2^(shift - 31), multiplier in [2^30, 2^31) (Q31).
// Integer-only, so a microcontroller without an FPU runs the same arithmetic bit for bit.
struct QuantMultiplier {
  int32_t multiplier = 0;
  int32_t shift = 0;
};

// The nearest QuantMultiplier to m (m >= 0, finite). Multipliers below 2^-31 become 0 (every
// accumulator then maps to the zero point); above 2^30 they saturate. Never throws.
QuantMultiplier quantize_multiplier(double m) noexcept;
// The real multiplier a QuantMultiplier stands for.
double multiplier_value(QuantMultiplier q) noexcept;

// round(acc * M) with ties rounded up (towards +infinity), computed exactly in 64 bits: one
// rounding, unlike the two of TFLite's doubling-high-multiply-then-shift.
inline int32_t multiply_by_quantized(int32_t acc, int32_t multiplier, int32_t shift) noexcept {
  const int total = 31 - shift;  // in [1, 62] for every multiplier quantize_multiplier returns
  const int64_t product = static_cast<int64_t>(acc) * multiplier;
  return static_cast<int32_t>((product + (int64_t{1} << (total - 1))) >> total);
}

// The output side of an int8 layer: per-output-channel multipliers M_c = s_x * s_w[c] / s_y, the
// output zero point, and the clamp [act_min, act_max] in int8 units that also applies a fused
// ReLU (act_min = zero point) or ReLU6 (act_max = zero point + 6 / s_y).
struct Requant {
  const int32_t* multiplier = nullptr;  // [c_out]
  const int32_t* shift = nullptr;       // [c_out]
  int32_t out_zero_point = 0;
  int32_t act_min = -128;
  int32_t act_max = 127;
};

inline int8_t requantize(int32_t acc, int32_t multiplier, int32_t shift, const Requant& rq) noexcept {
  int32_t v = multiply_by_quantized(acc, multiplier, shift) + rq.out_zero_point;
  v = v < rq.act_min ? rq.act_min : v;
  v = v > rq.act_max ? rq.act_max : v;
  return static_cast<int8_t>(v);
}

// y[p, c] = requantize(acc[p, c], channel c) for a [pixels, channels] accumulator (NHWC rows).
void requantize_rows(const int32_t* acc, int64_t pixels, int64_t channels, const Requant& rq,
                     int8_t* y) noexcept;

// Float-scale requantisation for the elementwise ops: clamp(zero_point + round(v)), ties away from
// zero, into [act_min, act_max].
inline int8_t saturate_round(float v, int32_t zero_point, int32_t act_min, int32_t act_max) noexcept {
  const float r = v >= 0.0f ? v + 0.5f : v - 0.5f;
  // Clamp in float first, so a huge v cannot overflow the int conversion.
  const float lo = static_cast<float>(act_min - zero_point), hi = static_cast<float>(act_max - zero_point);
  const float c = r < lo ? lo : (r > hi ? hi : r);
  return static_cast<int8_t>(static_cast<int32_t>(c) + zero_point);
}

}  // namespace tern::cpu
