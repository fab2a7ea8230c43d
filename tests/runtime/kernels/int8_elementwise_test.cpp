#include "runtime/kernels/cpu/int8_elementwise.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "runtime/kernels/reference/int8_elementwise.h"
#include "runtime/rng.h"

namespace tern {
namespace {

std::vector<int8_t> random_int8(Rng& rng, int64_t n) {
  std::vector<int8_t> v(static_cast<size_t>(n));
  for (int8_t& x : v) x = static_cast<int8_t>(static_cast<int>(rng.below(256)) - 128);
  return v;
}

int max_diff(const std::vector<int8_t>& a, const std::vector<int8_t>& b) {
  int d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(int{a[i]} - int{b[i]}));
  return d;
}

TEST(Int8Add, MatchesTheReferenceAndWorksInPlace) {
  Rng rng(31);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t n = 1 + rng.below(5000);
    const auto a = random_int8(rng, n), b = random_int8(rng, n);
    cpu::Int8AddParams p;
    p.a_zero_point = static_cast<int32_t>(rng.below(41)) - 20;
    p.b_zero_point = static_cast<int32_t>(rng.below(41)) - 20;
    p.y_zero_point = static_cast<int32_t>(rng.below(41)) - 20;
    p.a_mult = 0.2f + rng.uniform();
    p.b_mult = 0.2f + rng.uniform();
    if (trial % 2) p.act_min = p.y_zero_point;  // fused ReLU after the add (ResNet style)
    std::vector<int8_t> y(static_cast<size_t>(n)), y_ref(y.size());
    cpu::int8_add(a.data(), b.data(), n, p, y.data());
    ref::int8_add(a.data(), b.data(), n, p, y_ref.data());
    // f32 against double: they differ only where the sum sits within f32 rounding of a tie.
    EXPECT_LE(max_diff(y, y_ref), 1);
    int64_t differ = 0;
    for (int64_t i = 0; i < n; ++i) differ += y[static_cast<size_t>(i)] != y_ref[static_cast<size_t>(i)];
    EXPECT_LE(differ, n / 1000 + 1);
    auto in_place = a;
    cpu::int8_add(in_place.data(), b.data(), n, p, in_place.data());
    EXPECT_EQ(in_place, y);
  }
}

TEST(Int8Add, IsTheRealSumWithinHalfAStep) {
  // s_a = 0.05, s_b = 0.03, s_y = 0.07: y * s_y ~ a * s_a + b * s_b.
  const float sa = 0.05f, sb = 0.03f, sy = 0.07f;
  cpu::Int8AddParams p{
      .a_zero_point = 3, .b_zero_point = -5, .y_zero_point = 1, .a_mult = sa / sy, .b_mult = sb / sy};
  for (int a = -128; a < 128; a += 7)
    for (int b = -128; b < 128; b += 5) {
      const int8_t av = static_cast<int8_t>(a), bv = static_cast<int8_t>(b);
      int8_t y;
      cpu::int8_add(&av, &bv, 1, p, &y);
      const float real = sa * static_cast<float>(a - 3) + sb * static_cast<float>(b + 5);
      if (y == -128 || y == 127) continue;
      ASSERT_LE(std::fabs(sy * static_cast<float>(y - 1) - real), 0.5f * sy + 1e-6f) << a << " " << b;
    }
}

TEST(Int8GlobalAvgPool, MatchesTheReferenceAndWorksInPlace) {
  Rng rng(32);
  for (auto [pixels, c] : {std::pair{49, 16}, std::pair{1, 8}, std::pair{4, 3}, std::pair{196, 40}}) {
    const auto x = random_int8(rng, int64_t{pixels} * c);
    const int32_t zp = static_cast<int32_t>(rng.below(101)) - 50;
    std::vector<int8_t> y(static_cast<size_t>(c)), y_ref(y.size());
    cpu::int8_global_avg_pool(x.data(), pixels, c, zp, y.data());
    ref::int8_global_avg_pool(x.data(), pixels, c, zp, y_ref.data());
    EXPECT_EQ(y, y_ref) << pixels << "x" << c;
    auto in_place = x;
    cpu::int8_global_avg_pool(in_place.data(), pixels, c, zp, in_place.data());
    EXPECT_EQ(std::vector<int8_t>(in_place.begin(), in_place.begin() + c), y);
  }
}

TEST(Int8GlobalAvgPool, RoundsHalfAwayFromZero) {
  // Two pixels of one channel, zero point 10: means 0.5 and -0.5 steps from the zero point.
  const int8_t up[2] = {10, 11}, down[2] = {10, 9};
  int8_t y;
  cpu::int8_global_avg_pool(up, 2, 1, 10, &y);
  EXPECT_EQ(y, 11);
  cpu::int8_global_avg_pool(down, 2, 1, 10, &y);
  EXPECT_EQ(y, 9);
}

TEST(Int8MaxPool, MatchesTheReferenceWithPaddingAndPartialWindows) {
  Rng rng(33);
  const cpu::Int8PoolShape shapes[] = {
      {28, 28, 32, 2, 2, 0}, {7, 7, 5, 3, 2, 1}, {5, 6, 3, 2, 2, 0}, {9, 9, 4, 3, 1, 1}};
  for (const cpu::Int8PoolShape& s : shapes) {
    const auto x = random_int8(rng, int64_t{s.h} * s.w * s.c);
    std::vector<int8_t> y(static_cast<size_t>(int64_t{s.out_h()} * s.out_w() * s.c)), y_ref(y.size());
    cpu::int8_max_pool2d(s, x.data(), y.data());
    ref::int8_max_pool2d(s, x.data(), y_ref.data());
    EXPECT_EQ(y, y_ref) << s.h << "x" << s.w << " k" << s.kernel;
  }
}

}  // namespace
}  // namespace tern
