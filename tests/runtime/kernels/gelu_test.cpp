#include "runtime/kernels/cpu/gelu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/kernels/reference/gelu.h"
#include "runtime/rng.h"

namespace tern {
namespace {

// Zero, both signs, large magnitudes (where GELU is x or 0), then random values over the range
// where its curve bends; n = 1031 (prime) leaves a vector remainder.
std::vector<float> inputs() {
  std::vector<float> v{0.0f,   -0.0f, 1.0f,  -1.0f, 3.0f,   -3.0f, 10.0f,
                       -10.0f, 1e3f,  -1e3f, 1e30f, -1e30f, 1e-30f};
  Rng rng(5);
  while (v.size() < 1031) v.push_back(rng.uniform(-6.0f, 6.0f));
  return v;
}

TEST(GeluKernel, ForwardAndBackwardMatchTheReference) {
  const auto x = inputs();
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size()), y_ref(x.size()), dy(x.size()), dx(x.size()), dx_ref(x.size());
  Rng rng(6);
  for (float& g : dy) g = rng.uniform(-2.0f, 2.0f);
  cpu::gelu_forward(x.data(), y.data(), n);
  ref::gelu_forward(x.data(), y_ref.data(), n);
  cpu::gelu_backward(x.data(), dy.data(), dx.data(), n);
  ref::gelu_backward(x.data(), dy.data(), dx_ref.data(), n);
  // f32 tanh against double: a few ulps relative to the operands (x and 1 + tanh).
  const float eps = std::numeric_limits<float>::epsilon();
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_NEAR(y[i], y_ref[i], 8 * eps * (std::fabs(x[i]) + 1)) << "x=" << x[i];
    ASSERT_NEAR(dx[i], dx_ref[i], 16 * eps * (std::fabs(dy[i]) + 1)) << "x=" << x[i];
    ASSERT_TRUE(std::isfinite(dx[i])) << "x=" << x[i];
  }
}

TEST(GeluKernel, TakesGpt2sTanhApproximationValues) {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) at x = 1, -1, 2 (computed in double).
  const std::vector<float> x{1.0f, -1.0f, 2.0f, 0.0f};
  std::vector<float> y(4);
  cpu::gelu_forward(x.data(), y.data(), 4);
  EXPECT_NEAR(y[0], 0.8411919906, 1e-6);
  EXPECT_NEAR(y[1], -0.1588080094, 1e-6);
  EXPECT_NEAR(y[2], 1.9545976940, 1e-6);
  EXPECT_EQ(y[3], 0.0f);
}

TEST(GeluKernel, BackwardIsTheSlopeOfTheForward) {
  // Central differences of the double reference at h = 1e-3: error O(h^2 |f'''|) < 1e-5.
  std::vector<float> x;
  for (float v = -5.0f; v <= 5.0f; v += 0.37f) x.push_back(v);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> ones(x.size(), 1.0f), dx(x.size());
  cpu::gelu_backward(x.data(), ones.data(), dx.data(), n);
  for (size_t i = 0; i < x.size(); ++i) {
    const double h = 1e-3, v = x[i];
    auto f = [](double t) {
      return 0.5 * t * (1 + std::tanh(std::sqrt(2 / 3.14159265358979323846) * (t + 0.044715 * t * t * t)));
    };
    EXPECT_NEAR(dx[i], (f(v + h) - f(v - h)) / (2 * h), 1e-5) << "x=" << v;
  }
}

TEST(GeluKernel, RunsInPlace) {
  const auto x = inputs();
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size()), inplace = x;
  cpu::gelu_forward(x.data(), y.data(), n);
  cpu::gelu_forward(inplace.data(), inplace.data(), n);
  EXPECT_EQ(inplace, y);
  std::vector<float> dy(x.size(), 0.5f), dx(x.size());
  cpu::gelu_backward(x.data(), dy.data(), dx.data(), n);
  cpu::gelu_backward(x.data(), dy.data(), dy.data(), n);
  EXPECT_EQ(dy, dx);
}

}  // namespace
}  // namespace tern
