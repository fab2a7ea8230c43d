#include "runtime/kernels/cpu/dropout.h"

#include <gtest/gtest.h>

#include <vector>

#include "runtime/kernels/reference/dropout.h"
#include "runtime/rng.h"

namespace tern {
namespace {

class DropoutMaskMatchesReference : public ::testing::TestWithParam<float> {};

TEST_P(DropoutMaskMatchesReference, SameMaskAndSameStreamPositionFromTheSameSeed) {
  const float p = GetParam();
  for (int64_t n : {1, 7, 1031}) {
    Rng rng(42), rng_ref(42);
    std::vector<float> mask(static_cast<size_t>(n)), mask_ref(mask.size());
    cpu::dropout_mask(rng, p, mask.data(), n);
    ref::dropout_mask(rng_ref, p, mask_ref.data(), n);
    for (size_t i = 0; i < mask.size(); ++i) ASSERT_FLOAT_EQ(mask[i], mask_ref[i]) << p << " " << i;
    EXPECT_EQ(rng.state(), rng_ref.state()) << "both consume exactly n draws";
  }
}

TEST_P(DropoutMaskMatchesReference, MaskHoldsOnlyZeroOrTheScaleAndAveragesToOne) {
  const float p = GetParam();
  const int64_t n = 200000;
  Rng rng(9);
  std::vector<float> mask(static_cast<size_t>(n));
  cpu::dropout_mask(rng, p, mask.data(), n);
  const float scale = 1.0f / (1.0f - p);
  double sum = 0;
  int64_t dropped = 0;
  for (float m : mask) {
    ASSERT_TRUE(m == 0.0f || m == scale) << m;
    sum += m;
    dropped += m == 0.0f;
  }
  // Standard deviation of the mean: scale * sqrt(p (1 - p) / n) <= 0.0023 for p <= 0.7; these
  // bounds are ~5 sigma (and the draw is deterministic, so the test cannot flake).
  EXPECT_NEAR(sum / n, 1.0, 0.012) << p;
  EXPECT_NEAR(static_cast<double>(dropped) / n, p, 0.006) << p;
}

INSTANTIATE_TEST_SUITE_P(Probabilities, DropoutMaskMatchesReference,
                         ::testing::Values(0.0f, 0.1f, 0.3f, 0.5f, 0.7f));

TEST(DropoutKernel, ZeroProbabilityKeepsEverythingUnscaled) {
  Rng rng(1);
  std::vector<float> mask(100);
  cpu::dropout_mask(rng, 0.0f, mask.data(), 100);
  EXPECT_EQ(mask, std::vector<float>(100, 1.0f));
}

TEST(DropoutKernel, DifferentSeedsGiveDifferentMasks) {
  Rng a(1), b(2);
  std::vector<float> ma(256), mb(256);
  cpu::dropout_mask(a, 0.5f, ma.data(), 256);
  cpu::dropout_mask(b, 0.5f, mb.data(), 256);
  EXPECT_NE(ma, mb);
}

TEST(DropoutKernel, ApplyMultipliesByTheMaskInPlaceOrNot) {
  const std::vector<float> x{1.0f, -2.0f, 3.0f, 4.0f, -5.0f};
  const std::vector<float> mask{2.0f, 0.0f, 2.0f, 0.0f, 2.0f};
  std::vector<float> y(x.size()), y_ref(x.size());
  cpu::dropout_apply(x.data(), mask.data(), y.data(), 5);
  ref::dropout_apply(x.data(), mask.data(), y_ref.data(), 5);
  EXPECT_EQ(y, (std::vector<float>{2.0f, 0.0f, 6.0f, 0.0f, -10.0f}));
  EXPECT_EQ(y, y_ref);
  std::vector<float> inplace = x;
  cpu::dropout_apply(inplace.data(), mask.data(), inplace.data(), 5);
  EXPECT_EQ(inplace, y);
}

}  // namespace
}  // namespace tern
