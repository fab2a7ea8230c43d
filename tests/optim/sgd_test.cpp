#include "optim/sgd.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace tern {
namespace {

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

void set_grad(Param& p, const std::vector<float>& g) {
  for (size_t i = 0; i < g.size(); ++i) p.grad.f32()[i] = g[i];
}

TEST(Sgd, PlainStepSubtractsLrTimesGradient) {
  Param p(Tensor::from({3}, {1.0f, 2.0f, 3.0f}));
  set_grad(p, {0.5f, -1.0f, 2.0f});
  Sgd sgd({&p}, SgdOptions{.lr = 0.1f});
  sgd.step();
  EXPECT_FLOAT_EQ(p.value.f32()[0], 0.95f);
  EXPECT_FLOAT_EQ(p.value.f32()[1], 2.1f);
  EXPECT_FLOAT_EQ(p.value.f32()[2], 2.8f);
  EXPECT_EQ(sgd.steps(), 1);
}

TEST(Sgd, FirstMomentumStepCopiesGradientThenDampensLaterOnes) {
  // Worked by hand with lr 1, momentum 0.9, dampening 0.5:
  //   step 1: buf = g1 = 2            w = 10 - 2 = 8
  //   step 2: buf = 0.9*2 + 0.5*4 = 3.8   w = 8 - 3.8 = 4.2
  Param p(Tensor::from({1}, {10.0f}));
  Sgd sgd({&p}, SgdOptions{.lr = 1.0f, .momentum = 0.9f, .dampening = 0.5f});
  set_grad(p, {2.0f});
  sgd.step();
  EXPECT_FLOAT_EQ(p.value.f32()[0], 8.0f);
  set_grad(p, {4.0f});
  sgd.step();
  EXPECT_FLOAT_EQ(p.value.f32()[0], 4.2f);
}

TEST(Sgd, NesterovLooksAheadByMomentumTimesBuffer) {
  // lr 0.5, momentum 0.5: step 1: buf = 2, g = 2 + 0.5*2 = 3, w = 1 - 1.5 = -0.5
  // step 2 (grad 1): buf = 0.5*2 + 1 = 2, g = 1 + 0.5*2 = 2, w = -0.5 - 1 = -1.5
  Param p(Tensor::from({1}, {1.0f}));
  Sgd sgd({&p}, SgdOptions{.lr = 0.5f, .momentum = 0.5f, .nesterov = true});
  set_grad(p, {2.0f});
  sgd.step();
  EXPECT_FLOAT_EQ(p.value.f32()[0], -0.5f);
  set_grad(p, {1.0f});
  sgd.step();
  EXPECT_FLOAT_EQ(p.value.f32()[0], -1.5f);
}

struct SgdCase {
  float momentum, dampening;
  bool nesterov;
  float weight_decay;
};

class SgdMatchesScalarReference : public ::testing::TestWithParam<SgdCase> {};

TEST_P(SgdMatchesScalarReference, OverSeveralStepsWithStateDependentGradients) {
  const SgdCase c = GetParam();
  const float lr = 0.05f;
  const std::vector<float> w0 = {1.5f, -0.25f, 3.0f, 0.0f, -2.0f};
  Param p(Tensor::from({5}, w0));
  Sgd sgd({&p}, SgdOptions{.lr = lr,
                           .momentum = c.momentum,
                           .dampening = c.dampening,
                           .nesterov = c.nesterov,
                           .weight_decay = c.weight_decay});
  // The reference: PyTorch's SGD written out per scalar, in double.
  std::vector<double> w(w0.begin(), w0.end()), buf(w0.size(), 0.0);
  for (int t = 0; t < 6; ++t) {
    std::vector<float> g(w0.size());
    // The gradient of a quadratic plus a step-dependent push, so every step differs.
    for (size_t i = 0; i < g.size(); ++i)
      g[i] = 0.7f * p.value.f32()[i] + 0.3f * static_cast<float>(t) - static_cast<float>(i);
    set_grad(p, g);
    sgd.step();
    for (size_t i = 0; i < w.size(); ++i) {
      double d = static_cast<double>(g[i]) + c.weight_decay * w[i];
      if (c.momentum != 0) {
        buf[i] = t == 0 ? d : c.momentum * buf[i] + (1.0 - c.dampening) * d;
        d = c.nesterov ? d + c.momentum * buf[i] : buf[i];
      }
      w[i] -= lr * d;
    }
    for (size_t i = 0; i < w.size(); ++i)
      ASSERT_NEAR(p.value.f32()[i], w[i], 1e-5 * (1 + std::abs(w[i]))) << "step " << t << " i " << i;
  }
  EXPECT_EQ(sgd.steps(), 6);
}

INSTANTIATE_TEST_SUITE_P(Sgd, SgdMatchesScalarReference,
                         ::testing::Values(SgdCase{0, 0, false, 0}, SgdCase{0, 0, false, 0.1f},
                                           SgdCase{0.9f, 0, false, 0}, SgdCase{0.9f, 0, true, 0.01f},
                                           SgdCase{0.8f, 0.3f, false, 0.05f}, SgdCase{0.5f, 0, true, 0}));

TEST(Sgd, WeightDecaySkipsParamsWithDecayFalse) {
  Param decayed(Tensor::from({2}, {1.0f, -2.0f}));
  Param bias(Tensor::from({2}, {1.0f, -2.0f}), /*decays=*/false);
  set_grad(decayed, {0.5f, 0.5f});
  set_grad(bias, {0.5f, 0.5f});
  Sgd sgd({&decayed, &bias}, SgdOptions{.lr = 0.1f, .weight_decay = 0.5f});
  sgd.step();
  // decayed: w - lr * (g + wd * w); bias: w - lr * g.
  EXPECT_FLOAT_EQ(decayed.value.f32()[0], 1.0f - 0.1f * (0.5f + 0.5f * 1.0f));
  EXPECT_FLOAT_EQ(decayed.value.f32()[1], -2.0f - 0.1f * (0.5f + 0.5f * -2.0f));
  EXPECT_FLOAT_EQ(bias.value.f32()[0], 1.0f - 0.1f * 0.5f);
  EXPECT_FLOAT_EQ(bias.value.f32()[1], -2.0f - 0.1f * 0.5f);
}

TEST(Sgd, StepLeavesTheGradientUnchanged) {
  Param p(Tensor::from({2}, {1.0f, 2.0f}));
  set_grad(p, {0.25f, -0.5f});
  Sgd sgd({&p}, SgdOptions{.lr = 0.1f, .momentum = 0.9f, .nesterov = true, .weight_decay = 0.1f});
  sgd.step();
  EXPECT_EQ(values(p.grad), (std::vector<float>{0.25f, -0.5f}));
}

TEST(Sgd, FrozenParamIsUntouchedEntirely) {
  Param frozen(Tensor::from({3}, {1.0f, 2.0f, 3.0f}));
  frozen.trainable = false;
  set_grad(frozen, {1.0f, 1.0f, 1.0f});
  Param live(Tensor::from({1}, {1.0f}));
  set_grad(live, {1.0f});
  Sgd sgd({&frozen, &live}, SgdOptions{.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.1f});
  sgd.step();
  sgd.step();
  EXPECT_EQ(values(frozen.value), (std::vector<float>{1.0f, 2.0f, 3.0f}));
  for (auto& [name, t] : sgd.state()) {
    if (name.rfind("params.0.", 0) != 0) continue;
    if (t->dtype() == DType::i32) {
      EXPECT_EQ(t->data<int32_t>()[0], 0) << name;
    } else {
      for (float x : values(*t)) EXPECT_EQ(x, 0.0f) << name;
    }
  }
  EXPECT_NE(live.value.f32()[0], 1.0f);
}

TEST(Sgd, UnfrozenParamStartsItsMomentumBufferFromItsFirstGradient) {
  // A param frozen for two steps then unfrozen must update exactly like one seen for the first
  // time: its buffer starts as a copy of the gradient, undampened.
  Param late(Tensor::from({1}, {5.0f}));
  Param other(Tensor::from({1}, {0.0f}));
  set_grad(late, {2.0f});
  set_grad(other, {1.0f});
  const SgdOptions o{.lr = 0.5f, .momentum = 0.9f, .dampening = 0.5f};
  Sgd sgd({&late, &other}, o);
  late.trainable = false;
  sgd.step();
  sgd.step();
  late.trainable = true;
  sgd.step();
  EXPECT_FLOAT_EQ(late.value.f32()[0], 5.0f - 0.5f * 2.0f);
  EXPECT_EQ(sgd.steps(), 3);
}

TEST(Sgd, StateNamesMomentumBuffersAfterTheirParams) {
  Param w(Tensor::from({2}, {1.0f, 1.0f}));
  w.name = "fc.weight";
  Param b(Tensor::from({1}, {0.0f}), false);
  set_grad(w, {3.0f, 4.0f});
  set_grad(b, {1.0f});
  Sgd sgd({&w, &b}, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  sgd.step();
  std::vector<std::string> names;
  for (auto& [name, t] : sgd.state()) {
    names.push_back(name);
    if (name == "fc.weight.momentum") {
      EXPECT_EQ(values(*t), (std::vector<float>{3.0f, 4.0f}));
    }
    if (name == "fc.weight.step") {
      EXPECT_EQ(t->data<int32_t>()[0], 1);
    }
  }
  EXPECT_EQ(names, (std::vector<std::string>{"step", "fc.weight.step", "params.1.step", "fc.weight.momentum",
                                             "params.1.momentum"}));
}

TEST(Sgd, NoMomentumMeansNoMomentumState) {
  Param p(Tensor::from({1}, {1.0f}));
  Sgd sgd({&p}, SgdOptions{});
  for (auto& [name, t] : sgd.state()) EXPECT_EQ(name.find("momentum"), std::string::npos) << name;
}

TEST(Sgd, NesterovNeedsMomentumAndNoDampening) {
  Param p(Tensor::from({1}, {1.0f}));
  EXPECT_THROW(Sgd({&p}, SgdOptions{.momentum = 0, .nesterov = true}), Error);
  EXPECT_THROW(Sgd({&p}, SgdOptions{.momentum = 0.9f, .dampening = 0.1f, .nesterov = true}), Error);
  EXPECT_NO_THROW(Sgd({&p}, SgdOptions{.momentum = 0.9f, .nesterov = true}));
}

TEST(Sgd, RejectsNegativeOptions) {
  Param p(Tensor::from({1}, {1.0f}));
  EXPECT_THROW(Sgd({&p}, SgdOptions{.lr = -0.1f}), Error);
  EXPECT_THROW(Sgd({&p}, SgdOptions{.momentum = -0.5f}), Error);
  EXPECT_THROW(Sgd({&p}, SgdOptions{.weight_decay = -1e-4f}), Error);
  EXPECT_THROW(Sgd({&p}, SgdOptions{.lr = NAN}), Error);
}

TEST(Optimizer, ZeroGradClearsEveryGradient) {
  Param a(Tensor::from({2}, {1.0f, 2.0f}));
  Param b(Tensor::from({1}, {1.0f}));
  b.trainable = false;
  set_grad(a, {3.0f, 4.0f});
  set_grad(b, {5.0f});
  Sgd sgd({&a, &b}, SgdOptions{});
  sgd.zero_grad();
  EXPECT_EQ(values(a.grad), (std::vector<float>{0.0f, 0.0f}));
  EXPECT_EQ(values(b.grad), (std::vector<float>{0.0f}));
}

TEST(Optimizer, SetLrChangesTheNextStep) {
  Param p(Tensor::from({1}, {1.0f}));
  set_grad(p, {1.0f});
  Sgd sgd({&p}, SgdOptions{.lr = 0.1f});
  sgd.set_lr(0.25f);
  EXPECT_EQ(sgd.lr(), 0.25f);
  sgd.step();
  EXPECT_FLOAT_EQ(p.value.f32()[0], 0.75f);
  EXPECT_THROW(sgd.set_lr(-1.0f), Error);
}

TEST(Optimizer, RejectsAParamListedTwice) {
  Param p(Tensor::from({1}, {1.0f}));
  EXPECT_THROW(Sgd({&p, &p}, SgdOptions{}), Error);
}

TEST(Optimizer, StepRejectsAGradientOfTheWrongSize) {
  Param p(Tensor::from({3}, {1.0f, 2.0f, 3.0f}));
  p.name = "fc.bias";
  p.grad = Tensor::zeros({2});
  Sgd sgd({&p}, SgdOptions{});
  try {
    sgd.step();
    FAIL() << "expected tern::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc.bias"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tern
