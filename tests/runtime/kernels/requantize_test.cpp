#include "runtime/kernels/cpu/requantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "runtime/kernels/reference/int8_conv.h"
#include "runtime/rng.h"

namespace tern {
namespace {

using cpu::QuantMultiplier;

TEST(Requantize, MultiplierRepresentsTheScaleToQ31Precision) {
  Rng rng(11);
  for (int i = 0; i < 2000; ++i) {
    // Log-uniform over 2^-30 .. 2^10: every scale ratio a model produces.
    const double m = std::exp2(-30.0 + 40.0 * rng.uniform());
    const QuantMultiplier q = cpu::quantize_multiplier(m);
    ASSERT_GE(q.multiplier, 1 << 30) << m;
    // A 31-bit significand: relative error at most 2^-31 (half a unit in the last place).
    ASSERT_LE(std::fabs(cpu::multiplier_value(q) - m) / m, std::exp2(-31)) << m;
  }
}

TEST(Requantize, DegenerateMultipliersNeverProduceAnInvalidShift) {
  EXPECT_EQ(cpu::quantize_multiplier(0.0).multiplier, 0);
  EXPECT_EQ(cpu::quantize_multiplier(-1.0).multiplier, 0);
  EXPECT_EQ(cpu::quantize_multiplier(std::nan("")).multiplier, 0);
  EXPECT_EQ(cpu::quantize_multiplier(1e-12).multiplier, 0);  // below 2^-31: maps to the zero point
  const QuantMultiplier big = cpu::quantize_multiplier(1e12);
  EXPECT_EQ(big.shift, 30);
  // Every returned multiplier keeps the shift in the exact 64-bit range.
  for (double m : {0.0, 1e-12, 3e-10, 0.5, 1.0, 1e12}) {
    const QuantMultiplier q = cpu::quantize_multiplier(m);
    EXPECT_GE(31 - q.shift, 1);
    EXPECT_LE(31 - q.shift, 62);
  }
}

TEST(Requantize, RoundsTiesUpward) {
  const QuantMultiplier half = cpu::quantize_multiplier(0.5);
  EXPECT_EQ(cpu::multiply_by_quantized(1, half.multiplier, half.shift), 1);    // 0.5 -> 1
  EXPECT_EQ(cpu::multiply_by_quantized(-1, half.multiplier, half.shift), 0);   // -0.5 -> 0
  EXPECT_EQ(cpu::multiply_by_quantized(3, half.multiplier, half.shift), 2);    // 1.5 -> 2
  EXPECT_EQ(cpu::multiply_by_quantized(-3, half.multiplier, half.shift), -1);  // -1.5 -> -1
  EXPECT_EQ(cpu::multiply_by_quantized(-4, half.multiplier, half.shift), -2);
}

TEST(Requantize, MatchesDoublePrecisionRoundingAndClamps) {
  Rng rng(12);
  const int32_t mult[1] = {0}, shift[1] = {0};
  cpu::Requant rq{.multiplier = mult, .shift = shift, .out_zero_point = -7, .act_min = -7, .act_max = 100};
  int mismatches = 0;
  for (int i = 0; i < 100000; ++i) {
    const double m = std::exp2(-20.0 + 18.0 * rng.uniform());
    const QuantMultiplier q = cpu::quantize_multiplier(m);
    const int32_t acc = static_cast<int32_t>(rng.next_u32() >> (1 + rng.below(24))) * (rng.below(2) ? 1 : -1);
    const int8_t got = cpu::requantize(acc, q.multiplier, q.shift, rq);
    const int8_t want = ref::requantize(acc, cpu::multiplier_value(q), rq);
    ASSERT_GE(got, rq.act_min);
    ASSERT_LE(got, rq.act_max);
    // The double reference rounds acc * m to 53 bits first, so an exact tie may land either side.
    ASSERT_LE(std::abs(got - want), 1) << acc << " * " << m;
    mismatches += got != want;
  }
  EXPECT_LE(mismatches, 10);
}

}  // namespace
}  // namespace tern
