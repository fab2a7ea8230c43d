#include "runtime/nn/conv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/kernels/reference/conv.h"
#include "tests/support/gradcheck.h"

namespace tern {
namespace {

using testing::check_gradients;
using testing::random_tensor;

TEST(Conv2d, GradientsMatchFiniteDifferences) {
  Rng rng(1);
  Conv2d conv(3, 4, 3, rng, /*stride=*/1, /*padding=*/1);
  conv.bias.value.copy_from(random_tensor({4}, 2));
  check_gradients(conv, random_tensor({2, 3, 6, 5}, 3));
}

TEST(Conv2d, Stride2WithPaddingGradientsMatchFiniteDifferences) {
  Rng rng(2);
  Conv2d conv(4, 6, 3, rng, /*stride=*/2, /*padding=*/1);
  conv.bias.value.copy_from(random_tensor({6}, 4));
  check_gradients(conv, random_tensor({2, 4, 7, 8}, 5));
}

TEST(Conv2d, DepthwiseGradientsMatchFiniteDifferences) {
  Rng rng(3);
  Conv2d conv(8, 8, 3, rng, /*stride=*/1, /*padding=*/1, /*groups=*/8);
  conv.bias.value.copy_from(random_tensor({8}, 6));
  check_gradients(conv, random_tensor({2, 8, 5, 5}, 7));
}

TEST(Conv2d, GroupedGradientsMatchFiniteDifferences) {
  Rng rng(4);
  Conv2d conv(4, 6, 1, rng, /*stride=*/1, /*padding=*/0, /*groups=*/2);
  check_gradients(conv, random_tensor({3, 4, 3, 4}, 8));
}

TEST(Conv2d, WithoutBiasHasOnlyWeightAndItsGradientsMatch) {
  Rng rng(5);
  Conv2d conv(2, 3, 3, rng, /*stride=*/1, /*padding=*/0, /*groups=*/1, /*bias=*/false);
  ASSERT_EQ(conv.params().size(), 1u);
  EXPECT_EQ(conv.params()[0]->name, "weight");
  check_gradients(conv, random_tensor({2, 2, 5, 5}, 9));
}

TEST(Conv2d, ParamsHaveTheDocumentedShapesAndDecay) {
  Rng rng(6);
  Conv2d conv(8, 16, 3, rng, 1, 1, /*groups=*/2);
  const auto ps = conv.params();
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0]->name, "weight");
  EXPECT_EQ(ps[0]->value.shape(), (Shape{16, 4, 3, 3}));
  EXPECT_TRUE(ps[0]->decay);
  EXPECT_EQ(ps[1]->name, "bias");
  EXPECT_EQ(ps[1]->value.shape(), (Shape{16}));
  EXPECT_FALSE(ps[1]->decay);
  for (int64_t i = 0; i < 16; ++i) EXPECT_EQ(ps[1]->value.f32()[i], 0.0f);
}

TEST(Conv2d, WeightsAreUniformAtPyTorchScaleDrawnInRowMajorOrder) {
  Rng rng(7), replay(7);
  Conv2d conv(6, 10, 3, rng, 1, 1, /*groups=*/2);
  const float bound = 1.0f / std::sqrt(3.0f * 3 * 3);  // fan_in = in/groups * k * k
  const float* w = conv.weight.value.f32();
  float max_abs = 0;
  for (int64_t i = 0; i < conv.weight.value.numel(); ++i) {
    ASSERT_EQ(w[i], replay.uniform(-bound, bound)) << i;
    max_abs = std::max(max_abs, std::fabs(w[i]));
  }
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.8f * bound) << "draws should spread over the whole range";
}

TEST(Conv2d, BackwardAccumulatesIntoGrads) {
  Rng rng(8);
  Conv2d conv(3, 4, 3, rng, 1, 1);
  Tensor x = random_tensor({2, 3, 5, 5}, 10), dy = random_tensor({2, 4, 5, 5}, 11);
  conv.forward(x);
  conv.backward(dy);
  Tensor w_once = conv.weight.grad.clone(), b_once = conv.bias.grad.clone();
  conv.forward(x);
  conv.backward(dy);
  for (int64_t i = 0; i < w_once.numel(); ++i)
    EXPECT_FLOAT_EQ(conv.weight.grad.f32()[i], 2 * w_once.f32()[i]);
  for (int64_t i = 0; i < b_once.numel(); ++i) EXPECT_FLOAT_EQ(conv.bias.grad.f32()[i], 2 * b_once.f32()[i]);
}

// Training and evaluation batches alternate; each shape must get its own, correct plan, and the
// backward pass must use the plan of the forward it follows.
TEST(Conv2d, AlternatingBatchSizesMatchTheReference) {
  Rng rng(9);
  Conv2d conv(4, 8, 3, rng, /*stride=*/2, /*padding=*/1);
  conv.bias.value.copy_from(random_tensor({8}, 12));
  for (int64_t n : {5, 2, 5, 1, 3, 7, 5}) {
    Tensor x = random_tensor({n, 4, 9, 7}, 13 + n);
    Tensor y = conv.forward(x);
    ASSERT_EQ(y.shape(), (Shape{n, 8, 5, 4}));
    const Conv2dShape s{.n = n,
                        .c_in = 4,
                        .h = 9,
                        .w = 7,
                        .c_out = 8,
                        .kh = 3,
                        .kw = 3,
                        .stride_h = 2,
                        .stride_w = 2,
                        .pad_h = 1,
                        .pad_w = 1,
                        .groups = 1};
    std::vector<float> want(static_cast<size_t>(y.numel()));
    ref::conv2d_forward(s, x.f32(), conv.weight.value.f32(), conv.bias.value.f32(), want.data());
    for (int64_t i = 0; i < y.numel(); ++i) ASSERT_NEAR(y.f32()[i], want[i], 1e-4f) << n << ":" << i;
    Tensor dy = random_tensor(y.shape(), 20 + n);
    Tensor dx = conv.backward(dy);
    std::vector<float> dx_want(static_cast<size_t>(x.numel()));
    ref::conv2d_backward_data(s, dy.f32(), conv.weight.value.f32(), dx_want.data());
    for (int64_t i = 0; i < dx.numel(); ++i) ASSERT_NEAR(dx.f32()[i], dx_want[i], 1e-4f) << n << ":" << i;
  }
}

TEST(Conv2d, DescribeNamesChannelsKernelStridePaddingAndGroups) {
  Rng rng(10);
  EXPECT_EQ(Conv2d(1, 32, 3, rng, 1, 1).describe(), "Conv2d(1->32, k=3, s=1, p=1)");
  EXPECT_EQ(Conv2d(16, 16, 3, rng, 2, 1, 16, false).describe(), "Conv2d(16->16, k=3, s=2, p=1, g=16)");
}

TEST(Conv2d, RejectsWrongInputChannelsWithTheExpectedShape) {
  Rng rng(11);
  Conv2d conv(3, 4, 3, rng);
  try {
    conv.forward(Tensor::zeros({2, 5, 8, 8}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected f32 input [N, 3, H, W]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(conv.forward(Tensor::zeros({2, 3, 8})), Error);
  EXPECT_THROW(conv.forward(Tensor::zeros({2, 3, 2, 8})), Error);  // 2 rows < 3x3 kernel
}

TEST(Conv2d, RejectsGroupsThatDoNotDivideTheChannels) {
  Rng rng(12);
  EXPECT_THROW(Conv2d(6, 4, 3, rng, 1, 1, /*groups=*/4), Error);
}

TEST(Conv2d, RejectsGradientOfTheWrongShape) {
  Rng rng(13);
  Conv2d conv(2, 3, 3, rng, 1, 1);
  conv.forward(random_tensor({2, 2, 4, 4}, 1));
  EXPECT_THROW(conv.backward(Tensor::zeros({2, 3, 3, 3})), Error);
}

}  // namespace
}  // namespace tern
