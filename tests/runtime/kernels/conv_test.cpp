#include "runtime/kernels/cpu/conv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/kernels/reference/conv.h"
#include "runtime/rng.h"

namespace tern {
namespace {

using cpu::Conv2dLayout;
using cpu::Conv2dPlan;

Conv2dShape conv_shape(int64_t n, int64_t c_in, int64_t h, int64_t w, int64_t c_out, int64_t k,
                       int64_t stride, int64_t pad, int64_t groups = 1) {
  return Conv2dShape{.n = n,
                     .c_in = c_in,
                     .h = h,
                     .w = w,
                     .c_out = c_out,
                     .kh = k,
                     .kw = k,
                     .stride_h = stride,
                     .stride_w = stride,
                     .pad_h = pad,
                     .pad_w = pad,
                     .groups = groups};
}

std::vector<float> random_vector(int64_t n, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

// Outputs start as NaN so that a kernel that accumulates instead of overwriting, or skips an
// element, cannot pass.
std::vector<float> nan_vector(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}

// Sums of k products of values in [-1, 1], accumulated in f32 in some order: the rounding error
// grows like sqrt(k) * eps * (partial sums of size ~sqrt(k)). Measured errors sit 15-40x below
// this bound at k = 10 .. 50 000.
void expect_all_near(const std::vector<float>& got, const std::vector<float>& want, int64_t k,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  const double tol = 1e-5 * std::sqrt(static_cast<double>(k) + 1.0) *
                     std::max(1.0, std::sqrt(static_cast<double>(k)) / 32.0);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol) << what << "[" << i << "], k=" << k;
}

struct ConvCase {
  std::string name;
  Conv2dShape shape;
  Conv2dLayout layout = Conv2dLayout::automatic;
};

std::string layout_name(Conv2dLayout l) {
  return l == Conv2dLayout::automatic ? "auto" : l == Conv2dLayout::blocked ? "blocked" : "plain";
}

class Conv2dPlanMatchesReference : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dPlanMatchesReference, ForwardBackwardDataAndWeights) {
  const Conv2dShape s = GetParam().shape;
  Rng rng(static_cast<uint64_t>(s.x_numel() * 31 + s.w_numel()));
  const auto x = random_vector(s.x_numel(), rng), w = random_vector(s.w_numel(), rng),
             b = random_vector(s.c_out, rng), dy = random_vector(s.y_numel(), rng);
  const int64_t k_fwd = (s.c_in / s.groups) * s.kh * s.kw + 1;
  const int64_t k_data = (s.c_out / s.groups) * s.kh * s.kw;
  const int64_t k_weights = s.n * s.out_h() * s.out_w();

  Conv2dPlan plan(s, GetParam().layout);

  auto y = nan_vector(s.y_numel()), y_ref = y;
  plan.forward(x.data(), w.data(), b.data(), y.data());
  ref::conv2d_forward(s, x.data(), w.data(), b.data(), y_ref.data());
  expect_all_near(y, y_ref, k_fwd, "y");

  auto y_nobias = nan_vector(s.y_numel()), y_nobias_ref = y_nobias;
  plan.forward(x.data(), w.data(), nullptr, y_nobias.data());
  ref::conv2d_forward(s, x.data(), w.data(), nullptr, y_nobias_ref.data());
  expect_all_near(y_nobias, y_nobias_ref, k_fwd, "y without bias");

  auto dx = nan_vector(s.x_numel()), dx_ref = dx;
  plan.backward_data(dy.data(), w.data(), dx.data());
  ref::conv2d_backward_data(s, dy.data(), w.data(), dx_ref.data());
  expect_all_near(dx, dx_ref, k_data, "dx");

  auto dw = nan_vector(s.w_numel()), dw_ref = dw, db = nan_vector(s.c_out), db_ref = db;
  plan.backward_weights(x.data(), dy.data(), dw.data(), db.data());
  ref::conv2d_backward_weights(s, x.data(), dy.data(), dw_ref.data(), db_ref.data());
  expect_all_near(dw, dw_ref, k_weights, "dw");
  expect_all_near(db, db_ref, k_weights, "dbias");

  // The combined call computes exactly what the two separate ones do.
  auto dx2 = nan_vector(s.x_numel()), dw2 = nan_vector(s.w_numel()), db2 = nan_vector(s.c_out);
  plan.backward(x.data(), dy.data(), w.data(), dx2.data(), dw2.data(), db2.data());
  EXPECT_EQ(dx2, dx);
  EXPECT_EQ(dw2, dw);
  EXPECT_EQ(db2, db);

  auto dw3 = nan_vector(s.w_numel());
  plan.backward_weights(x.data(), dy.data(), dw3.data(), nullptr);
  EXPECT_EQ(dw3, dw) << "a null bias gradient leaves the weight gradient unchanged";
}

std::vector<ConvCase> cases() {
  std::vector<ConvCase> small = {
      {"OneByOne", conv_shape(2, 5, 6, 6, 7, 1, 1, 0)},
      {"PointwiseManyPixels", conv_shape(2, 40, 9, 9, 36, 1, 1, 0)},
      {"PointwiseNarrow", conv_shape(2, 16, 8, 8, 24, 1, 1, 0)},
      {"ThreeByThreePad1", conv_shape(3, 4, 9, 9, 6, 3, 1, 1)},
      {"Stride2Pad1", conv_shape(2, 6, 11, 11, 5, 3, 2, 1)},
      {"Stride2NoPadOddSize", conv_shape(1, 3, 8, 7, 4, 3, 2, 0)},
      {"OddImage7x5", conv_shape(3, 3, 7, 5, 4, 3, 1, 1)},
      {"KernelCoversPaddedImage", conv_shape(1, 2, 3, 3, 3, 5, 1, 1)},
      {"SingleInputChannel5x5", conv_shape(1, 1, 13, 13, 8, 5, 1, 2)},
      {"ChannelsNotMultiplesOf16", conv_shape(2, 20, 9, 9, 24, 3, 2, 1)},
      {"Groups2", conv_shape(2, 8, 10, 10, 6, 3, 1, 1, 2)},
      {"Groups4Stride2", conv_shape(1, 12, 9, 9, 8, 3, 2, 1, 4)},
      {"Depthwise", conv_shape(2, 16, 12, 12, 16, 3, 1, 1, 16)},
      {"DepthwiseOddChannels", conv_shape(3, 3, 7, 5, 3, 3, 2, 1, 3)},
  };
  Conv2dShape rect = conv_shape(2, 3, 7, 5, 4, 3, 1, 0);
  rect.kw = 2;
  rect.stride_w = 2;
  rect.pad_h = 1;
  small.push_back({"RectangularKernelAndStride", rect});

  std::vector<ConvCase> all;
  for (Conv2dLayout layout : {Conv2dLayout::automatic, Conv2dLayout::blocked, Conv2dLayout::plain}) {
    for (ConvCase c : small) {
      c.name.append("_").append(layout_name(layout));
      c.layout = layout;
      all.push_back(c);
    }
  }
  // The shapes the benchmarks train, at their batch size.
  all.push_back({"CnnConv1", conv_shape(64, 1, 28, 28, 32, 3, 1, 1)});
  all.push_back({"CnnConv2", conv_shape(64, 32, 14, 14, 64, 3, 1, 1)});
  all.push_back({"ResNetBlock", conv_shape(8, 16, 32, 32, 16, 3, 1, 1)});
  all.push_back({"ResNetDownsample", conv_shape(8, 16, 32, 32, 32, 3, 2, 1)});
  return all;
}

INSTANTIATE_TEST_SUITE_P(Shapes, Conv2dPlanMatchesReference, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(Conv2dPlan, ReusedPlanGivesFreshResultsForNewInputs) {
  const Conv2dShape s = conv_shape(2, 16, 8, 8, 16, 3, 1, 1);
  Conv2dPlan plan(s);
  Rng rng(7);
  for (int round = 0; round < 3; ++round) {
    const auto x = random_vector(s.x_numel(), rng), w = random_vector(s.w_numel(), rng),
               dy = random_vector(s.y_numel(), rng);
    auto y = nan_vector(s.y_numel()), y_ref = y, dw = nan_vector(s.w_numel()), dw_ref = dw;
    plan.forward(x.data(), w.data(), nullptr, y.data());
    ref::conv2d_forward(s, x.data(), w.data(), nullptr, y_ref.data());
    expect_all_near(y, y_ref, 16 * 9, "y");
    plan.backward_weights(x.data(), dy.data(), dw.data(), nullptr);
    ref::conv2d_backward_weights(s, x.data(), dy.data(), dw_ref.data(), nullptr);
    expect_all_near(dw, dw_ref, 2 * 64, "dw");
  }
}

TEST(Conv2dPlan, RejectsInvalidShapesWithAnError) {
  EXPECT_THROW(Conv2dPlan(conv_shape(1, 6, 8, 8, 4, 3, 1, 1, 4)), Error);  // 4 does not divide 6
  EXPECT_THROW(Conv2dPlan(conv_shape(1, 2, 2, 2, 4, 5, 1, 1)), Error);     // kernel > padded image
  EXPECT_THROW(Conv2dPlan(conv_shape(1, 2, 8, 8, 4, 3, 0, 1)), Error);     // stride 0
  EXPECT_THROW(Conv2dPlan(conv_shape(0, 2, 8, 8, 4, 3, 1, 1)), Error);     // empty batch
}

TEST(Conv2dShape, OutputSizeFloorsLikePyTorch) {
  EXPECT_EQ(conv_shape(1, 1, 28, 28, 1, 3, 1, 1).out_h(), 28);
  EXPECT_EQ(conv_shape(1, 1, 32, 32, 1, 3, 2, 1).out_h(), 16);
  EXPECT_EQ(conv_shape(1, 1, 8, 8, 1, 1, 2, 0).out_w(), 4);
  EXPECT_EQ(conv_shape(1, 1, 7, 7, 1, 3, 2, 0).out_w(), 3);
}

}  // namespace
}  // namespace tern
