#include "runtime/kernels/cpu/gelu.h"

#include <bit>
#include <cmath>
#include <cstdint>

namespace tern::cpu {

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// c ? a : b through bit masks: GCC (with its default -ftrapping-math) leaves a loop of float
// compares feeding ?: scalar, as in activation.cpp.
inline float pick(bool c, float a, float b) {
  const int32_t m = -static_cast<int32_t>(c);
  return std::bit_cast<float>((std::bit_cast<int32_t>(a) & m) | (std::bit_cast<int32_t>(b) & ~m));
}

inline float clamp(float x, float lo, float hi) { return pick(x < lo, lo, pick(x > hi, hi, x)); }

// exp(x) for x in any range, within 2 ulp, in operations the compiler vectorises (glibc's expf
// and tanhf are scalar calls, and were most of a gpt-tiny step). Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2/2, then Taylor to r^7 (remainder < 1e-8 relative), times 2^n built
// in the exponent bits. The input is clamped to [-87, 88], where 2^n stays a normal float.
inline float vexp(float x) {
  x = clamp(x, -87.0f, 88.0f);
  // n = round(x / ln2), by truncation (floor() does not vectorise without -fno-trapping-math).
  const float t = x * 1.44269504088896341f;
  const int32_t k = static_cast<int32_t>(t + pick(t < 0.0f, -0.5f, 0.5f));
  const float n = static_cast<float>(k);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 = 0.693359375 - 2.12194440e-4
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((k + 127) << 23);
}
}  // namespace

// 0.5 (1 + tanh(u)) is the logistic sigmoid s of 2u, so y = x s(2u) with s(z) = 1 / (1 + e^-z):
// one exp and no cancellation where tanh(u) is near -1.
void gelu_forward(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = kSqrt2OverPi * (v + kCubic * v * v * v);
    y[i] = v / (1.0f + vexp(-2.0f * u));
  }
}

// d/dx [x s(2u)] = s + x s (1 - s) 2 du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    // Beyond |x| = 10 the derivative is exactly 1 (or 0) in f32; clamping keeps x^3 finite there,
    // where s (1 - s) du/dx would otherwise be 0 * inf.
    const float v = clamp(x[i], -10.0f, 10.0f);
    const float u = kSqrt2OverPi * (v + kCubic * v * v * v);
    const float s = 1.0f / (1.0f + vexp(-2.0f * u));
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * v * v);
    dx[i] = dy[i] * (s + 2.0f * v * s * (1.0f - s) * du);
  }
}

}  // namespace tern::cpu
