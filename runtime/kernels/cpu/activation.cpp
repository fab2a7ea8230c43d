#include "runtime/kernels/cpu/activation.h"

#include <bit>

namespace tern::cpu {

// Written as selects over one pass so GCC vectorises each loop; `x < 0 ? 0 : x` (rather than
// max) lets a NaN through, so divergence stays visible downstream.

namespace {
// c ? a : b through bit masks. With its default -ftrapping-math GCC will not if-convert a loop
// holding more than a couple of float compares feeding ?:, and leaves it scalar; the masked form
// has no control flow to convert.
inline float pick(bool c, float a, float b) {
  const int32_t m = -static_cast<int32_t>(c);
  return std::bit_cast<float>((std::bit_cast<int32_t>(a) & m) | (std::bit_cast<int32_t>(b) & ~m));
}
}  // namespace

void relu_forward(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void relu_backward(const float* y, const float* dy, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = dy[i];  // loaded unconditionally: a load inside ?: blocks vectorisation
    dx[i] = y[i] > 0.0f ? g : 0.0f;
  }
}

void relu6_forward(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] < 0.0f ? 0.0f : x[i];
    y[i] = v > 6.0f ? 6.0f : v;
  }
}

void relu6_backward(const float* y, const float* dy, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = y[i], g = dy[i];
    dx[i] = static_cast<bool>((v > 0.0f) & (v < 6.0f)) ? g : 0.0f;
  }
}

void hswish_forward(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float r = pick(v + 3.0f > 6.0f, 6.0f, v + 3.0f);
    // r / 6 first: v * r would overflow for |v| near FLT_MAX although the result is v. Below -3
    // the result is 0 outright (relu6's lower clamp times v would make -inf * 0 = NaN).
    y[i] = pick(v < -3.0f, 0.0f, v * (r * (1.0f / 6.0f)));
  }
}

void hswish_backward(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float mid = v * (1.0f / 3.0f) + 0.5f;  // (2x + 3) / 6, the middle piece
    // A NaN x fails both tests and falls in the middle piece, so it propagates.
    const float d = pick(v < -3.0f, 0.0f, pick(v > 3.0f, 1.0f, mid));
    dx[i] = dy[i] * d;
  }
}

}  // namespace tern::cpu
