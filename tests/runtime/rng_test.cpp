#include "runtime/rng.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tern {
namespace {

TEST(Rng, MatchesThePcg32ReferenceStream) {
  // pcg32_srandom(42, 54) from the PCG reference implementation's demo prints these six.
  Rng r(42, 54);
  const uint32_t expected[] = {0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e};
  for (uint32_t e : expected) EXPECT_EQ(r.next_u32(), e);
}

TEST(Rng, SameSeedSameStreamDifferentSeedDifferent) {
  Rng a(7), b(7), c(8);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const uint32_t x = a.next_u32();
    EXPECT_EQ(x, b.next_u32());
    differs |= x != c.next_u32();
  }
  EXPECT_TRUE(differs);
}

TEST(Rng, BelowIsInRangeAndRoughlyUniform) {
  Rng r(1);
  int counts[7] = {};
  for (int i = 0; i < 70000; ++i) counts[r.below(7)]++;
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
}

TEST(Rng, NormalHasUnitMoments) {
  Rng r(3);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = r.normal();
    s += x;
    s2 += x * x;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.02);
}

TEST(Rng, ShuffleIsAPermutation) {
  Rng r(5);
  std::vector<int> v(1000);
  for (int i = 0; i < 1000; ++i) v[i] = i;
  r.shuffle(v);
  std::vector<int> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(sorted[i], i);
  int fixed = 0;
  for (int i = 0; i < 1000; ++i) fixed += v[i] == i;
  EXPECT_LT(fixed, 20);
}

}  // namespace
}  // namespace tern
