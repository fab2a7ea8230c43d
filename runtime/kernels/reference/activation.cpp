#include "runtime/kernels/reference/activation.h"

#include <cmath>

namespace tern::ref {

void relu_forward(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] > 0 || std::isnan(x[i]))  // NaN passes through, as in the fast kernels
      y[i] = x[i];
    else
      y[i] = 0;
  }
}

void relu_backward(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] > 0)
      dx[i] = dy[i];
    else
      dx[i] = 0;
  }
}

void relu6_forward(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] <= 0)
      y[i] = 0;
    else if (x[i] >= 6)
      y[i] = 6;
    else
      y[i] = x[i];
  }
}

void relu6_backward(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] > 0 && y[i] < 6)
      dx[i] = dy[i];
    else
      dx[i] = 0;
  }
}

void hswish_forward(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    if (v <= -3)
      y[i] = 0;
    else if (v >= 3)
      y[i] = x[i];
    else
      y[i] = static_cast<float>(v * (v + 3) / 6);
  }
}

void hswish_backward(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    double d;
    if (v < -3)
      d = 0;
    else if (v > 3)
      d = 1;
    else
      d = (2 * v + 3) / 6;
    dx[i] = static_cast<float>(dy[i] * d);
  }
}

}  // namespace tern::ref
