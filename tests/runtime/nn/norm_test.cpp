#include "runtime/nn/norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tests/support/gradcheck.h"

namespace tern {
namespace {

using testing::check_gradients;
using testing::random_tensor;

// A non-identity affine, so gradient checks see gamma and beta at work.
template <typename Norm>
void randomise_affine(Norm& m, uint64_t seed) {
  m.weight.value.copy_from(random_tensor(m.weight.value.shape(), seed, 0.5f, 1.5f));
  m.bias.value.copy_from(random_tensor(m.bias.value.shape(), seed + 1));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(BatchNorm2d, DescribesItselfAndRegistersAffineParamsAndRunningStats) {
  BatchNorm2d bn(32);
  EXPECT_EQ(bn.describe(), "BatchNorm2d(32)");
  const auto params = bn.params();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0]->name, "weight");
  EXPECT_EQ(params[1]->name, "bias");
  for (Param* p : params) EXPECT_FALSE(p->decay) << p->name;
  const auto buffers = bn.buffers();
  ASSERT_EQ(buffers.size(), 2u);
  EXPECT_EQ(buffers[0]->name, "running_mean");
  EXPECT_EQ(buffers[1]->name, "running_var");
  for (int64_t c = 0; c < 32; ++c) {
    EXPECT_EQ(bn.weight.value.f32()[c], 1.0f);
    EXPECT_EQ(bn.bias.value.f32()[c], 0.0f);
    EXPECT_EQ(bn.running_mean.value.f32()[c], 0.0f);
    EXPECT_EQ(bn.running_var.value.f32()[c], 1.0f);
  }
}

TEST(BatchNorm2d, TrainingOutputHasZeroMeanAndUnitVariancePerChannel) {
  BatchNorm2d bn(3);
  Tensor x = random_tensor({4, 3, 5, 5}, 1, -2.0f, 6.0f);
  Tensor y = bn.forward(x);
  for (int64_t c = 0; c < 3; ++c) {
    double s = 0, sq = 0;
    for (int64_t n = 0; n < 4; ++n)
      for (int64_t i = 0; i < 25; ++i) {
        const double v = y.f32()[(n * 3 + c) * 25 + i];
        s += v;
        sq += v * v;
      }
    EXPECT_NEAR(s / 100, 0.0, 1e-5) << c;
    EXPECT_NEAR(sq / 100, 1.0, 1e-3) << c;  // eps = 1e-5 shrinks it by about eps / var
  }
}

TEST(BatchNorm2d, TrainingUpdatesRunningStatsAndEvalLeavesThemAlone) {
  BatchNorm2d bn(2, /*momentum=*/0.5f);
  // Channel 0 holds 0, 2 (mean 1, unbiased var 2); channel 1 holds 4, 4.
  Tensor x = Tensor::from({2, 2}, {0, 4, 2, 4});
  bn.forward(x);
  EXPECT_FLOAT_EQ(bn.running_mean.value.f32()[0], 0.5f);
  EXPECT_FLOAT_EQ(bn.running_mean.value.f32()[1], 2.0f);
  EXPECT_FLOAT_EQ(bn.running_var.value.f32()[0], 1.5f);
  EXPECT_FLOAT_EQ(bn.running_var.value.f32()[1], 0.5f);
  bn.eval();
  bn.forward(x);
  EXPECT_FLOAT_EQ(bn.running_mean.value.f32()[0], 0.5f);
  EXPECT_FLOAT_EQ(bn.running_var.value.f32()[0], 1.5f);
}

TEST(BatchNorm2d, EvalUsesRunningStatsSoSwitchingModeChangesTheOutput) {
  BatchNorm2d bn(2);
  Tensor x = random_tensor({3, 2, 4, 4}, 2, 1.0f, 3.0f);
  Tensor train_y = bn.forward(x);
  bn.eval();
  Tensor eval_y = bn.forward(x);
  const float* rm = bn.running_mean.value.f32();
  const float* rv = bn.running_var.value.f32();
  double max_diff = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / 16) % 2;
    const double want = (x.f32()[i] - rm[c]) / std::sqrt(rv[c] + 1e-5);
    EXPECT_NEAR(eval_y.f32()[i], want, 1e-5) << i;
    max_diff = std::max(max_diff, std::fabs(double(eval_y.f32()[i]) - train_y.f32()[i]));
  }
  EXPECT_GT(max_diff, 0.5);
  bn.train();
  Tensor again = bn.forward(x);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_NEAR(again.f32()[i], train_y.f32()[i], 1e-6);
}

TEST(BatchNorm2d, GradientsMatchFiniteDifferencesInTraining) {
  BatchNorm2d bn(3);
  randomise_affine(bn, 10);
  check_gradients(bn, random_tensor({2, 3, 3, 5}, 11, -1.0f, 2.0f));
}

TEST(BatchNorm2d, GradientsMatchFiniteDifferencesInTrainingOnMatrices) {
  BatchNorm2d bn(5);
  randomise_affine(bn, 12);
  check_gradients(bn, random_tensor({4, 5}, 13));
}

TEST(BatchNorm2d, GradientsMatchFiniteDifferencesInEval) {
  BatchNorm2d bn(3);
  randomise_affine(bn, 14);
  bn.running_mean.value.copy_from(random_tensor({3}, 15));
  bn.running_var.value.copy_from(random_tensor({3}, 16, 0.5f, 2.0f));
  bn.eval();
  check_gradients(bn, random_tensor({2, 3, 3, 5}, 17));
}

TEST(BatchNorm2d, BackwardAccumulatesIntoParamGrads) {
  BatchNorm2d bn(2);
  Tensor x = random_tensor({3, 2, 2, 2}, 18);
  Tensor dy = random_tensor({3, 2, 2, 2}, 19);
  bn.forward(x);
  bn.backward(dy);
  Tensor once = bn.weight.grad.clone();
  bn.backward(dy);
  for (int64_t c = 0; c < 2; ++c) {
    EXPECT_NE(once.f32()[c], 0.0f);
    EXPECT_FLOAT_EQ(bn.weight.grad.f32()[c], 2 * once.f32()[c]);
  }
}

TEST(BatchNorm2d, RejectsOneValuePerChannelWhenTraining) {
  BatchNorm2d bn(4);
  const std::string msg = error_of([&] { bn.forward(Tensor::zeros({1, 4})); });
  EXPECT_NE(msg.find("BatchNorm2d(4)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("more than 1 value per channel"), std::string::npos) << msg;
  EXPECT_THROW(bn.forward(Tensor::zeros({1, 4, 1, 1})), Error);
  bn.eval();
  EXPECT_NO_THROW(bn.forward(Tensor::zeros({1, 4})));
}

TEST(BatchNorm2d, RejectsInputsOfTheWrongShape) {
  BatchNorm2d bn(3);
  const std::string msg = error_of([&] { bn.forward(Tensor::zeros({2, 4, 5, 5})); });
  EXPECT_NE(msg.find("BatchNorm2d(3)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 4, 5, 5]"), std::string::npos) << msg;
  EXPECT_THROW(bn.forward(Tensor::zeros({2, 3, 5})), Error);
  EXPECT_THROW(bn.forward(Tensor::zeros({3})), Error);
  EXPECT_THROW(BatchNorm2d(0), Error);
  bn.forward(Tensor::zeros({2, 3, 5, 5}));
  EXPECT_THROW(bn.backward(Tensor::zeros({2, 3, 5, 4})), Error);
}

TEST(GroupNorm, DescribesItselfAndRegistersAffineParams) {
  GroupNorm gn(4, 32);
  EXPECT_EQ(gn.describe(), "GroupNorm(4, 32)");
  const auto params = gn.params();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0]->name, "weight");
  EXPECT_EQ(params[1]->name, "bias");
  for (Param* p : params) EXPECT_FALSE(p->decay) << p->name;
  EXPECT_TRUE(gn.buffers().empty());
}

TEST(GroupNorm, EachSampleGroupIsNormalisedIndependently) {
  GroupNorm gn(2, 4);
  Tensor x = random_tensor({3, 4, 5}, 20, -3.0f, 5.0f);
  for (int64_t i = 0; i < 20; ++i) x.f32()[i] += 100.0f;  // sample 0 far from the others
  Tensor y = gn.forward(x);
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t g = 0; g < 2; ++g) {
      double s = 0, sq = 0;
      for (int64_t i = 0; i < 10; ++i) {
        const double v = y.f32()[n * 20 + g * 10 + i];
        s += v;
        sq += v * v;
      }
      EXPECT_NEAR(s / 10, 0.0, 1e-5) << n << "," << g;
      EXPECT_NEAR(sq / 10, 1.0, 1e-3) << n << "," << g;
    }
}

TEST(GroupNorm, GradientsMatchFiniteDifferences) {
  GroupNorm gn(2, 6);
  randomise_affine(gn, 21);
  check_gradients(gn, random_tensor({2, 6, 3, 3}, 22, -1.0f, 2.0f));
}

TEST(GroupNorm, GradientsMatchFiniteDifferencesWithOneGroupAndWithOneChannelPerGroup) {
  GroupNorm layer(1, 3);
  randomise_affine(layer, 23);
  check_gradients(layer, random_tensor({2, 3, 2, 3}, 24));
  GroupNorm instance(3, 3);
  randomise_affine(instance, 25);
  check_gradients(instance, random_tensor({2, 3, 2, 3}, 26));
}

TEST(GroupNorm, TrainAndEvalGiveTheSameOutput) {
  GroupNorm gn(2, 4);
  Tensor x = random_tensor({2, 4, 3, 3}, 27);
  Tensor train_y = gn.forward(x);
  gn.eval();
  Tensor eval_y = gn.forward(x);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(eval_y.f32()[i], train_y.f32()[i]);
}

TEST(GroupNorm, RejectsChannelsNotDivisibleByGroupsAndWrongInputs) {
  const std::string msg = error_of([] { GroupNorm(4, 6); });
  EXPECT_NE(msg.find("divisible"), std::string::npos) << msg;
  EXPECT_THROW(GroupNorm(0, 6), Error);
  GroupNorm gn(2, 6);
  const std::string shape_msg = error_of([&] { gn.forward(Tensor::zeros({2, 4, 3, 3})); });
  EXPECT_NE(shape_msg.find("GroupNorm(2, 6)"), std::string::npos) << shape_msg;
  EXPECT_THROW(gn.forward(Tensor::zeros({6})), Error);
  EXPECT_THROW(gn.backward(Tensor::zeros({2, 6, 3, 3})), Error);  // before any forward
}

}  // namespace
}  // namespace tern
