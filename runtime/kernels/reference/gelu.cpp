#include "runtime/kernels/reference/gelu.h"

#include <cmath>
#include <numbers>

namespace tern::ref {

namespace {
double inner(double x) { return std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x); }
}  // namespace

void gelu_forward(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    y[i] = static_cast<float>(0.5 * v * (1.0 + std::tanh(inner(v))));
  }
}

void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double u = inner(v);
    const double sech = 1.0 / std::cosh(u);
    const double du = std::sqrt(2.0 / std::numbers::pi) * (1.0 + 3.0 * 0.044715 * v * v);
    dx[i] = static_cast<float>(dy[i] * (0.5 * (1.0 + std::tanh(u)) + 0.5 * v * sech * sech * du));
  }
}

}  // namespace tern::ref
