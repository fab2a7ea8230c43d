#include "runtime/kernels/cpu/int8_backward.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "runtime/kernels/cpu/sparse_update.h"
#include "runtime/kernels/reference/conv.h"
#include "runtime/kernels/reference/int8_backward.h"
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

std::vector<float> random_floats(Rng& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal();
  return v;
}

// k distinct channels of [0, n) in random order.
std::vector<int32_t> pick_channels(Rng& rng, int32_t n, int32_t k) {
  std::vector<int32_t> all(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  rng.shuffle(all);
  all.resize(static_cast<size_t>(k));
  return all;
}

// f32 sums of a few hundred products: relative error well under 1e-5 of the magnitudes summed.
void expect_close(float got, float want, float scale, const char* what, size_t i) {
  ASSERT_NEAR(got, want, 1e-5f * (scale + std::fabs(want))) << what << " at " << i;
}

struct Case {
  int32_t h, w, c_in, c_out, kernel, stride, pad;
};
const Case kCases[] = {
    {6, 6, 8, 12, 1, 1, 0}, {7, 7, 5, 6, 3, 1, 1}, {9, 8, 4, 8, 3, 2, 1}, {5, 5, 3, 4, 5, 1, 2},
    // channels past a block of 16 and a remainder; a kernel of more taps than the depthwise table
    {10, 9, 6, 37, 3, 2, 1}, {11, 10, 2, 20, 9, 1, 4}};

TEST(Int8Backward, BiasGradientSumsOverPixels) {
  Rng rng(41);
  const auto dy = random_floats(rng, 49 * 24);
  std::vector<float> db(24, 99.0f), db_ref(24);
  cpu::bias_grad(dy.data(), 49, 24, db.data());
  ref::bias_grad(dy.data(), 49, 24, db_ref.data());
  for (size_t i = 0; i < db.size(); ++i) expect_close(db[i], db_ref[i], 7.0f, "db", i);
}

TEST(Int8Backward, ConvWeightGradientOfChosenChannelsEqualsThoseRowsOfTheDenseOne) {
  Rng rng(42);
  for (const Case& c : kCases) {
    const Int8ConvShape s{c.h, c.w, c.c_in, c.c_out, c.kernel, c.stride, c.pad};
    const auto x = random_int8(rng, int64_t{c.h} * c.w * c.c_in);
    const auto dy = random_floats(rng, int64_t{s.out_h()} * s.out_w() * c.c_out);
    const int32_t zx = -7;
    const float sx = 0.03f;
    const int64_t filter = int64_t{c.kernel} * c.kernel * c.c_in;
    std::vector<float> dense(static_cast<size_t>(c.c_out * filter));
    ref::int8_conv2d_weight_grad(s, 1, x.data(), zx, sx, dy.data(), dense.data());
    for (int32_t k : {1, c.c_out / 4, c.c_out}) {
      const auto channels = pick_channels(rng, c.c_out, k);
      std::vector<float> dw(static_cast<size_t>(k * filter), 123.0f);
      cpu::conv2d_weight_grad_channels(s, x.data(), zx, sx, dy.data(), channels.data(), k, dw.data());
      for (int32_t j = 0; j < k; ++j)
        for (int64_t i = 0; i < filter; ++i)
          expect_close(dw[static_cast<size_t>(j * filter + i)],
                       dense[static_cast<size_t>(channels[j] * filter + i)], 30.0f * sx * 128.0f, "dw",
                       static_cast<size_t>(i));
    }
  }
}

TEST(Int8Backward, DepthwiseWeightGradientOfChosenChannelsEqualsThoseRowsOfTheDenseOne) {
  Rng rng(43);
  for (const Case& c : kCases) {
    const Int8ConvShape s{c.h, c.w, c.c_out, c.c_out, c.kernel, c.stride, c.pad};
    const auto x = random_int8(rng, int64_t{c.h} * c.w * c.c_out);
    const auto dy = random_floats(rng, int64_t{s.out_h()} * s.out_w() * c.c_out);
    const int64_t kk = int64_t{c.kernel} * c.kernel;
    std::vector<float> dense(static_cast<size_t>(c.c_out * kk));
    ref::int8_conv2d_weight_grad(s, c.c_out, x.data(), 5, 0.1f, dy.data(), dense.data());
    const int32_t k = std::max(1, c.c_out / 2);
    const auto channels = pick_channels(rng, c.c_out, k);
    std::vector<float> dw(static_cast<size_t>(k * kk));
    cpu::depthwise_weight_grad_channels(s, x.data(), 5, 0.1f, dy.data(), channels.data(), k, dw.data());
    for (int32_t j = 0; j < k; ++j)
      for (int64_t i = 0; i < kk; ++i)
        expect_close(dw[static_cast<size_t>(j * kk + i)], dense[static_cast<size_t>(channels[j] * kk + i)],
                     100.0f, "dw", static_cast<size_t>(i));
  }
}

TEST(Int8Backward, LinearWeightGradientIsTheOuterProductOfChosenRows) {
  Rng rng(44);
  const int32_t in = 50, out = 10;
  const auto x = random_int8(rng, in);
  const auto dy = random_floats(rng, out);
  const std::vector<int32_t> channels = {7, 2};
  std::vector<float> dw(2 * in);
  cpu::linear_weight_grad_channels(x.data(), 3, 0.5f, in, dy.data(), channels.data(), 2, dw.data());
  for (int32_t j = 0; j < 2; ++j)
    for (int32_t i = 0; i < in; ++i)
      EXPECT_FLOAT_EQ(
          dw[static_cast<size_t>(j * in + i)],
          dy[static_cast<size_t>(channels[j])] * 0.5f * static_cast<float>(x[static_cast<size_t>(i)] - 3));
}

TEST(Int8Backward, InputGradientsMatchTheReference) {
  Rng rng(45);
  for (const Case& c : kCases) {
    for (bool depthwise : {false, true}) {
      const int32_t c_in = depthwise ? c.c_out : c.c_in;
      const Int8ConvShape s{c.h, c.w, c_in, c.c_out, c.kernel, c.stride, c.pad};
      const int32_t groups = depthwise ? c.c_out : 1;
      const auto w = random_int8(rng, int64_t{c.c_out} * c.kernel * c.kernel * (c_in / groups), -127, 127);
      std::vector<float> w_scale(static_cast<size_t>(c.c_out));
      for (float& v : w_scale) v = 0.001f + 0.01f * rng.uniform();
      const auto dy = random_floats(rng, int64_t{s.out_h()} * s.out_w() * c.c_out);
      std::vector<float> dx(static_cast<size_t>(int64_t{c.h} * c.w * c_in), 5.0f), dx_ref(dx.size());
      if (depthwise)
        cpu::depthwise_input_grad(s, dy.data(), w.data(), w_scale.data(), dx.data());
      else
        cpu::conv2d_input_grad(s, dy.data(), w.data(), w_scale.data(), dx.data());
      ref::int8_conv2d_input_grad(s, groups, dy.data(), w.data(), w_scale.data(), dx_ref.data());
      for (size_t i = 0; i < dx.size(); ++i) expect_close(dx[i], dx_ref[i], 1.0f, "dx", i);
    }
  }
  // Linear: a 1x1 convolution of one pixel.
  const int32_t in = 40, out = 7;
  const auto w = random_int8(rng, in * out, -127, 127);
  const std::vector<float> w_scale(out, 0.02f);
  const auto dy = random_floats(rng, out);
  std::vector<float> dx(in), dx_ref(in);
  cpu::linear_input_grad(dy.data(), w.data(), w_scale.data(), in, out, dx.data());
  ref::int8_conv2d_input_grad({1, 1, in, out, 1, 1, 0}, 1, dy.data(), w.data(), w_scale.data(),
                              dx_ref.data());
  for (size_t i = 0; i < dx.size(); ++i) expect_close(dx[i], dx_ref[i], 1.0f, "linear dx", i);
}

// The input gradient through a weight read from two places is that of the assembled weight, bit for bit.
TEST(Int8Backward, InputGradientsOfASplitWeightEqualThoseOfTheAssembledWeight) {
  Rng rng(46);
  for (const Case& c : kCases) {
    const Int8ConvShape s{c.h, c.w, c.c_in, c.c_out, c.kernel, c.stride, c.pad};
    const testing::SplitWeight w(rng, random_int8(rng, int64_t{c.c_out} * c.kernel * c.kernel * c.c_in, -127, 127),
                                 c.c_out);
    std::vector<float> w_scale(static_cast<size_t>(c.c_out));
    for (float& v : w_scale) v = 0.001f + 0.01f * rng.uniform();
    auto dy = random_floats(rng, int64_t{s.out_h()} * s.out_w() * c.c_out);
    for (size_t i = 0; i < dy.size(); i += 3) dy[i] = 0.0f;  // masked gradients are skipped
    std::vector<float> dx(static_cast<size_t>(int64_t{c.h} * c.w * c.c_in), 5.0f), dx_plain(dx.size());
    cpu::conv2d_input_grad(s, dy.data(), w.split(), w_scale.data(), dx.data());
    cpu::conv2d_input_grad(s, dy.data(), w.assembled.data(), w_scale.data(), dx_plain.data());
    EXPECT_EQ(dx, dx_plain) << c.h << "x" << c.w << " k" << c.kernel;
  }
  const int32_t in = 40, out = 7;
  const testing::SplitWeight w(rng, random_int8(rng, in * out, -127, 127), out);
  const std::vector<float> w_scale(out, 0.02f);
  const auto dy = random_floats(rng, out);
  std::vector<float> dx(in), dx_plain(in);
  cpu::linear_input_grad(dy.data(), w.split(), w_scale.data(), in, out, dx.data());
  cpu::linear_input_grad(dy.data(), w.assembled.data(), w_scale.data(), in, out, dx_plain.data());
  EXPECT_EQ(dx, dx_plain);
}

// A 1x1 conv's input gradient taken a group of channels at a time (the fused backward of an
// inverted-residual block) equals the whole one bit for bit: the input channels of a projection's
// gradient by columns, and an expansion's input gradient summed over groups of its output channels.
TEST(Int8Backward, PointwiseInputGradientsByChannelGroupsEqualTheWholeOne) {
  Rng rng(47);
  const Int8ConvShape s{5, 3, 37, 29, 1, 1, 0};  // pixels 15, c_in 37, c_out 29 (primes: uneven groups)
  const int64_t pixels = int64_t{s.h} * s.w;
  const testing::SplitWeight w(rng, random_int8(rng, int64_t{s.c_out} * s.c_in, -127, 127), s.c_out);
  std::vector<float> w_scale(static_cast<size_t>(s.c_out));
  for (float& v : w_scale) v = 0.001f + 0.01f * rng.uniform();
  auto dy = random_floats(rng, pixels * s.c_out);
  for (size_t i = 0; i < dy.size(); i += 3) dy[i] = 0.0f;
  std::vector<float> whole(static_cast<size_t>(pixels * s.c_in));
  cpu::conv2d_input_grad(s, dy.data(), w.split(), w_scale.data(), whole.data());

  for (const int32_t group : {1, 4, 5, 13, 37}) {
    std::vector<float> by_columns(whole.size(), -1.0f), part(static_cast<size_t>(pixels * group), 7.0f);
    for (int32_t c0 = 0; c0 < s.c_in; c0 += group) {
      const int32_t n = std::min(group, s.c_in - c0);
      cpu::pointwise_input_grad_columns(s, dy.data(), w.split(), w_scale.data(), c0, n, part.data());
      for (int64_t px = 0; px < pixels; ++px)
        for (int32_t j = 0; j < n; ++j)
          by_columns[static_cast<size_t>(px * s.c_in + c0 + j)] = part[static_cast<size_t>(px * n + j)];
    }
    EXPECT_EQ(by_columns, whole) << "columns in groups of " << group;

    std::vector<float> summed(whole.size(), 0.0f);
    for (int32_t c0 = 0; c0 < s.c_out; c0 += group) {
      const int32_t n = std::min(group, s.c_out - c0);
      std::vector<float> dy_group(static_cast<size_t>(pixels * n));
      for (int64_t px = 0; px < pixels; ++px)
        for (int32_t j = 0; j < n; ++j)
          dy_group[static_cast<size_t>(px * n + j)] = dy[static_cast<size_t>(px * s.c_out + c0 + j)];
      cpu::pointwise_input_grad_add(s, dy_group.data(), w.assembled.data(), w_scale.data(), c0, n,
                                    summed.data());
    }
    EXPECT_EQ(summed, whole) << "output channels in groups of " << group;
  }
}

TEST(Int8Backward, ColumnMaskClearsTheGroupsMaskedElements) {
  const int64_t pixels = 3, c = 11, n = pixels * c;
  std::vector<int8_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[static_cast<size_t>(i)] = static_cast<int8_t>(i % 4 == 0 ? 0 : 5);
  std::vector<uint8_t> bits(static_cast<size_t>((n + 7) / 8));
  cpu::clamp_mask_bits(y.data(), n, 0, 6, bits.data());
  std::vector<float> whole(static_cast<size_t>(n), 1.5f);
  cpu::apply_mask_bits(bits.data(), n, whole.data());
  const int64_t c0 = 6, count = 4;
  std::vector<float> group(static_cast<size_t>(pixels * count), 1.5f);
  cpu::apply_mask_bits_columns(bits.data(), pixels, c, c0, count, group.data());
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t j = 0; j < count; ++j)
      EXPECT_EQ(group[static_cast<size_t>(p * count + j)], whole[static_cast<size_t>(p * c + c0 + j)])
          << p << "," << j;
}

// The reference's dense gradients are themselves checked against tern's f32 convolution
// backward on the dequantised tensors, so the int8 layouts (NHWC, OHWI) cannot hide a transpose.
TEST(Int8Backward, ReferenceGradientsAgreeWithTheFloatConvolutionBackward) {
  Rng rng(46);
  const Case c{7, 6, 3, 5, 3, 2, 1};
  const Int8ConvShape s{c.h, c.w, c.c_in, c.c_out, c.kernel, c.stride, c.pad};
  const int32_t oh = s.out_h(), ow = s.out_w();
  const auto x = random_int8(rng, int64_t{c.h} * c.w * c.c_in);
  const auto w = random_int8(rng, int64_t{c.c_out} * 9 * c.c_in, -127, 127);
  const auto dy = random_floats(rng, int64_t{oh} * ow * c.c_out);
  const int32_t zx = 4;
  const float sx = 0.05f, sw = 0.01f;
  const std::vector<float> w_scale(static_cast<size_t>(c.c_out), sw);
  std::vector<float> dw(w.size()), dx(x.size());
  ref::int8_conv2d_weight_grad(s, 1, x.data(), zx, sx, dy.data(), dw.data());
  ref::int8_conv2d_input_grad(s, 1, dy.data(), w.data(), w_scale.data(), dx.data());

  // NCHW / OIHW copies.
  std::vector<float> xf(x.size()), wf(w.size()), dyf(dy.size()), dwf(w.size()), dxf(x.size());
  for (int32_t i = 0; i < c.h * c.w; ++i)
    for (int32_t ch = 0; ch < c.c_in; ++ch)
      xf[static_cast<size_t>(ch * c.h * c.w + i)] =
          sx * static_cast<float>(x[static_cast<size_t>(i * c.c_in + ch)] - zx);
  for (int32_t o = 0; o < c.c_out; ++o)
    for (int32_t t = 0; t < 9; ++t)
      for (int32_t ch = 0; ch < c.c_in; ++ch)
        wf[static_cast<size_t>((o * c.c_in + ch) * 9 + t)] =
            sw * w[static_cast<size_t>((o * 9 + t) * c.c_in + ch)];
  for (int32_t p = 0; p < oh * ow; ++p)
    for (int32_t o = 0; o < c.c_out; ++o)
      dyf[static_cast<size_t>(o * oh * ow + p)] = dy[static_cast<size_t>(p * c.c_out + o)];
  const Conv2dShape fs{.n = 1,
                       .c_in = c.c_in,
                       .h = c.h,
                       .w = c.w,
                       .c_out = c.c_out,
                       .kh = 3,
                       .kw = 3,
                       .stride_h = 2,
                       .stride_w = 2,
                       .pad_h = 1,
                       .pad_w = 1,
                       .groups = 1};
  ref::conv2d_backward_weights(fs, xf.data(), dyf.data(), dwf.data(), nullptr);
  ref::conv2d_backward_data(fs, dyf.data(), wf.data(), dxf.data());
  for (int32_t o = 0; o < c.c_out; ++o)
    for (int32_t t = 0; t < 9; ++t)
      for (int32_t ch = 0; ch < c.c_in; ++ch)
        expect_close(dw[static_cast<size_t>((o * 9 + t) * c.c_in + ch)],
                     dwf[static_cast<size_t>((o * c.c_in + ch) * 9 + t)], 1.0f, "dw", static_cast<size_t>(o));
  for (int32_t i = 0; i < c.h * c.w; ++i)
    for (int32_t ch = 0; ch < c.c_in; ++ch)
      expect_close(dx[static_cast<size_t>(i * c.c_in + ch)], dxf[static_cast<size_t>(ch * c.h * c.w + i)],
                   1.0f, "dx", static_cast<size_t>(i));
}

// Sparse update: the gradient rows of the chosen channels go straight into sparse_rows_sgd, which
// updates exactly those rows of the f32 weight as dense SGD would, and leaves the others alone.
TEST(Int8Backward, ChosenChannelGradientsDriveAnInPlaceSparseSgdUpdate) {
  Rng rng(47);
  const Int8ConvShape s{6, 6, 4, 8, 3, 1, 1};
  const int64_t filter = 9 * 4;
  const auto x = random_int8(rng, 6 * 6 * 4);
  const auto dy = random_floats(rng, 6 * 6 * 8);
  std::vector<float> w = random_floats(rng, 8 * filter);
  const std::vector<float> w0 = w;
  std::vector<float> dense(w.size());
  ref::int8_conv2d_weight_grad(s, 1, x.data(), 0, 0.1f, dy.data(), dense.data());
  const std::vector<int32_t> channels = {6, 1, 3};
  std::vector<float> g(3 * filter);
  cpu::conv2d_weight_grad_channels(s, x.data(), 0, 0.1f, dy.data(), channels.data(), 3, g.data());
  cpu::sparse_rows_sgd(w.data(), filter, channels.data(), 3, g.data(), 0.01f, 0.0f);
  for (int32_t o = 0; o < 8; ++o) {
    const bool chosen = std::find(channels.begin(), channels.end(), o) != channels.end();
    for (int64_t i = 0; i < filter; ++i) {
      const size_t at = static_cast<size_t>(o * filter + i);
      if (chosen)
        ASSERT_NEAR(w[at], w0[at] - 0.01f * dense[at], 1e-5f) << o;
      else
        ASSERT_EQ(w[at], w0[at]) << o;
    }
  }
}

TEST(Int8Backward, ClampMaskPassesOnlyUnclampedOutputs) {
  // ReLU6 in int8: act_min = zero point -20, act_max = 100.
  const std::vector<int8_t> y = {-20, -19, 0, 99, 100, -128, 50, -20, 7};
  std::vector<uint8_t> bits(2, 0xff);
  cpu::clamp_mask_bits(y.data(), 9, -20, 100, bits.data());
  std::vector<float> dy(9, 1.0f);
  cpu::apply_mask_bits(bits.data(), 9, dy.data());
  const std::vector<float> want = {0, 1, 1, 1, 0, 0, 1, 0, 1};
  EXPECT_EQ(dy, want);
  EXPECT_EQ(bits[1] & 0xfe, 0);  // bits past n are zero
}

TEST(Int8Backward, ClampMaskMatchesThePerElementRuleAtEverySize) {
  Rng rng(47);
  for (int64_t n : {0, 1, 7, 8, 9, 63, 64, 1001}) {
    const auto y = random_int8(rng, n, -128, 127);
    std::vector<uint8_t> bits(static_cast<size_t>((n + 7) / 8) + 1, 0xab);
    cpu::clamp_mask_bits(y.data(), n, -5, 90, bits.data());
    auto dy = random_floats(rng, n);
    const auto before = dy;
    cpu::apply_mask_bits(bits.data(), n, dy.data());
    for (int64_t i = 0; i < n; ++i) {
      const bool pass = y[static_cast<size_t>(i)] > -5 && y[static_cast<size_t>(i)] < 90;
      ASSERT_EQ((bits[static_cast<size_t>(i >> 3)] >> (i & 7)) & 1, pass ? 1 : 0) << "n=" << n << " i=" << i;
      ASSERT_EQ(dy[static_cast<size_t>(i)], pass ? before[static_cast<size_t>(i)] : 0.0f) << "n=" << n << " i=" << i;
    }
    if (n % 8 != 0) {
      EXPECT_EQ(bits[static_cast<size_t>(n / 8)] >> (n % 8), 0) << "bits past n, n=" << n;
    }
    EXPECT_EQ(bits.back(), 0xab) << "a byte past the mask was written, n=" << n;
  }
}

}  // namespace
}  // namespace tern
