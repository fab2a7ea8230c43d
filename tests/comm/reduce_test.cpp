// The reduction kernels against a one-element-at-a-time reference, including the 16-bit floats'
// vector path (checked bit for bit against the scalar conversions) and the edge cases.
#include "comm/reduce.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/rng.h"

namespace tern {
namespace {

// Random 16-bit patterns that are not NaN (NaN payloads may legitimately differ between paths).
std::vector<uint16_t> random_halves(DType dtype, size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint16_t> v;
  while (v.size() < n) {
    const auto bits = static_cast<uint16_t>(rng.next_u32());
    const float x = dtype == DType::f16 ? f16_to_f32(bits) : bf16_to_f32(bits);
    if (!std::isnan(x)) v.push_back(bits);
  }
  return v;
}

TEST(ReduceInto, HalfPrecisionSumAndMaxRoundOnceFromF32) {
  for (DType dtype : {DType::f16, DType::bf16}) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
      const size_t n = 5000 + 3;  // several blocks and a tail shorter than a vector
      std::vector<uint16_t> dst = random_halves(dtype, n, 1);
      const std::vector<uint16_t> src = random_halves(dtype, n, 2);
      std::vector<uint16_t> expected(n);
      for (size_t i = 0; i < n; ++i) {
        const float a = dtype == DType::f16 ? f16_to_f32(dst[i]) : bf16_to_f32(dst[i]);
        const float b = dtype == DType::f16 ? f16_to_f32(src[i]) : bf16_to_f32(src[i]);
        const float r = op == ReduceOp::sum ? a + b : std::max(a, b);
        expected[i] = dtype == DType::f16 ? f32_to_f16(r) : f32_to_bf16(r);
      }
      reduce_into(dst.data(), src.data(), static_cast<int64_t>(n), dtype, op);
      for (size_t i = 0; i < n; ++i) {
        const float r = dtype == DType::f16 ? f16_to_f32(expected[i]) : bf16_to_f32(expected[i]);
        if (std::isnan(r)) continue;  // inf + -inf
        ASSERT_EQ(dst[i], expected[i]) << dtype_name(dtype) << " " << reduce_op_name(op) << " element " << i;
      }
    }
  }
}

TEST(ReduceInto, F32AndIntegersMatchTheScalarReference) {
  Rng rng(3);
  const int64_t n = 1027;
  std::vector<float> fa(n), fb(n);
  std::vector<int32_t> ia(n), ib(n);
  std::vector<int64_t> la(n), lb(n);
  for (int64_t i = 0; i < n; ++i) {
    fa[i] = rng.normal();
    fb[i] = rng.normal();
    ia[i] = static_cast<int32_t>(rng.next_u32());
    ib[i] = static_cast<int32_t>(rng.next_u32());
    la[i] = static_cast<int64_t>(rng.next_u64());
    lb[i] = static_cast<int64_t>(rng.next_u64());
  }
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
    std::vector<float> f = fa;
    std::vector<int32_t> i32 = ia;
    std::vector<int64_t> i64 = la;
    reduce_into(f.data(), fb.data(), n, DType::f32, op);
    reduce_into(i32.data(), ib.data(), n, DType::i32, op);
    reduce_into(i64.data(), lb.data(), n, DType::i64, op);
    for (int64_t i = 0; i < n; ++i) {
      const bool max = op == ReduceOp::max;
      ASSERT_EQ(f[i], max ? std::max(fa[i], fb[i]) : fa[i] + fb[i]) << i;
      // Sums wrap around: the reference adds as unsigned.
      ASSERT_EQ(i32[i],
                max ? std::max(ia[i], ib[i])
                    : static_cast<int32_t>(static_cast<uint32_t>(ia[i]) + static_cast<uint32_t>(ib[i])))
          << i;
      ASSERT_EQ(i64[i],
                max ? std::max(la[i], lb[i])
                    : static_cast<int64_t>(static_cast<uint64_t>(la[i]) + static_cast<uint64_t>(lb[i])))
          << i;
    }
  }
}

TEST(ReduceInto, MaxPropagatesNaNFromEitherSide) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> dst = {nan, 1.0f, 2.0f};
  const std::vector<float> src = {1.0f, nan, 3.0f};
  reduce_into(dst.data(), src.data(), 3, DType::f32, ReduceOp::max);
  EXPECT_TRUE(std::isnan(dst[0]));
  EXPECT_TRUE(std::isnan(dst[1]));
  EXPECT_EQ(dst[2], 3.0f);
}

TEST(FinishAverage, DividesFloatsOnceAndTruncatesIntegersTowardZero) {
  std::vector<float> f = {7.0f, -7.0f, 1.0f};
  finish_average(f.data(), 3, DType::f32, 3);
  EXPECT_EQ(f[0], 7.0f / 3.0f);
  EXPECT_EQ(f[2], 1.0f / 3.0f);
  std::vector<int32_t> i = {7, -7, 6};
  finish_average(i.data(), 3, DType::i32, 2);
  EXPECT_EQ(i, (std::vector<int32_t>{3, -3, 3}));
  std::vector<uint16_t> h = {f32_to_bf16(3.0f)};
  finish_average(h.data(), 1, DType::bf16, 4);
  EXPECT_EQ(h[0], f32_to_bf16(0.75f));
}

TEST(ReduceInto, UnsupportedDtypesAreACommErrorNamingTheDtype) {
  uint8_t a = 1, b = 2;
  EXPECT_THROW(reduce_into(&a, &b, 1, DType::u8, ReduceOp::sum), CommError);
  EXPECT_THROW(finish_average(&a, 1, DType::i8, 2), CommError);
  try {
    check_reduce_dtype(DType::u8, "allreduce");
    ADD_FAILURE() << "u8 accepted";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("allreduce: dtype u8 cannot be reduced"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(reduce_supported(DType::i64));
}

}  // namespace
}  // namespace tern
