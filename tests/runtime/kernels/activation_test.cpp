#include "runtime/kernels/cpu/activation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/kernels/reference/activation.h"
#include "runtime/rng.h"

namespace tern {
namespace {

// Every kink, both signs of zero, values straddling the kinks by one ulp, large magnitudes and
// infinities, then random values over the interesting range; n = 1031 (prime) leaves a vector
// remainder.
std::vector<float> awkward_inputs() {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v{0.0f,  -0.0f,  -3.0f, 3.0f, 6.0f,   -6.0f,   1e30f, -1e30f,
                       3e38f, -3e38f, inf,   -inf, 1e-30f, -1e-30f, 0.5f,  -0.5f};
  for (float k : {0.0f, -3.0f, 3.0f, 6.0f}) {
    v.push_back(std::nextafter(k, -inf));
    v.push_back(std::nextafter(k, inf));
  }
  Rng rng(7);
  while (v.size() < 1031) v.push_back(rng.uniform(-10.0f, 10.0f));
  return v;
}

using Forward = void (*)(const float*, float*, int64_t);
using Backward = void (*)(const float*, const float*, float*, int64_t);

struct ActivationCase {
  const char* name;
  Forward fwd, fwd_ref;
  Backward bwd, bwd_ref;
  bool backward_takes_output;  // relu/relu6 save y; hswish saves x
};

class ActivationMatchesReference : public ::testing::TestWithParam<ActivationCase> {};

TEST_P(ActivationMatchesReference, ForwardAndBackwardOnAwkwardValues) {
  const ActivationCase c = GetParam();
  const auto x = awkward_inputs();
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size()), y_ref(x.size());
  c.fwd(x.data(), y.data(), n);
  c.fwd_ref(x.data(), y_ref.data(), n);
  for (size_t i = 0; i < x.size(); ++i) {
    // h-swish is computed in float against a double reference: a few ulps, measured against
    // the operands' magnitude (x + 3 and x / 3 + 1/2 cancel near the roots).
    const float tol = 4 * std::numeric_limits<float>::epsilon() * (std::fabs(y_ref[i]) + 1);
    if (std::isinf(y_ref[i]))
      ASSERT_EQ(y[i], y_ref[i]) << c.name << " x=" << x[i];
    else
      ASSERT_NEAR(y[i], y_ref[i], tol) << c.name << " x=" << x[i];
  }
  Rng rng(3);
  std::vector<float> dy(x.size());
  for (float& g : dy) g = rng.uniform(-2.0f, 2.0f);
  const float* saved = c.backward_takes_output ? y_ref.data() : x.data();
  std::vector<float> dx(x.size()), dx_ref(x.size());
  c.bwd(saved, dy.data(), dx.data(), n);
  c.bwd_ref(saved, dy.data(), dx_ref.data(), n);
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_NEAR(dx[i], dx_ref[i],
                4 * std::numeric_limits<float>::epsilon() * (std::fabs(dx_ref[i]) + std::fabs(dy[i])))
        << c.name << " x=" << x[i];
}

TEST_P(ActivationMatchesReference, RunsInPlace) {
  const ActivationCase c = GetParam();
  const auto x = awkward_inputs();
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size());
  c.fwd(x.data(), y.data(), n);
  std::vector<float> inplace = x;
  c.fwd(inplace.data(), inplace.data(), n);
  EXPECT_EQ(inplace, y);
  std::vector<float> dy(x.size(), 1.5f), dx(x.size());
  const float* saved = c.backward_takes_output ? y.data() : x.data();
  c.bwd(saved, dy.data(), dx.data(), n);
  c.bwd(saved, dy.data(), dy.data(), n);
  EXPECT_EQ(dy, dx);
}

TEST_P(ActivationMatchesReference, NaNPropagates) {
  const ActivationCase c = GetParam();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float y = 0;
  c.fwd(&nan, &y, 1);
  EXPECT_TRUE(std::isnan(y)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(All, ActivationMatchesReference,
                         ::testing::Values(ActivationCase{"relu", cpu::relu_forward, ref::relu_forward,
                                                          cpu::relu_backward, ref::relu_backward, true},
                                           ActivationCase{"relu6", cpu::relu6_forward, ref::relu6_forward,
                                                          cpu::relu6_backward, ref::relu6_backward, true},
                                           ActivationCase{"hswish", cpu::hswish_forward, ref::hswish_forward,
                                                          cpu::hswish_backward, ref::hswish_backward, false}),
                         [](const ::testing::TestParamInfo<ActivationCase>& info) {
                           return std::string(info.param.name);
                         });

// Derivatives at the kinks, as documented in activation.h.
float derivative(Forward fwd, Backward bwd, bool takes_output, float x) {
  float y = 0, dy = 1, dx = 0;
  fwd(&x, &y, 1);
  bwd(takes_output ? &y : &x, &dy, &dx, 1);
  return dx;
}

TEST(ActivationKernel, ReluDerivativeAtZeroIsZero) {
  EXPECT_EQ(derivative(cpu::relu_forward, cpu::relu_backward, true, 0.0f), 0.0f);
  EXPECT_EQ(derivative(cpu::relu_forward, cpu::relu_backward, true, 1e-30f), 1.0f);
  EXPECT_EQ(derivative(cpu::relu_forward, cpu::relu_backward, true, -1e-30f), 0.0f);
}

TEST(ActivationKernel, Relu6DerivativeIsZeroAtBothKinks) {
  EXPECT_EQ(derivative(cpu::relu6_forward, cpu::relu6_backward, true, 0.0f), 0.0f);
  EXPECT_EQ(derivative(cpu::relu6_forward, cpu::relu6_backward, true, 6.0f), 0.0f);
  EXPECT_EQ(derivative(cpu::relu6_forward, cpu::relu6_backward, true, 5.999f), 1.0f);
  EXPECT_EQ(derivative(cpu::relu6_forward, cpu::relu6_backward, true, 7.0f), 0.0f);
}

TEST(ActivationKernel, HswishDerivativeUsesTheMiddlePieceAtTheKinks) {
  auto d = [](float x) { return derivative(cpu::hswish_forward, cpu::hswish_backward, false, x); };
  EXPECT_FLOAT_EQ(d(-3.0f), -0.5f);
  EXPECT_FLOAT_EQ(d(3.0f), 1.5f);
  EXPECT_EQ(d(-3.0001f), 0.0f);
  EXPECT_EQ(d(3.0001f), 1.0f);
  EXPECT_FLOAT_EQ(d(0.0f), 0.5f);
  EXPECT_EQ(d(std::numeric_limits<float>::infinity()), 1.0f);
  EXPECT_EQ(d(-std::numeric_limits<float>::infinity()), 0.0f);
}

TEST(ActivationKernel, HswishValues) {
  const std::vector<float> x{-4.0f, -3.0f, -1.5f, 0.0f, 1.5f, 3.0f, 4.0f};
  std::vector<float> y(x.size());
  cpu::hswish_forward(x.data(), y.data(), static_cast<int64_t>(x.size()));
  const std::vector<float> expected{0.0f, 0.0f, -0.375f, 0.0f, 1.125f, 3.0f, 4.0f};
  for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(y[i], expected[i]) << x[i];
}

}  // namespace
}  // namespace tern
