#include "ondevice/quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "models/registry.h"
#include "runtime/kernels/reference/conv.h"
#include "runtime/nn/activation.h"
#include "runtime/nn/conv.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/norm.h"
#include "runtime/nn/pool.h"
#include "runtime/rng.h"

namespace tern::ondevice {
namespace {

Tensor random_images(Rng& rng, int64_t n, int64_t c, int64_t h, int64_t w) {
  Tensor t = Tensor::empty({n, c, h, w});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.normal();
  return t;
}

// Gives a BatchNorm2d non-trivial statistics and affine parameters.
void randomise(BatchNorm2d& bn, Rng& rng) {
  for (int64_t c = 0; c < bn.channels(); ++c) {
    bn.weight.value.f32()[c] = 0.5f + rng.uniform();
    bn.bias.value.f32()[c] = rng.normal() * 0.3f;
    bn.running_mean.value.f32()[c] = rng.normal() * 0.2f;
    bn.running_var.value.f32()[c] = 0.2f + rng.uniform();
  }
}

// Moves every BatchNorm2d's running statistics most of the way to the batch statistics of the
// first 8 images of `x` (15 training-mode forwards with momentum 0.1: 0.9^15 = 21% of the initial
// statistics left), so an untrained net has normalised, non-vanishing activations.
void settle_batch_norm(Sequential& net, const Tensor& x) {
  net.train();
  for (int i = 0; i < 15; ++i) net.forward(x.slice(0, std::min<int64_t>(8, x.dim(0))));
  net.eval();
}

TEST(Quantize, BatchNormAffineIsWhatTheLayerComputes) {
  Rng rng(51);
  BatchNorm2d bn(6);
  randomise(bn, rng);
  bn.eval();
  const ChannelAffine a = batch_norm_affine(bn);
  EXPECT_TRUE(bn.training() == false);
  const Tensor x = random_images(rng, 3, 6, 4, 5);
  const Tensor y = bn.forward(x);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const size_t c = static_cast<size_t>((i / 20) % 6);
    ASSERT_NEAR(y.f32()[i], a.scale[c] * x.f32()[i] + a.shift[c], 1e-5f) << i;
  }
  // The affine also follows from the statistics with BatchNorm's default eps.
  for (int64_t c = 0; c < 6; ++c) {
    const double scale = bn.weight.value.f32()[c] / std::sqrt(bn.running_var.value.f32()[c] + 1e-5);
    EXPECT_NEAR(a.scale[static_cast<size_t>(c)], scale, 1e-5 * std::fabs(scale));
  }
}

TEST(Quantize, FoldedConvolutionEqualsConvolutionThenBatchNorm) {
  Rng rng(52);
  Conv2d conv(3, 5, 3, rng, 1, 1, 1, /*bias=*/true);
  for (int64_t i = 0; i < 5; ++i) conv.bias.value.f32()[i] = rng.normal();
  BatchNorm2d bn(5);
  randomise(bn, rng);
  conv.eval();
  bn.eval();
  const Tensor x = random_images(rng, 2, 3, 6, 6);
  const Tensor want = bn.forward(conv.forward(x));

  std::vector<float> w(conv.weight.value.f32(), conv.weight.value.f32() + conv.weight.value.numel());
  std::vector<float> b(conv.bias.value.f32(), conv.bias.value.f32() + 5);
  fold_affine(batch_norm_affine(bn), w, b);
  const Conv2dShape s{.n = 2,
                      .c_in = 3,
                      .h = 6,
                      .w = 6,
                      .c_out = 5,
                      .kh = 3,
                      .kw = 3,
                      .stride_h = 1,
                      .stride_w = 1,
                      .pad_h = 1,
                      .pad_w = 1,
                      .groups = 1};
  std::vector<float> got(static_cast<size_t>(want.numel()));
  ref::conv2d_forward(s, x.f32(), w.data(), b.data(), got.data());
  for (int64_t i = 0; i < want.numel(); ++i)
    ASSERT_NEAR(got[static_cast<size_t>(i)], want.f32()[i], 1e-4f) << i;
}

TEST(Quantize, RangeQuantRepresentsZeroExactlyAndCoversTheRange) {
  Rng rng(53);
  for (int i = 0; i < 1000; ++i) {
    const float lo = rng.uniform(-10.0f, 3.0f), hi = lo + rng.uniform(0.01f, 10.0f);
    const RangeQuant q = range_quant(lo, hi);
    const QuantTensor t{.scale = q.scale, .zero_point = q.zero_point};
    ASSERT_EQ(t.dequantize(t.quantize(0.0f)), 0.0f);  // zero padding is exact
    const float wlo = std::min(lo, 0.0f), whi = std::max(hi, 0.0f);
    ASSERT_NEAR(q.scale, (whi - wlo) / 255.0f, 1e-6f);
    // Both ends are representable to within one step (the zero point's rounding shifts the grid).
    ASSERT_LE(std::fabs(t.dequantize(t.quantize(wlo)) - wlo), q.scale * 1.0001f);
    ASSERT_LE(std::fabs(t.dequantize(t.quantize(whi)) - whi), q.scale * 1.0001f);
  }
  EXPECT_EQ(range_quant(0.0f, 6.0f).zero_point, -128);  // after ReLU: the whole range is positive
}

TEST(Quantize, MseCalibrationClipsARareOutlierButNotABroadRange) {
  // Ten million N(0, 1) values (as expected bin counts) and one at 40. Min-max spends most of the
  // int8 grid on the outlier; clipping it costs (40 - ~5)^2 once but shrinks the rounding error
  // (step^2 / 12) of every other value by more than that.
  const float lo = -5.0f, hi = 40.0f;
  const int bins = 2048;
  const double width = (hi - lo) / bins;
  std::vector<double> hist(bins, 0.0);
  for (int b = 0; b < bins; ++b) {
    const double v = lo + (b + 0.5) * width;
    hist[static_cast<size_t>(b)] = 1e7 * width * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI);
  }
  hist[bins - 1] += 1;
  const RangeQuant minmax = range_quant(lo, hi), mse = mse_range_quant(hist, lo, hi);
  EXPECT_LT(mse.scale, 0.5f * minmax.scale);
  // The upper end was clipped, the lower one (the Gaussian's own tail) about kept.
  const QuantTensor t{.scale = mse.scale, .zero_point = mse.zero_point};
  EXPECT_LT(t.dequantize(127), 10.0f);
  EXPECT_LT(t.dequantize(-128), -3.5f);
  // A uniform spread has nothing worth clipping: the MSE range stays (nearly) the full one.
  std::vector<double> flat(bins, 1.0);
  EXPECT_GT(mse_range_quant(flat, -1.0f, 1.0f).scale, 0.95f * range_quant(-1.0f, 1.0f).scale);
}

TEST(Quantize, PerChannelWeightsAreSymmetricAndUseTheFullRange) {
  Rng rng(55);
  std::vector<float> w(4 * 30);
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = rng.normal() * static_cast<float>(1 + i / 30);  // scales differ by row
  std::fill(w.begin() + 90, w.end(), 0.0f);                // an all-zero row
  std::vector<int8_t> q;
  std::vector<float> s;
  quantize_weights_per_channel(w, 4, q, s);
  for (size_t o = 0; o < 3; ++o) {
    int m = 0;
    for (size_t i = 0; i < 30; ++i) {
      m = std::max(m, std::abs(int{q[o * 30 + i]}));
      ASSERT_LE(std::fabs(s[o] * q[o * 30 + i] - w[o * 30 + i]), 0.5f * s[o] * 1.0001f);
    }
    EXPECT_EQ(m, 127) << o;
  }
  EXPECT_EQ(s[3], 1.0f);
  for (size_t i = 90; i < 120; ++i) EXPECT_EQ(q[i], 0);
}

TEST(Quantize, RefusesUnsupportedLayersNamingThem) {
  Rng rng(56);
  const Tensor x = random_images(rng, 4, 4, 8, 8);
  auto expect_refused = [&](Sequential& net, const std::string& part) {
    try {
      quantize_model(net, x);
      ADD_FAILURE() << "converted " << net.describe();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  Sequential a;
  a.emplace<Conv2d>(4, 4, 3, rng, 1, 1);
  a.emplace<GroupNorm>(2, 4);
  expect_refused(a, "GroupNorm(2, 4)");
  Sequential b;
  b.emplace<BatchNorm2d>(4);
  expect_refused(b, "must directly follow a Conv2d");
  Sequential c;
  c.emplace<Conv2d>(4, 8, 3, rng, 1, 1, /*groups=*/2);
  expect_refused(c, "grouped");
  Sequential d;
  d.emplace<Conv2d>(4, 4, 1, rng);
  d.emplace<HSwish>();
  expect_refused(d, "HSwish");
  Sequential e;
  auto body = std::make_unique<Sequential>();
  body->emplace<Conv2d>(4, 4, 1, rng);
  auto shortcut = std::make_unique<Sequential>();
  shortcut->emplace<Conv2d>(4, 4, 1, rng);
  e.add(std::make_unique<Residual>(std::move(body), std::move(shortcut), false));
  expect_refused(e, "identity shortcut");
}

TEST(Quantize, CnnBecomesFusedOpsAndKeepsItsMode) {
  ModelConfig cfg;
  auto net = make_cnn(cfg);
  Rng rng(57);
  const Tensor x = random_images(rng, 32, 1, 28, 28);
  settle_batch_norm(*net, x);
  net->train();
  const QuantizedModel q = quantize_model(*net, x);
  EXPECT_TRUE(net->training());
  std::vector<std::string> kinds;
  for (const QuantOp& op : q.ops) kinds.push_back(op_kind_name(op.kind));
  EXPECT_EQ(kinds,
            (std::vector<std::string>{"conv2d", "max_pool", "conv2d", "max_pool", "linear", "linear"}));
  EXPECT_EQ(q.ops[0].activation, Activation::relu);
  EXPECT_EQ(q.ops[4].activation, Activation::relu);
  EXPECT_EQ(q.ops[5].activation, Activation::none);
  EXPECT_EQ(q.ops[0].name, "0");
  EXPECT_EQ(q.ops[5].name, "11");
  EXPECT_EQ(q.num_classes(), 10);
  EXPECT_EQ(q.tensors[static_cast<size_t>(q.ops[4].input)].numel(), 64 * 7 * 7);
  // A ReLU output's range starts at zero: its zero point is the int8 minimum.
  EXPECT_EQ(q.tensors[static_cast<size_t>(q.ops[0].output)].zero_point, -128);
}

// The int8 forward against the f32 model on inputs from the calibration distribution: logits
// close and the same prediction for nearly every input. Measured on this seed for MobileNetV2
// (65 int8 ops): worst logit error 1.0-1.2% of the largest logit (min-max, MSE), agreement 100%;
// the bounds leave 3x margin. A broken layout, fold or requantisation gives errors of the order
// of the logits themselves.
void expect_int8_close(Sequential& net, const Tensor& calib, const Tensor& eval, Calibration calibration,
                       double max_rel_error, double min_agreement) {
  QuantizeOptions opt;
  opt.calibration = calibration;
  const QuantizedModel q = quantize_model(net, calib, opt);
  net.eval();
  const Tensor f = net.forward(eval);
  const int64_t n = eval.dim(0), k = f.dim(1), per = eval.numel() / n;
  double worst = 0, range = 0;
  int agree = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<float> logits = q.forward(eval.f32() + i * per);
    const float* want = f.f32() + i * k;
    int64_t a = 0, b = 0;
    for (int64_t j = 0; j < k; ++j) {
      worst = std::max(worst, static_cast<double>(std::fabs(logits[static_cast<size_t>(j)] - want[j])));
      range = std::max(range, static_cast<double>(std::fabs(want[j])));
      if (logits[static_cast<size_t>(j)] > logits[static_cast<size_t>(a)]) a = j;
      if (want[j] > want[b]) b = j;
    }
    agree += a == b;
  }
  const double agreement = static_cast<double>(agree) / static_cast<double>(n);
  std::printf("[ int8 %-6s] agreement %.4f  max |logit error| %.4f of max |logit| %.4f\n",
              calibration_name(calibration), agreement, worst, range);
  ::testing::Test::RecordProperty("max_logit_error", std::to_string(worst));
  ::testing::Test::RecordProperty("agreement", std::to_string(agreement));
  EXPECT_LE(worst, max_rel_error * range) << "max |logit| " << range;
  EXPECT_GE(agreement, min_agreement);
}

TEST(Quantize, MobileNetV2Int8ForwardTracksTheFloatModel) {
  ModelConfig cfg;
  cfg.width_mult = 0.35f;
  auto net = make_mobilenetv2(cfg);
  Rng rng(58);
  const Tensor calib = random_images(rng, 32, 1, 28, 28);
  settle_batch_norm(*net, calib);
  const QuantizedModel q = quantize_model(*net, calib);
  int depthwise = 0, adds = 0;
  for (const QuantOp& op : q.ops) {
    depthwise += op.kind == QuantOpKind::depthwise_conv2d;
    adds += op.kind == QuantOpKind::add;
  }
  EXPECT_EQ(depthwise, 17);      // one per inverted-residual block
  EXPECT_EQ(adds, 11);           // the blocks with stride 1 and equal channels
  EXPECT_EQ(q.ops.size(), 65u);  // stem, 17 blocks (2 or 3 convs, maybe an add), head conv, pool, linear
  const Tensor eval = random_images(rng, 32, 1, 28, 28);
  expect_int8_close(*net, calib, eval, Calibration::min_max, 0.03, 0.95);
  expect_int8_close(*net, calib, eval, Calibration::mse, 0.03, 0.95);
}

// The CNN's Flatten feeds an NCHW-ordered Linear from an NHWC int8 tensor: the converter permutes
// the weight columns, and a wrong permutation would scramble the logits. Measured: worst logit
// error 1.8% of the largest logit, agreement 31 of 32 (an untrained net's logits lie close).
TEST(Quantize, CnnInt8ForwardTracksTheFloatModel) {
  ModelConfig cfg;
  auto net = make_cnn(cfg);
  Rng rng(59);
  const Tensor calib = random_images(rng, 32, 1, 28, 28);
  settle_batch_norm(*net, calib);
  expect_int8_close(*net, calib, random_images(rng, 32, 1, 28, 28), Calibration::min_max, 0.05, 0.90);
}

}  // namespace
}  // namespace tern::ondevice
