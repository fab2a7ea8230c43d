#include "runtime/kernels/cpu/sparse_update.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/kernels/cpu/mix32.h"
#include "runtime/kernels/reference/sparse_update.h"
#include "runtime/rng.h"

namespace tern {
namespace {

std::vector<float> random_values(Rng& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal();
  return v;
}

// k indices into [0, n); with `distinct` false they repeat (drawn with replacement from a range
// smaller than k, so repeats are certain when k > 1).
std::vector<int32_t> random_indices(Rng& rng, int64_t n, int64_t k, bool distinct) {
  std::vector<int32_t> idx;
  if (distinct) {
    std::vector<int32_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    rng.shuffle(all);
    idx.assign(all.begin(), all.begin() + k);
  } else {
    const uint32_t range = static_cast<uint32_t>(std::max<int64_t>(1, std::min(n, k / 2 + 1)));
    for (int64_t i = 0; i < k; ++i) idx.push_back(static_cast<int32_t>(rng.below(range)));
  }
  return idx;
}

struct Case {
  int64_t n, k;
  bool distinct;
};

const Case kCases[] = {{10, 0, false},   {10, 1, false},          {10, 1, true},          {100, 37, false},
                       {100, 100, true}, {1 << 20, 50000, false}, {1 << 20, 200000, true}};

TEST(SparseUpdateKernel, AxpyMatchesReferenceIncludingRepeatedIndices) {
  Rng rng(1);
  for (const Case& c : kCases) {
    const std::vector<float> y0 = random_values(rng, c.n), x = random_values(rng, c.k);
    const std::vector<int32_t> idx = random_indices(rng, c.n, c.k, c.distinct);
    std::vector<float> y = y0, y_ref = y0;
    cpu::sparse_axpy(y.data(), idx.data(), x.data(), c.k, -0.75f);
    ref::sparse_axpy(y_ref.data(), idx.data(), x.data(), c.k, -0.75f);
    // Same additions in the same order: equal up to a possible fused multiply-add.
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], y_ref[i], 1e-5f * (1 + std::fabs(y_ref[i]))) << c.n << " " << i;
  }
}

TEST(SparseUpdateKernel, AxpyAddsEveryRepeatOfAnIndex) {
  std::vector<float> y = {1, 2, 3};
  const std::vector<int32_t> idx = {2, 0, 2, 2};
  const std::vector<float> x = {1, 10, 100, 1000};
  cpu::sparse_axpy(y.data(), idx.data(), x.data(), 4, 2.0f);
  EXPECT_EQ(y, (std::vector<float>{21, 2, 3 + 2 * 1101}));
}

TEST(SparseUpdateKernel, GatherAndZeroMatchReference) {
  Rng rng(2);
  for (const Case& c : kCases) {
    const std::vector<float> y0 = random_values(rng, c.n);
    const std::vector<int32_t> idx = random_indices(rng, c.n, c.k, c.distinct);
    std::vector<float> out(static_cast<size_t>(c.k), -1.0f), out_ref(out);
    cpu::sparse_gather(y0.data(), idx.data(), c.k, out.data());
    ref::sparse_gather(y0.data(), idx.data(), c.k, out_ref.data());
    ASSERT_EQ(out, out_ref) << c.n << " " << c.k;
    std::vector<float> y = y0, y_ref = y0;
    cpu::sparse_zero(y.data(), idx.data(), c.k);
    ref::sparse_zero(y_ref.data(), idx.data(), c.k);
    ASSERT_EQ(y, y_ref) << c.n << " " << c.k;
    int64_t zeros = 0;
    for (float v : y) zeros += v == 0.0f;
    if (c.distinct) {
      EXPECT_EQ(zeros, c.k) << "exactly the chosen entries are zeroed";
    }
  }
}

TEST(SparseUpdateKernel, RowsSgdMatchesReferenceAndLeavesOtherRowsAlone) {
  Rng rng(3);
  struct RowsCase {
    int64_t rows, cols, k;
  };
  for (const RowsCase& c :
       {RowsCase{5, 3, 0}, RowsCase{5, 3, 1}, RowsCase{64, 17, 40}, RowsCase{4096, 256, 1500}}) {
    const std::vector<float> w0 = random_values(rng, c.rows * c.cols), g = random_values(rng, c.k * c.cols);
    const std::vector<int32_t> rows = random_indices(rng, c.rows, c.k, true);
    std::vector<float> w = w0, w_ref = w0;
    cpu::sparse_rows_sgd(w.data(), c.cols, rows.data(), c.k, g.data(), 0.1f, 0.01f);
    ref::sparse_rows_sgd(w_ref.data(), c.cols, rows.data(), c.k, g.data(), 0.1f, 0.01f);
    std::vector<bool> chosen(static_cast<size_t>(c.rows), false);
    for (int32_t r : rows) chosen[static_cast<size_t>(r)] = true;
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t col = 0; col < c.cols; ++col) {
        const size_t i = static_cast<size_t>(r * c.cols + col);
        ASSERT_NEAR(w[i], w_ref[i], 1e-6f * (1 + std::fabs(w_ref[i]))) << r << " " << col;
        if (!chosen[static_cast<size_t>(r)]) {
          ASSERT_EQ(w[i], w0[i]) << "row " << r << " was not chosen";
        }
      }
    }
  }
}

TEST(SparseUpdateKernel, RowsSgdAppliesWeightDecayAndLearningRate) {
  std::vector<float> w = {1, 2, 3, 4};  // [2, 2]
  const std::vector<int32_t> rows = {1};
  const std::vector<float> g = {10, 20};
  cpu::sparse_rows_sgd(w.data(), 2, rows.data(), 1, g.data(), 0.5f, 0.5f);
  // w -= 0.5 * (g + 0.5 w): 3 - 0.5 * 11.5, 4 - 0.5 * 22.
  EXPECT_EQ(w, (std::vector<float>{1, 2, 3 - 5.75f, 4 - 11.0f}));
}

// Fixed-point weights: the value a (hi, lo) pair holds.
double fixed_value(int8_t hi, const uint8_t* lo) { return hi + (lo != nullptr ? (*lo - 128) / 256.0 : 0.0); }

TEST(SparseUpdateKernel, FixedPointSgdMatchesReference) {
  Rng rng(7);
  for (const bool fraction : {true, false}) {
    for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{97}, int64_t{1000}}) {
      std::vector<int8_t> hi(static_cast<size_t>(n));
      std::vector<uint8_t> lo(static_cast<size_t>(n));
      for (int64_t e = 0; e < n; ++e) {
        hi[static_cast<size_t>(e)] =
            static_cast<int8_t>(std::clamp(std::floor(rng.uniform(-127, 128)), -127.0f, 127.0f));
        lo[static_cast<size_t>(e)] =
            static_cast<uint8_t>(std::clamp(std::floor(rng.uniform(0, 256)), 0.0f, 255.0f));
      }
      // Gradients from tiny (a thousandth of a step) to far past the range, both signs.
      std::vector<float> g = random_values(rng, n);
      for (int64_t e = 0; e < n; ++e)
        g[static_cast<size_t>(e)] *= std::pow(10.0f, static_cast<float>(e % 7) - 3.0f);
      std::vector<int8_t> hi_ref = hi;
      std::vector<uint8_t> lo_ref = lo;
      uint8_t* l = fraction ? lo.data() : nullptr;
      uint8_t* l_ref = fraction ? lo_ref.data() : nullptr;
      cpu::fixed_point_sgd(hi.data(), l, g.data(), n, 0.5f, 1234u, 5);
      ref::fixed_point_sgd(hi_ref.data(), l_ref, g.data(), n, 0.5f, 1234u, 5);
      EXPECT_EQ(hi, hi_ref) << "n " << n << " fraction " << fraction;
      if (fraction) {
        EXPECT_EQ(lo, lo_ref) << "n " << n;
      }
    }
  }
}

TEST(SparseUpdateKernel, FixedPointSgdIsUnbiasedAndKeepsUpdatesFarBelowItsStep) {
  // One weight updated by the same small step under 20000 keys: the mean result is the exact update
  // (within 5 standard errors of the rounding's noise), for updates of 1/1000 and 0.3 of the last bit.
  for (const bool fraction : {true, false}) {
    const double unit = fraction ? 1.0 / 256.0 : 1.0;
    for (const double share : {0.001, 0.3, -0.3, 2.7}) {
      const int trials = 20000;
      const float g = static_cast<float>(-share * unit);  // lr 1: value += share * unit
      const uint8_t lo_start = 128 + 17;
      const double start = fixed_value(3, fraction ? &lo_start : nullptr);
      double sum = 0;
      for (int k = 0; k < trials; ++k) {
        int8_t hi = 3;
        uint8_t lo = lo_start;
        cpu::fixed_point_sgd(&hi, fraction ? &lo : nullptr, &g, 1, 1.0f, cpu::mix32(static_cast<uint32_t>(k)),
                             0);
        sum += fixed_value(hi, fraction ? &lo : nullptr);
      }
      const double mean = sum / trials, expected = start + share * unit;
      const double frac = share - std::floor(share);
      const double stderr_ = unit * std::sqrt(frac * (1 - frac) / trials);
      EXPECT_NEAR(mean, expected, 5 * stderr_ + 1e-12) << "share " << share << " fraction " << fraction;
      EXPECT_NE(mean, start) << "an update of " << share << " of a step must move the mean";
    }
  }
}

TEST(SparseUpdateKernel, FixedPointSgdHoldsTheInt8RangeAndRoundsToNearest) {
  for (const bool fraction : {true, false}) {
    std::vector<int8_t> hi{120, -120, 0, 5};
    std::vector<uint8_t> lo{128, 128, 128, 128};
    const std::vector<float> g{-1e9f, 1e9f, 0.0f, 0.0f};  // far past either end; none
    cpu::fixed_point_sgd(hi.data(), fraction ? lo.data() : nullptr, g.data(), 4, 1.0f, 99u, 0);
    EXPECT_EQ(hi, (std::vector<int8_t>{127, -127, 0, 5}));
    if (fraction) {
      EXPECT_EQ(lo[2], 128);  // a zero update changes nothing, whatever the draw
      EXPECT_EQ(lo[3], 128);
    }
  }
  // hi is round(value): a value of 4.6 (hi 5, lo 128 - 0.4 * 256) stays 5 after an update of +0.05.
  int8_t hi = 5;
  uint8_t lo = static_cast<uint8_t>(128 - 102);
  const float g = -0.05f;
  cpu::fixed_point_sgd(&hi, &lo, &g, 1, 1.0f, 3u, 0);
  EXPECT_EQ(hi, 5);
  EXPECT_NEAR(fixed_value(hi, &lo), 5 - 102 / 256.0 + 0.05, 1.0 / 256);
}

TEST(SparseUpdateKernel, FixedPointSgdInPartsEqualsOneCall) {
  Rng rng(11);
  const int64_t n = 301;
  std::vector<int8_t> hi(static_cast<size_t>(n), 10);
  std::vector<uint8_t> lo(static_cast<size_t>(n), 128);
  const std::vector<float> g = random_values(rng, n);
  std::vector<int8_t> hi_parts = hi;
  std::vector<uint8_t> lo_parts = lo;
  cpu::fixed_point_sgd(hi.data(), lo.data(), g.data(), n, 0.01f, 42u, 0);
  for (int64_t e0 = 0; e0 < n; e0 += 13) {
    const int64_t m = std::min<int64_t>(13, n - e0);
    cpu::fixed_point_sgd(hi_parts.data() + e0, lo_parts.data() + e0, g.data() + e0, m, 0.01f, 42u, e0);
  }
  EXPECT_EQ(hi, hi_parts);
  EXPECT_EQ(lo, lo_parts);
}

}  // namespace
}  // namespace tern
