#include "optim/adam.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace tern {
namespace {

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

void set_grad(Param& p, const std::vector<float>& g) {
  for (size_t i = 0; i < g.size(); ++i) p.grad.f32()[i] = g[i];
}

// Within 4 ulps: the same float operations, allowing a compiler that fuses a multiply-add.
void expect_same_floats(const Tensor& a, const Tensor& b, int step) {
  ASSERT_EQ(a.numel(), b.numel());
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_FLOAT_EQ(a.f32()[i], b.f32()[i]) << "step " << step;
}

TEST(Adam, FirstStepMovesEachWeightByAboutLrAgainstTheGradientSign) {
  // After one step m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps).
  Param p(Tensor::from({3}, {1.0f, -1.0f, 0.5f}));
  set_grad(p, {4.0f, -0.001f, 0.0f});
  Adam adam({&p}, AdamOptions{.lr = 0.01f});
  adam.step();
  EXPECT_NEAR(p.value.f32()[0], 1.0f - 0.01f, 1e-6);
  EXPECT_NEAR(p.value.f32()[1], -1.0f + 0.01f * (0.001 / (0.001 + 1e-8)), 1e-6);
  EXPECT_EQ(p.value.f32()[2], 0.5f);  // a zero gradient gives a zero update, not 0/0
}

struct AdamCase {
  float beta1, beta2, eps, weight_decay;
  bool decoupled;
};

class AdamMatchesScalarReference : public ::testing::TestWithParam<AdamCase> {};

TEST_P(AdamMatchesScalarReference, OverSeveralStepsWithBiasCorrection) {
  const AdamCase c = GetParam();
  const float lr = 0.02f;
  const std::vector<float> w0 = {0.5f, -1.25f, 2.0f, 0.1f};
  Param p(Tensor::from({4}, w0));
  Adam adam({&p}, AdamOptions{.lr = lr,
                              .beta1 = c.beta1,
                              .beta2 = c.beta2,
                              .eps = c.eps,
                              .weight_decay = c.weight_decay,
                              .decoupled = c.decoupled});
  EXPECT_EQ(adam.name(), c.decoupled ? "adamw" : "adam");
  // The reference: the Adam paper's algorithm with PyTorch's placement of weight decay, per
  // scalar in double.
  std::vector<double> w(w0.begin(), w0.end()), m(w0.size(), 0.0), v(w0.size(), 0.0);
  for (int t = 1; t <= 8; ++t) {
    std::vector<float> g(w0.size());
    for (size_t i = 0; i < g.size(); ++i)
      g[i] = 0.9f * p.value.f32()[i] - 0.2f * static_cast<float>(t) + 0.1f * static_cast<float>(i);
    set_grad(p, g);
    adam.step();
    for (size_t i = 0; i < w.size(); ++i) {
      double gi = g[i];
      if (c.decoupled)
        w[i] *= 1.0 - static_cast<double>(lr) * c.weight_decay;
      else
        gi += c.weight_decay * w[i];
      m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
      v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
      const double m_hat = m[i] / (1.0 - std::pow(static_cast<double>(c.beta1), t));
      const double v_hat = v[i] / (1.0 - std::pow(static_cast<double>(c.beta2), t));
      w[i] -= lr * m_hat / (std::sqrt(v_hat) + c.eps);
    }
    for (size_t i = 0; i < w.size(); ++i)
      ASSERT_NEAR(p.value.f32()[i], w[i], 2e-5 * (1 + std::abs(w[i]))) << "step " << t << " i " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Adam, AdamMatchesScalarReference,
                         ::testing::Values(AdamCase{0.9f, 0.999f, 1e-8f, 0, false},
                                           AdamCase{0.9f, 0.999f, 1e-8f, 0.1f, false},
                                           AdamCase{0.9f, 0.999f, 1e-8f, 0.1f, true},
                                           AdamCase{0.5f, 0.9f, 1e-3f, 0.02f, true},
                                           AdamCase{0.0f, 0.99f, 1e-6f, 0, false}));

// AdamW = shrink the weight by (1 - lr * wd), then a plain Adam step; Adam with L2 = a plain
// Adam step on g + wd * w. Both identities are checked against Adam without decay, to 4 ulps.
TEST(AdamW, DiffersFromAdamExactlyWhereWeightDecayIsApplied) {
  const float lr = 0.01f, wd = 0.3f;
  const std::vector<float> w0 = {1.0f, -2.0f, 0.5f};
  Param l2(Tensor::from({3}, w0)), decoupled(Tensor::from({3}, w0));
  Param l2_by_hand(Tensor::from({3}, w0)), decoupled_by_hand(Tensor::from({3}, w0));
  Adam adam({&l2}, AdamOptions{.lr = lr, .weight_decay = wd});
  AdamW adamw({&decoupled}, AdamOptions{.lr = lr, .weight_decay = wd});
  Adam plain({&l2_by_hand, &decoupled_by_hand}, AdamOptions{.lr = lr});
  EXPECT_EQ(adamw.name(), "adamw");
  const float keep = static_cast<float>(1.0 - static_cast<double>(lr) * wd);
  for (int t = 0; t < 4; ++t) {
    const std::vector<float> g = {0.1f * t - 0.2f, 0.3f, -0.05f * t};
    set_grad(l2, g);
    set_grad(decoupled, g);
    for (size_t i = 0; i < g.size(); ++i) {
      l2_by_hand.grad.f32()[i] = g[i] + wd * l2_by_hand.value.f32()[i];
      decoupled_by_hand.grad.f32()[i] = g[i];
      decoupled_by_hand.value.f32()[i] *= keep;
    }
    adam.step();
    adamw.step();
    plain.step();
    expect_same_floats(l2.value, l2_by_hand.value, t);
    expect_same_floats(decoupled.value, decoupled_by_hand.value, t);
  }
  EXPECT_NE(values(l2.value), values(decoupled.value));
}

TEST(Adam, WeightDecaySkipsParamsWithDecayFalse) {
  for (bool decoupled : {false, true}) {
    Param bias(Tensor::from({2}, {1.0f, -1.0f}), /*decays=*/false);
    Param reference(Tensor::from({2}, {1.0f, -1.0f}));
    set_grad(bias, {0.5f, 0.25f});
    set_grad(reference, {0.5f, 0.25f});
    Adam with_decay({&bias}, AdamOptions{.lr = 0.1f, .weight_decay = 0.5f, .decoupled = decoupled});
    Adam without({&reference}, AdamOptions{.lr = 0.1f});
    for (int t = 0; t < 3; ++t) {
      with_decay.step();
      without.step();
    }
    EXPECT_EQ(values(bias.value), values(reference.value)) << "decoupled " << decoupled;
  }
}

TEST(Adam, FrozenParamIsUntouchedEntirely) {
  Param frozen(Tensor::from({2}, {1.0f, 2.0f}));
  frozen.name = "features.0.weight";
  frozen.trainable = false;
  set_grad(frozen, {1.0f, -1.0f});
  AdamW adamw({&frozen}, AdamOptions{.lr = 0.1f, .weight_decay = 0.1f});
  adamw.step();
  EXPECT_EQ(values(frozen.value), (std::vector<float>{1.0f, 2.0f}));
  for (auto& [name, t] : adamw.state()) {
    if (name == "step") continue;
    if (t->dtype() == DType::i32) {
      EXPECT_EQ(t->data<int32_t>()[0], 0) << name;
    } else {
      EXPECT_EQ(values(*t), (std::vector<float>{0.0f, 0.0f})) << name;
    }
  }
  EXPECT_EQ(adamw.steps(), 1);
}

TEST(Adam, BiasCorrectionCountsEachParamsOwnUpdates) {
  // A param unfrozen after two steps gets a first step's bias correction, like a fresh one.
  Param late(Tensor::from({1}, {1.0f})), fresh(Tensor::from({1}, {1.0f})), other(Tensor::from({1}, {0.0f}));
  set_grad(late, {0.3f});
  set_grad(fresh, {0.3f});
  set_grad(other, {1.0f});
  Adam adam({&late, &other}, AdamOptions{.lr = 0.1f});
  Adam reference({&fresh}, AdamOptions{.lr = 0.1f});
  late.trainable = false;
  adam.step();
  adam.step();
  late.trainable = true;
  adam.step();
  reference.step();
  EXPECT_EQ(late.value.f32()[0], fresh.value.f32()[0]);
}

TEST(Adam, StateHoldsBothMomentsPerParam) {
  Param w(Tensor::from({2}, {0.0f, 0.0f}));
  w.name = "fc.weight";
  set_grad(w, {2.0f, -4.0f});
  Adam adam({&w}, AdamOptions{.lr = 0.1f, .beta1 = 0.5f, .beta2 = 0.75f});
  adam.step();
  std::vector<std::string> names;
  for (auto& [name, t] : adam.state()) {
    names.push_back(name);
    // m = (1 - beta1) * g, v = (1 - beta2) * g^2 after the first step.
    if (name == "fc.weight.exp_avg") {
      EXPECT_EQ(values(*t), (std::vector<float>{1.0f, -2.0f}));
    }
    if (name == "fc.weight.exp_avg_sq") {
      EXPECT_EQ(values(*t), (std::vector<float>{1.0f, 4.0f}));
    }
  }
  EXPECT_EQ(names, (std::vector<std::string>{"step", "fc.weight.step", "fc.weight.exp_avg",
                                             "fc.weight.exp_avg_sq"}));
}

TEST(Adam, RejectsBetasOutsideZeroToOne) {
  Param p(Tensor::from({1}, {1.0f}));
  EXPECT_THROW(Adam({&p}, AdamOptions{.beta1 = 1.0f}), Error);
  EXPECT_THROW(Adam({&p}, AdamOptions{.beta2 = -0.1f}), Error);
  EXPECT_THROW(Adam({&p}, AdamOptions{.eps = -1.0f}), Error);
  EXPECT_THROW(AdamW({&p}, AdamOptions{.weight_decay = -0.01f}), Error);
}

}  // namespace
}  // namespace tern
