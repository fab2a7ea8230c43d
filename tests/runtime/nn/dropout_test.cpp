#include "runtime/nn/dropout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/gradcheck.h"

namespace tern {
namespace {

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

// A Dropout rebuilt from the same seed before every forward, so every forward of the
// finite-difference check sees the same mask.
class FixedMaskDropout : public Module {
 public:
  FixedMaskDropout(float p, uint64_t seed) : p_(p), seed_(seed) {}
  Tensor forward(const Tensor& x) override {
    inner_ = std::make_unique<Dropout>(p_, seed_);
    return inner_->forward(x);
  }
  Tensor backward(const Tensor& dy) override { return inner_->backward(dy); }
  std::string describe() const override { return "FixedMaskDropout"; }

 private:
  float p_;
  uint64_t seed_;
  std::unique_ptr<Dropout> inner_;
};

TEST(Dropout, DescriptionAndRejectedProbabilities) {
  EXPECT_EQ(Dropout(0.5f, 1).describe(), "Dropout(p=0.5)");
  EXPECT_EQ(Dropout(0.1f, 1).describe(), "Dropout(p=0.1)");
  EXPECT_THROW(Dropout(1.0f, 1), Error);
  EXPECT_THROW(Dropout(-0.1f, 1), Error);
  EXPECT_THROW(Dropout(std::nanf(""), 1), Error);
  EXPECT_NO_THROW(Dropout(0.0f, 1));
}

TEST(Dropout, GradientsMatchFiniteDifferencesWithAFixedMask) {
  FixedMaskDropout drop(0.4f, 77);
  testing::check_gradients(drop, testing::random_tensor({4, 3, 5}, 2));
}

TEST(Dropout, EvalModeIsTheIdentity) {
  Dropout drop(0.5f, 3);
  drop.eval();
  const Tensor x = testing::random_tensor({8, 16}, 4);
  EXPECT_EQ(values(drop.forward(x)), values(x));
  const Tensor dy = testing::random_tensor({8, 16}, 5);
  EXPECT_EQ(values(drop.backward(dy)), values(dy));
  testing::check_gradients(drop, x);
}

TEST(Dropout, ZeroProbabilityIsTheIdentityInTraining) {
  Dropout drop(0.0f, 3);
  const Tensor x = testing::random_tensor({5, 7}, 6);
  EXPECT_EQ(values(drop.forward(x)), values(x));
  testing::check_gradients(drop, x);
}

TEST(Dropout, BackwardMultipliesByExactlyTheMaskOfThePrecedingForward) {
  Dropout drop(0.5f, 11);
  const Tensor ones = Tensor::full({1000}, 1.0);
  drop.forward(ones);                      // an earlier mask that backward must not use
  const Tensor mask = drop.forward(ones);  // with x = 1 the output is the mask itself
  for (float m : values(mask)) ASSERT_TRUE(m == 0.0f || m == 2.0f) << m;
  const Tensor dy = testing::random_tensor({1000}, 12);
  const Tensor dx = drop.backward(dy);
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(dx.f32()[i], dy.f32()[i] * mask.f32()[i]) << i;
}

TEST(Dropout, EachTrainingForwardDrawsAFreshMask) {
  Dropout drop(0.5f, 21);
  const Tensor ones = Tensor::full({256}, 1.0);
  EXPECT_NE(values(drop.forward(ones)), values(drop.forward(ones)));
}

TEST(Dropout, SameSeedGivesTheSameSequenceOfMasks) {
  Dropout a(0.3f, 99), b(0.3f, 99), c(0.3f, 100);
  const Tensor x = testing::random_tensor({3, 50}, 1);
  for (int step = 0; step < 3; ++step) {
    const auto ya = values(a.forward(x));
    EXPECT_EQ(ya, values(b.forward(x))) << step;
    EXPECT_NE(ya, values(c.forward(x))) << step;
  }
}

TEST(Dropout, KeepsOneMinusPAndPreservesTheMean) {
  const float p = 0.3f;
  Dropout drop(p, 5);
  const int64_t n = 100000;
  const Tensor y = drop.forward(Tensor::full({n}, 1.0));
  double sum = 0;
  int64_t zeros = 0;
  for (float v : values(y)) {
    sum += v;
    zeros += v == 0.0f;
  }
  // sd of the mean = sqrt(p / (1 - p) / n) ~ 0.002, of the dropped fraction ~ 0.0015.
  EXPECT_NEAR(sum / n, 1.0, 0.01);
  EXPECT_NEAR(static_cast<double>(zeros) / n, p, 0.008);
}

TEST(Dropout, RejectsBackwardBeforeForwardAndMismatchedGradients) {
  Dropout drop(0.5f, 1);
  EXPECT_THROW(drop.backward(Tensor::zeros({4})), Error);
  drop.forward(Tensor::zeros({2, 2}));
  try {
    drop.backward(Tensor::zeros({4}));
    ADD_FAILURE() << "mismatched gradient accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 2]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tern
