#include "runtime/tensor/dtype.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "runtime/tensor/tensor.h"

namespace tern {
namespace {

// Reference conversion: the exactly representable f16 nearest to x (ties to even), found by
// searching all 65536 bit patterns in double precision. Slow and obviously right.
uint16_t f16_by_search(float x) {
  if (std::isnan(x)) return 0x7e00;
  const double v = x;
  uint16_t best = 0;
  double best_err = INFINITY;
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // skip NaNs
    double f = f16_to_f32(h);
    if (std::isinf(f)) f = std::copysign(65536.0, f);  // rounding treats inf as the next step
    if (std::signbit(f) != std::signbit(v)) continue;
    const double err = std::fabs(f - v);
    if (err < best_err || (err == best_err && (h & 1) == 0)) {
      best = h;
      best_err = err;
    }
  }
  return best;
}

TEST(F16, EdgeValuesAreBitExact) {
  EXPECT_EQ(f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);                     // largest finite
  EXPECT_EQ(f32_to_f16(65519.99f), 0x7bff);                    // just below the tie
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                     // tie rounds to even: inf
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);        // smallest normal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);        // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);        // tie with zero: even is zero
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);        // above the tie
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);        // 1.5 ulp: tie to even (2)
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: stays even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie: rounds up to even
  const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x3ff, 0);
}

TEST(F16, MatchesExhaustiveSearchOnSampledFloats) {
  // Sample floats across the whole f16 range, including the subnormal region.
  for (int e = -27; e <= 16; ++e) {
    for (int m = 0; m < 64; ++m) {
      const float x = std::ldexp(1.0f + m / 64.0f + 1.0f / 8192.0f * (m % 3), e);
      ASSERT_EQ(f32_to_f16(x), f16_by_search(x)) << "x=" << x;
      ASSERT_EQ(f32_to_f16(-x), f16_by_search(-x)) << "x=" << -x;
    }
  }
}

TEST(F16, EveryHalfRoundTripsThroughF32) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const float f = f16_to_f32(h);
    if (std::isnan(f)) {
      EXPECT_EQ(h & 0x7c00, 0x7c00);
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << std::hex << b;
  }
}

TEST(BF16, EdgeValuesAreBitExact) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even keeps 1.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to inf
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x00018000u)), 0x0002);  // subnormal tie up to even
  const uint16_t nan = f32_to_bf16(std::bit_cast<float>(0x7f800001u));  // NaN with low bits only
  EXPECT_TRUE(std::isnan(bf16_to_f32(nan)));
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bf16_to_f32(static_cast<uint16_t>(b));
    if (!std::isnan(f)) {
      ASSERT_EQ(f32_to_bf16(f), b);
    }
  }
}

TEST(Tensor, ConvertsBetweenDtypesThroughTo) {
  Tensor x = Tensor::from({4}, {1.0f, -2.5f, 65504.0f, 1e-8f});
  Tensor h = x.to(DType::f16);
  EXPECT_EQ(h.dtype(), DType::f16);
  EXPECT_EQ(h.data<uint16_t>()[0], 0x3c00);
  Tensor back = h.to(DType::f32);
  EXPECT_EQ(back.f32()[1], -2.5f);
  EXPECT_EQ(back.f32()[2], 65504.0f);
  EXPECT_EQ(back.f32()[3], 0.0f);  // 1e-8 is below half the smallest f16 subnormal
  Tensor i = Tensor::from({3}, {1.9f, -1.9f, 3.0f}).to(DType::i32);
  EXPECT_EQ(i.data<int32_t>()[0], 1);
  EXPECT_EQ(i.data<int32_t>()[1], -1);
}

TEST(Tensor, ViewsShareStorageAndAreAligned) {
  Tensor t = Tensor::zeros({4, 3});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  Tensor rows = t.slice(1, 3);
  rows.fill(7.0);
  EXPECT_EQ(t.f32()[2], 0.0f);
  EXPECT_EQ(t.f32()[3], 7.0f);
  EXPECT_EQ(t.f32()[8], 7.0f);
  EXPECT_EQ(t.f32()[9], 0.0f);
  Tensor flat = t.reshape({-1});
  EXPECT_EQ(flat.numel(), 12);
  EXPECT_TRUE(flat.shares_storage(t));
  EXPECT_THROW(t.reshape({5, -1}), Error);
  EXPECT_THROW(t.slice(2, 5), Error);
  EXPECT_THROW(t.data<int32_t>(), Error);
  Tensor c = t.clone();
  EXPECT_FALSE(c.shares_storage(t));
  EXPECT_EQ(c.f32()[3], 7.0f);
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

// The bulk conversions (hardware F16C where the build has it) equal the scalar reference bit for
// bit: every half pattern to f32, and f32 values around every half (ties, subnormals, overflow,
// Inf, NaNs with payloads) to f16, at every position in a block of 8.
TEST(F16, BulkConversionsEqualTheScalarOnes) {
  std::vector<uint16_t> halves(65536);
  for (uint32_t h = 0; h < 65536; ++h) halves[h] = static_cast<uint16_t>(h);
  std::vector<float> wide(65536);
  f16_to_f32(halves.data(), wide.data(), halves.size());
  for (uint32_t h = 0; h < 65536; ++h) {
    const float want = f16_to_f32(static_cast<uint16_t>(h));
    ASSERT_EQ(std::bit_cast<uint32_t>(wide[h]), std::bit_cast<uint32_t>(want)) << "half 0x" << std::hex << h;
  }
  std::vector<float> floats;
  for (uint32_t h = 0; h < 65536; h += 7) {
    const uint32_t bits = std::bit_cast<uint32_t>(f16_to_f32(static_cast<uint16_t>(h)));
    for (int32_t d : {-4097, -4096, -1, 0, 1, 4095, 4096, 4097}) floats.push_back(std::bit_cast<float>(bits + static_cast<uint32_t>(d)));
  }
  for (float f : {1e-30f, -1e-30f, 65504.0f, 65520.0f, 1e10f, -1e10f}) floats.push_back(f);
  floats.push_back(std::bit_cast<float>(0x7fc12345u));  // quiet NaN with a payload
  floats.push_back(std::bit_cast<float>(0xff812345u));  // signalling NaN
  std::vector<uint16_t> narrow(floats.size());
  f32_to_f16(floats.data(), narrow.data(), floats.size());
  for (size_t i = 0; i < floats.size(); ++i)
    ASSERT_EQ(narrow[i], f32_to_f16(floats[i])) << "f32 bits 0x" << std::hex << std::bit_cast<uint32_t>(floats[i]);
}

}  // namespace
}  // namespace tern
