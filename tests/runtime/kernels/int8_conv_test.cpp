#include "runtime/kernels/cpu/int8_conv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "runtime/kernels/reference/conv.h"
#include "runtime/kernels/reference/int8_conv.h"
#include "runtime/rng.h"
#include "tests/support/split_weight.h"

namespace tern {
namespace {

using cpu::Int8ConvShape;

std::vector<int8_t> random_int8(Rng& rng, int64_t n, int lo = -128, int hi = 127) {
  std::vector<int8_t> v(static_cast<size_t>(n));
  for (int8_t& x : v)
    x = static_cast<int8_t>(lo + static_cast<int>(rng.below(static_cast<uint32_t>(hi - lo + 1))));
  return v;
}

// A layer's quantisation: input, per-channel weight and output scales, zero points, and the
// requantisation they imply. The output scale is chosen so that outputs spread over the int8
// range without mostly saturating (taps = products per output).
struct LayerQuant {
  float s_x = 0.02f, s_y = 0;
  int32_t zx = 0, zy = 0;
  std::vector<float> s_w;
  std::vector<int32_t> mult, shift;
  cpu::Requant rq;

  LayerQuant(Rng& rng, int32_t c_out, int64_t taps, int32_t act_min = -128, int32_t act_max = 127) {
    zx = static_cast<int32_t>(rng.below(60)) - 30;
    zy = static_cast<int32_t>(rng.below(40)) - 20;
    for (int32_t c = 0; c < c_out; ++c) s_w.push_back(0.002f * (0.5f + rng.uniform()));
    // |x - zx| * |w| averages about 64 * 64; a sum of `taps` such terms has spread ~ 4096 sqrt(taps).
    const double acc_spread = 4096.0 * std::sqrt(static_cast<double>(taps));
    s_y = static_cast<float>(s_x * 0.002 * acc_spread / 40.0);
    for (int32_t c = 0; c < c_out; ++c) {
      const cpu::QuantMultiplier q = cpu::quantize_multiplier(static_cast<double>(s_x) * s_w[c] / s_y);
      mult.push_back(q.multiplier);
      shift.push_back(q.shift);
    }
    rq = cpu::Requant{.multiplier = mult.data(),
                      .shift = shift.data(),
                      .out_zero_point = zy,
                      .act_min = std::max(act_min, -128),
                      .act_max = act_max};
  }
};

std::vector<int32_t> random_bias(Rng& rng, int32_t c_out) {
  std::vector<int32_t> b(static_cast<size_t>(c_out));
  for (int32_t& v : b) v = static_cast<int32_t>(rng.below(20001)) - 10000;
  return b;
}

// Largest |a - b| and how many differ.
struct Diff {
  int max = 0;
  int64_t count = 0;
};
Diff compare(const std::vector<int8_t>& a, const std::vector<int8_t>& b) {
  Diff d;
  for (size_t i = 0; i < a.size(); ++i) {
    const int e = std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i]));
    d.max = std::max(d.max, e);
    d.count += e != 0;
  }
  return d;
}

struct ConvCase {
  int32_t h, w, c_in, c_out, kernel, stride, pad;
};
// 1x1 and its strided form, 3x3 with and without stride, a 5x5, a grey-scale first layer, sizes
// that leave a partial window at the bottom/right, output channels not a multiple of the blocks
// (4 filters in a patch's dot products, 16 in the tap-major path), filters of up to 256 taps (the
// tap-major path), of 360 (the stack patch) and of 2304, beyond the stack patch (the direct path).
const ConvCase kConvCases[] = {{7, 5, 16, 24, 1, 1, 0}, {8, 8, 8, 12, 1, 2, 0},  {9, 9, 8, 16, 3, 1, 1},
                               {10, 7, 6, 10, 3, 2, 1}, {6, 6, 4, 5, 5, 1, 2},   {28, 28, 1, 8, 3, 1, 1},
                               {5, 5, 3, 7, 3, 2, 0},   {1, 1, 64, 10, 1, 1, 0}, {4, 5, 256, 6, 3, 1, 1},
                               {3, 4, 240, 37, 1, 1, 0}, {6, 5, 40, 21, 3, 1, 1}, {5, 5, 8, 33, 1, 1, 1}};

TEST(Int8Conv, MatchesTheNaiveReference) {
  Rng rng(21);
  for (const ConvCase& c : kConvCases) {
    const Int8ConvShape s{c.h, c.w, c.c_in, c.c_out, c.kernel, c.stride, c.pad};
    const auto x = random_int8(rng, int64_t{c.h} * c.w * c.c_in);
    const auto w = random_int8(rng, int64_t{c.c_out} * c.kernel * c.kernel * c.c_in, -127, 127);
    const auto bias = random_bias(rng, c.c_out);
    LayerQuant q(rng, c.c_out, int64_t{c.kernel} * c.kernel * c.c_in);
    std::vector<int8_t> y(static_cast<size_t>(int64_t{s.out_h()} * s.out_w() * c.c_out), 0), y_ref = y;
    cpu::int8_conv2d(s, x.data(), q.zx, w.data(), bias.data(), q.rq, y.data());
    ref::int8_conv2d(s, 1, x.data(), q.zx, w.data(), bias.data(), q.rq, y_ref.data());
    const Diff d = compare(y, y_ref);
    // Integer accumulation is exact; only the reference's double rounding of acc * M can move a
    // result that sits on a tie, by one step.
    EXPECT_LE(d.max, 1) << c.h << "x" << c.w << " k" << c.kernel;
    EXPECT_LE(d.count, 1) << c.h << "x" << c.w << " k" << c.kernel;
  }
}

// A partly trained layer's weight read from two places gives the result of the assembled weight,
// bit for bit, on every path (tap-major table, stack patch, direct).
TEST(Int8Conv, SplitWeightEqualsTheAssembledWeight) {
  Rng rng(22);
  for (const ConvCase& c : kConvCases) {
    const Int8ConvShape s{c.h, c.w, c.c_in, c.c_out, c.kernel, c.stride, c.pad};
    const auto x = random_int8(rng, int64_t{c.h} * c.w * c.c_in);
    const testing::SplitWeight w(rng, random_int8(rng, int64_t{c.c_out} * c.kernel * c.kernel * c.c_in, -127, 127),
                                 c.c_out);
    const auto bias = random_bias(rng, c.c_out);
    LayerQuant q(rng, c.c_out, int64_t{c.kernel} * c.kernel * c.c_in);
    std::vector<int8_t> y(static_cast<size_t>(int64_t{s.out_h()} * s.out_w() * c.c_out), 0), y_plain = y;
    cpu::int8_conv2d(s, x.data(), q.zx, w.split(), bias.data(), q.rq, y.data());
    cpu::int8_conv2d(s, x.data(), q.zx, w.assembled.data(), bias.data(), q.rq, y_plain.data());
    EXPECT_EQ(y, y_plain) << c.h << "x" << c.w << "x" << c.c_in << " k" << c.kernel;
  }
}

TEST(Int8Conv, NullBiasIsZeroBias) {
  Rng rng(22);
  const Int8ConvShape s{6, 6, 5, 7, 3, 1, 1};
  const auto x = random_int8(rng, 6 * 6 * 5);
  const auto w = random_int8(rng, 7 * 9 * 5, -127, 127);
  const std::vector<int32_t> zeros(7, 0);
  LayerQuant q(rng, 7, 45);
  std::vector<int8_t> a(6 * 6 * 7), b(6 * 6 * 7);
  cpu::int8_conv2d(s, x.data(), q.zx, w.data(), nullptr, q.rq, a.data());
  cpu::int8_conv2d(s, x.data(), q.zx, w.data(), zeros.data(), q.rq, b.data());
  EXPECT_EQ(a, b);
}

// The quantisation tolerance against real arithmetic: the dequantised int8 output differs from
// the f32 convolution of the dequantised input and weights (plus the real bias) by at most half
// an output step (the final rounding) plus the multiplier's relative error 2^-31, wherever the
// result is not clamped.
TEST(Int8Conv, DequantisedOutputIsWithinHalfAStepOfTheFloatConvolution) {
  Rng rng(23);
  for (const ConvCase& c : kConvCases) {
    const Int8ConvShape s{c.h, c.w, c.c_in, c.c_out, c.kernel, c.stride, c.pad};
    const auto x = random_int8(rng, int64_t{c.h} * c.w * c.c_in);
    const auto w = random_int8(rng, int64_t{c.c_out} * c.kernel * c.kernel * c.c_in, -127, 127);
    const auto bias = random_bias(rng, c.c_out);
    LayerQuant q(rng, c.c_out, int64_t{c.kernel} * c.kernel * c.c_in);
    const int32_t oh = s.out_h(), ow = s.out_w();
    std::vector<int8_t> y(static_cast<size_t>(int64_t{oh} * ow * c.c_out));
    cpu::int8_conv2d(s, x.data(), q.zx, w.data(), bias.data(), q.rq, y.data());

    // NCHW / OIHW f32 copies for the f32 reference convolution.
    std::vector<float> xf(x.size()), wf(w.size()), bf(bias.size()), yf(y.size());
    for (int32_t i = 0; i < c.h; ++i)
      for (int32_t j = 0; j < c.w; ++j)
        for (int32_t ch = 0; ch < c.c_in; ++ch)
          xf[(static_cast<size_t>(ch) * c.h + i) * c.w + j] =
              q.s_x * static_cast<float>(x[(static_cast<size_t>(i) * c.w + j) * c.c_in + ch] - q.zx);
    for (int32_t o = 0; o < c.c_out; ++o) {
      bf[o] = q.s_x * q.s_w[o] * static_cast<float>(bias[o]);
      for (int32_t kh = 0; kh < c.kernel; ++kh)
        for (int32_t kw = 0; kw < c.kernel; ++kw)
          for (int32_t ch = 0; ch < c.c_in; ++ch)
            wf[((static_cast<size_t>(o) * c.c_in + ch) * c.kernel + kh) * c.kernel + kw] =
                q.s_w[o] * w[((static_cast<size_t>(o) * c.kernel + kh) * c.kernel + kw) * c.c_in + ch];
    }
    const Conv2dShape fs{.n = 1,
                         .c_in = c.c_in,
                         .h = c.h,
                         .w = c.w,
                         .c_out = c.c_out,
                         .kh = c.kernel,
                         .kw = c.kernel,
                         .stride_h = c.stride,
                         .stride_w = c.stride,
                         .pad_h = c.pad,
                         .pad_w = c.pad,
                         .groups = 1};
    ref::conv2d_forward(fs, xf.data(), wf.data(), bf.data(), yf.data());
    int64_t checked = 0;
    for (int32_t o = 0; o < c.c_out; ++o)
      for (int32_t p = 0; p < oh * ow; ++p) {
        const int32_t yq = y[static_cast<size_t>(p) * c.c_out + o];
        if (yq == -128 || yq == 127) continue;  // clamped
        const float real = q.s_y * static_cast<float>(yq - q.zy);
        const float want = yf[static_cast<size_t>(o) * oh * ow + p];
        ASSERT_LE(std::fabs(real - want), q.s_y * 0.501f + 1e-5f * std::fabs(want))
            << "out " << o << " pixel " << p << " of " << c.h << "x" << c.w << " k" << c.kernel;
        ++checked;
      }
    EXPECT_GT(checked, static_cast<int64_t>(y.size()) / 2);  // the scales keep most outputs unclamped
  }
}

TEST(Int8Conv, FusedReluClampsAtTheZeroPoint) {
  Rng rng(24);
  const Int8ConvShape s{5, 5, 8, 8, 1, 1, 0};
  const auto x = random_int8(rng, 5 * 5 * 8);
  const auto w = random_int8(rng, 8 * 8, -127, 127);
  LayerQuant q(rng, 8, 8);
  q.rq.act_min = q.zy;
  std::vector<int8_t> y(5 * 5 * 8);
  cpu::int8_conv2d(s, x.data(), q.zx, w.data(), nullptr, q.rq, y.data());
  EXPECT_EQ(*std::min_element(y.begin(), y.end()), q.zy);  // random signs: some outputs were negative
}

struct DepthwiseCase {
  int32_t h, w, c, kernel, stride, pad;
};
const DepthwiseCase kDepthwiseCases[] = {{8, 8, 16, 3, 1, 1}, {9, 7, 8, 3, 2, 1}, {14, 14, 24, 3, 2, 1},
                                         {6, 6, 5, 5, 1, 2},  {7, 7, 4, 5, 2, 2}, {5, 6, 3, 3, 1, 0},
                                         {1, 1, 32, 3, 1, 1},  {3, 70, 3, 3, 1, 1}, {4, 131, 2, 3, 2, 1},
                                         {5, 140, 2, 5, 2, 2},
                                         // planes of more than 256 outputs go a channel at a time: rows
                                         // of 12+ pixels (strides 1 and 2), shorter ones; one channel
                                         {28, 28, 5, 3, 1, 1}, {36, 36, 3, 3, 2, 1}, {40, 10, 3, 3, 1, 1},
                                         {6, 6, 1, 3, 1, 1}};

TEST(Int8Depthwise, InPlaceMatchesTheReferenceAtStrideOneAndTwo) {
  Rng rng(25);
  for (const DepthwiseCase& c : kDepthwiseCases) {
    const Int8ConvShape s{c.h, c.w, c.c, c.c, c.kernel, c.stride, c.pad};
    const auto x = random_int8(rng, int64_t{c.h} * c.w * c.c);
    const auto w = random_int8(rng, int64_t{c.c} * c.kernel * c.kernel, -127, 127);
    const auto bias = random_bias(rng, c.c);
    LayerQuant q(rng, c.c, int64_t{c.kernel} * c.kernel);
    const size_t out_n = static_cast<size_t>(int64_t{s.out_h()} * s.out_w() * c.c);
    std::vector<int8_t> y_ref(out_n);
    ref::int8_conv2d(s, c.c, x.data(), q.zx, w.data(), bias.data(), q.rq, y_ref.data());

    // Sentinels around the buffer catch writes outside it.
    std::vector<int8_t> data(x.size() + 32, 55);
    std::copy(x.begin(), x.end(), data.begin() + 16);
    std::vector<int8_t> scratch(static_cast<size_t>(c.h) * c.w + 16, 77);
    ASSERT_TRUE(cpu::int8_depthwise_conv2d_inplace(s, data.data() + 16, q.zx, w.data(), bias.data(), q.rq,
                                                   scratch.data()));
    const std::vector<int8_t> y(data.begin() + 16, data.begin() + 16 + static_cast<std::ptrdiff_t>(out_n));
    const Diff d = compare(y, y_ref);
    EXPECT_LE(d.max, 1) << c.h << "x" << c.w << " s" << c.stride;
    EXPECT_LE(d.count, 1) << c.h << "x" << c.w << " s" << c.stride;
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(data[static_cast<size_t>(i)], 55);
      EXPECT_EQ(data[data.size() - 1 - static_cast<size_t>(i)], 55);
      EXPECT_EQ(scratch[scratch.size() - 1 - static_cast<size_t>(i)], 77);  // only h * w scratch bytes
    }
  }
}

TEST(Int8Depthwise, RefusesAnOutputLargerThanItsInputAndTouchesNothing) {
  Rng rng(26);
  const Int8ConvShape s{4, 4, 3, 3, 3, 1, 2};  // padding 2 > kernel / 2: output 6x6 > 4x4
  auto data = random_int8(rng, 4 * 4 * 3);
  const auto before = data;
  const auto w = random_int8(rng, 3 * 9, -127, 127);
  LayerQuant q(rng, 3, 9);
  std::vector<int8_t> scratch(16);
  EXPECT_FALSE(
      cpu::int8_depthwise_conv2d_inplace(s, data.data(), q.zx, w.data(), nullptr, q.rq, scratch.data()));
  EXPECT_EQ(data, before);
}

TEST(Int8Linear, MatchesTheReferenceAndItsAccumulatorForm) {
  Rng rng(27);
  for (auto [in, out] : {std::pair{64, 10}, std::pair{3136, 128}, std::pair{1, 3}, std::pair{200, 1}}) {
    const auto x = random_int8(rng, in);
    const auto w = random_int8(rng, int64_t{in} * out, -127, 127);
    const auto bias = random_bias(rng, out);
    LayerQuant q(rng, out, in);
    std::vector<int8_t> y(static_cast<size_t>(out)), y_ref(y.size());
    cpu::int8_linear(x.data(), q.zx, w.data(), bias.data(), in, out, q.rq, y.data());
    ref::int8_linear(x.data(), q.zx, w.data(), bias.data(), in, out, q.rq, y_ref.data());
    EXPECT_LE(compare(y, y_ref).max, 1) << in << "->" << out;
    EXPECT_LE(compare(y, y_ref).count, 1) << in << "->" << out;

    std::vector<int32_t> acc(static_cast<size_t>(out));
    cpu::int8_linear_accumulate(x.data(), q.zx, w.data(), bias.data(), in, out, acc.data());
    for (int32_t o = 0; o < out; ++o) {
      int64_t want = bias[o];
      for (int32_t i = 0; i < in; ++i) want += (int64_t{x[i]} - q.zx) * w[static_cast<size_t>(o) * in + i];
      ASSERT_EQ(acc[o], want) << o;
      EXPECT_EQ(y[o], cpu::requantize(acc[o], q.mult[o], q.shift[o], q.rq));
    }
  }
}

TEST(Int8Linear, SplitWeightEqualsTheAssembledWeight) {
  Rng rng(28);
  for (auto [in, out] : {std::pair{64, 10}, std::pair{3136, 128}, std::pair{1, 3}, std::pair{200, 1}}) {
    const auto x = random_int8(rng, in);
    const testing::SplitWeight w(rng, random_int8(rng, int64_t{in} * out, -127, 127), out);
    const auto bias = random_bias(rng, out);
    LayerQuant q(rng, out, in);
    std::vector<int8_t> y(static_cast<size_t>(out)), y_plain(y.size());
    cpu::int8_linear(x.data(), q.zx, w.split(), bias.data(), in, out, q.rq, y.data());
    cpu::int8_linear(x.data(), q.zx, w.assembled.data(), bias.data(), in, out, q.rq, y_plain.data());
    EXPECT_EQ(y, y_plain) << in << "->" << out;
    std::vector<int32_t> acc(static_cast<size_t>(out)), acc_plain(acc.size());
    cpu::int8_linear_accumulate(x.data(), q.zx, w.split(), bias.data(), in, out, acc.data());
    cpu::int8_linear_accumulate(x.data(), q.zx, w.assembled.data(), bias.data(), in, out, acc_plain.data());
    EXPECT_EQ(acc, acc_plain) << in << "->" << out;
  }
}

}  // namespace
}  // namespace tern
