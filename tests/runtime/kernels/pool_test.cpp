#include "runtime/kernels/cpu/pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/error.h"
#include "runtime/kernels/reference/pool.h"
#include "runtime/rng.h"

namespace tern {
namespace {

using cpu::Pool2dGeometry;

std::vector<float> random_vector(size_t n, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(lo, hi);
  return v;
}

size_t in_size(const Pool2dGeometry& g) { return static_cast<size_t>(g.N * g.C * g.H * g.W); }
size_t out_size(const Pool2dGeometry& g) { return static_cast<size_t>(g.N * g.C * g.out_h() * g.out_w()); }

// Awkward geometries: size-1 planes, odd and prime sizes (the 2x2 fast path with a dropped last
// row/column), padding, stride 1 and 3, overlapping 3x3 stride-2 windows, windows wider than the
// input once padded.
class PoolMatchesReference : public ::testing::TestWithParam<Pool2dGeometry> {};

TEST_P(PoolMatchesReference, MaxForwardPicksTheSameValueAndIndex) {
  const Pool2dGeometry g = GetParam();
  Rng rng(g.H * 131 + g.W * 7 + g.kernel);
  const auto x = random_vector(in_size(g), rng);
  std::vector<float> y(out_size(g)), y_ref(out_size(g));
  std::vector<int32_t> a(out_size(g)), a_ref(out_size(g));
  cpu::max_pool2d_forward(g, x.data(), y.data(), a.data());
  ref::max_pool2d_forward(g, x.data(), y_ref.data(), a_ref.data());
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_EQ(y[i], y_ref[i]) << i;
    ASSERT_EQ(a[i], a_ref[i]) << i;
  }
}

TEST_P(PoolMatchesReference, MaxForwardBreaksTiesLikeTheReference) {
  const Pool2dGeometry g = GetParam();
  Rng rng(g.H + g.W + g.padding);
  std::vector<float> x(in_size(g));
  for (float& v : x) v = static_cast<float>(rng.below(3));  // many equal values per window
  std::vector<float> y(out_size(g)), y_ref(out_size(g));
  std::vector<int32_t> a(out_size(g)), a_ref(out_size(g));
  cpu::max_pool2d_forward(g, x.data(), y.data(), a.data());
  ref::max_pool2d_forward(g, x.data(), y_ref.data(), a_ref.data());
  EXPECT_EQ(y, y_ref);
  EXPECT_EQ(a, a_ref);
}

TEST_P(PoolMatchesReference, MaxBackward) {
  const Pool2dGeometry g = GetParam();
  Rng rng(g.N * 17 + g.H * 5 + g.stride);
  const auto x = random_vector(in_size(g), rng);
  const auto dy = random_vector(out_size(g), rng);
  std::vector<float> y(out_size(g));
  std::vector<int32_t> a(out_size(g));
  ref::max_pool2d_forward(g, x.data(), y.data(), a.data());
  std::vector<float> dx(in_size(g), 123.0f), dx_ref(in_size(g));  // dx starts dirty: overwritten
  cpu::max_pool2d_backward(g, dy.data(), a.data(), dx.data());
  ref::max_pool2d_backward(g, dy.data(), a.data(), dx_ref.data());
  for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx[i], dx_ref[i], 1e-5f) << i;
}

TEST_P(PoolMatchesReference, AvgForward) {
  const Pool2dGeometry g = GetParam();
  Rng rng(g.W * 3 + g.kernel * 11);
  const auto x = random_vector(in_size(g), rng);
  std::vector<float> y(out_size(g)), y_ref(out_size(g));
  cpu::avg_pool2d_forward(g, x.data(), y.data());
  ref::avg_pool2d_forward(g, x.data(), y_ref.data());
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y_ref[i], 1e-6f) << i;
}

TEST_P(PoolMatchesReference, AvgBackward) {
  const Pool2dGeometry g = GetParam();
  Rng rng(g.C * 19 + g.kernel);
  const auto dy = random_vector(out_size(g), rng);
  std::vector<float> dx(in_size(g), -7.0f), dx_ref(in_size(g));
  cpu::avg_pool2d_backward(g, dy.data(), dx.data());
  ref::avg_pool2d_backward(g, dy.data(), dx_ref.data());
  for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx[i], dx_ref[i], 1e-6f) << i;
}

INSTANTIATE_TEST_SUITE_P(
    Geometries, PoolMatchesReference,
    ::testing::Values(Pool2dGeometry{1, 1, 1, 1, 1, 1, 0}, Pool2dGeometry{1, 1, 2, 2, 2, 2, 0},
                      Pool2dGeometry{2, 3, 7, 7, 2, 2, 0}, Pool2dGeometry{1, 2, 13, 6, 2, 2, 0},
                      Pool2dGeometry{2, 5, 28, 28, 2, 2, 0}, Pool2dGeometry{2, 3, 7, 5, 3, 2, 1},
                      Pool2dGeometry{1, 1, 5, 5, 3, 2, 0}, Pool2dGeometry{2, 2, 13, 11, 3, 1, 1},
                      Pool2dGeometry{1, 3, 6, 6, 2, 1, 1}, Pool2dGeometry{3, 1, 11, 7, 5, 3, 2},
                      Pool2dGeometry{1, 1, 2, 2, 3, 1, 1}, Pool2dGeometry{1, 2, 1, 1, 3, 1, 1},
                      Pool2dGeometry{1, 1, 9, 1, 3, 2, 1}, Pool2dGeometry{2, 1, 4, 9, 2, 2, 1}),
    [](const ::testing::TestParamInfo<Pool2dGeometry>& info) {
      const Pool2dGeometry& g = info.param;
      return detail::concat("N", g.N, "C", g.C, "H", g.H, "W", g.W, "k", g.kernel, "s", g.stride, "p",
                            g.padding);
    });

TEST(MaxPoolKernel, PaddingNeverWins) {
  // All inputs negative: a zero from padding would beat every real element if it took part.
  const Pool2dGeometry g{1, 1, 3, 3, 3, 2, 1};
  std::vector<float> x(9);
  for (size_t i = 0; i < x.size(); ++i) x[i] = -1.0f - static_cast<float>(i);
  std::vector<float> y(out_size(g));
  std::vector<int32_t> a(out_size(g));
  cpu::max_pool2d_forward(g, x.data(), y.data(), a.data());
  // Windows (rows x cols): [-1,2)x[-1,2), [-1,2)x[1,4), [1,4)x[-1,2), [1,4)x[1,4).
  EXPECT_EQ(y, (std::vector<float>{-1, -2, -4, -5}));
  EXPECT_EQ(a, (std::vector<int32_t>{0, 1, 3, 4}));
}

TEST(MaxPoolKernel, TiesGoToTheFirstElementInRowMajorOrder) {
  const Pool2dGeometry g{1, 1, 4, 4, 2, 2, 0};
  const std::vector<float> x(16, 5.0f);
  std::vector<float> y(4);
  std::vector<int32_t> a(4);
  cpu::max_pool2d_forward(g, x.data(), y.data(), a.data());
  EXPECT_EQ(a, (std::vector<int32_t>{0, 2, 8, 10}));
}

TEST(MaxPoolKernel, NaNWinsItsWindow) {
  const Pool2dGeometry g{1, 1, 2, 4, 2, 2, 0};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x{1, nan, 3, 4, 5, 6, 7, 8};
  std::vector<float> y(2);
  std::vector<int32_t> a(2);
  cpu::max_pool2d_forward(g, x.data(), y.data(), a.data());
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(a[0], 1);
  EXPECT_EQ(y[1], 8.0f);
}

TEST(MaxPoolKernel, BackwardRoutesGradientToTheArgmax) {
  const Pool2dGeometry g{1, 1, 2, 2, 2, 2, 0};
  const std::vector<float> x{0.1f, 0.9f, -3.0f, 0.5f};
  float y;
  int32_t a;
  cpu::max_pool2d_forward(g, x.data(), &y, &a);
  const float dy = 2.5f;
  std::vector<float> dx(4, 99.0f);
  cpu::max_pool2d_backward(g, &dy, &a, dx.data());
  EXPECT_EQ(dx, (std::vector<float>{0, 2.5f, 0, 0}));
}

TEST(MaxPoolKernel, BackwardAccumulatesWhereOverlappingWindowsShareAWinner) {
  // 3x3 stride 1 padding 1 on a 3x3 plane whose centre is largest: all 9 windows pick it.
  const Pool2dGeometry g{1, 1, 3, 3, 3, 1, 1};
  std::vector<float> x(9, 0.0f);
  x[4] = 10.0f;
  std::vector<float> y(9);
  std::vector<int32_t> a(9);
  cpu::max_pool2d_forward(g, x.data(), y.data(), a.data());
  ASSERT_EQ(a, std::vector<int32_t>(9, 4));
  std::vector<float> dy(9);
  for (size_t i = 0; i < 9; ++i) dy[i] = static_cast<float>(i + 1);
  std::vector<float> dx(9, 1.0f);
  cpu::max_pool2d_backward(g, dy.data(), a.data(), dx.data());
  std::vector<float> expected(9, 0.0f);
  expected[4] = 45.0f;
  EXPECT_EQ(dx, expected);
}

TEST(AvgPoolKernel, PaddingIsExcludedFromTheCount) {
  // 2x2 ones, 3x3 window, padding 1, stride 1: each window holds 4 real ones (and 5 pads); the
  // mean of the real elements is 1 (counting the pads would give 4/9).
  const Pool2dGeometry g{1, 1, 2, 2, 3, 1, 1};
  const std::vector<float> x(4, 1.0f);
  std::vector<float> y(4);
  cpu::avg_pool2d_forward(g, x.data(), y.data());
  EXPECT_EQ(y, std::vector<float>(4, 1.0f));
}

TEST(AvgPoolKernel, BackwardSpreadsEachGradientOverItsRealElements) {
  const Pool2dGeometry g{1, 1, 3, 3, 2, 2, 1};  // windows hold 1, 2, 2 and 4 real elements
  const std::vector<float> dy{1.0f, 2.0f, 4.0f, 8.0f};
  std::vector<float> dx(9, 5.0f);
  cpu::avg_pool2d_backward(g, dy.data(), dx.data());
  EXPECT_EQ(dx, (std::vector<float>{1, 1, 1, 2, 2, 2, 2, 2, 2}));
}

TEST(AvgPoolKernel, OddTrailingRowAndColumnGetZeroGradientInTheTwoByTwoPath) {
  const Pool2dGeometry g{1, 1, 3, 3, 2, 2, 0};
  const float dy = 4.0f;
  std::vector<float> dx(9, 7.0f);
  cpu::avg_pool2d_backward(g, &dy, dx.data());
  EXPECT_EQ(dx, (std::vector<float>{1, 1, 0, 1, 1, 0, 0, 0, 0}));
}

struct GlobalCase {
  int64_t planes, hw;
};

class GlobalAvgPoolMatchesReference : public ::testing::TestWithParam<GlobalCase> {};

TEST_P(GlobalAvgPoolMatchesReference, ForwardAndBackward) {
  const GlobalCase c = GetParam();
  Rng rng(c.planes * 31 + c.hw);
  const auto x = random_vector(static_cast<size_t>(c.planes * c.hw), rng, -2.0f, 3.0f);
  const auto dy = random_vector(static_cast<size_t>(c.planes), rng);
  std::vector<float> y(static_cast<size_t>(c.planes)), y_ref(y.size());
  cpu::global_avg_pool2d_forward(c.planes, c.hw, x.data(), y.data());
  ref::global_avg_pool2d_forward(c.planes, c.hw, x.data(), y_ref.data());
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y_ref[i], 1e-5f) << i;
  std::vector<float> dx(x.size(), 9.0f), dx_ref(x.size());
  cpu::global_avg_pool2d_backward(c.planes, c.hw, dy.data(), dx.data());
  ref::global_avg_pool2d_backward(c.planes, c.hw, dy.data(), dx_ref.data());
  for (size_t i = 0; i < dx.size(); ++i) ASSERT_FLOAT_EQ(dx[i], dx_ref[i]) << i;
}

INSTANTIATE_TEST_SUITE_P(Shapes, GlobalAvgPoolMatchesReference,
                         ::testing::Values(GlobalCase{1, 1}, GlobalCase{3, 1}, GlobalCase{1, 49},
                                           GlobalCase{13, 7}, GlobalCase{64 * 3, 49}, GlobalCase{5, 1031}),
                         [](const ::testing::TestParamInfo<GlobalCase>& info) {
                           return detail::concat("planes", info.param.planes, "hw", info.param.hw);
                         });

}  // namespace
}  // namespace tern
