#include "runtime/nn/loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/kernels/reference/loss.h"
#include "runtime/nn/module.h"
#include "tests/support/gradcheck.h"
#include "tests/support/error_of.h"

namespace tern {
namespace {

using testing::error_of;

// The loss as a Module (logits -> [1] holding the loss) so the shared finite-difference checker
// can verify dlogits.
class LossAsModule : public Module {
 public:
  explicit LossAsModule(std::vector<int32_t> labels) : labels_(std::move(labels)) {}
  Tensor forward(const Tensor& logits) override {
    const LossResult r = softmax_cross_entropy(logits, labels_, &dlogits_);
    return Tensor::from({1}, {r.loss});
  }
  Tensor backward(const Tensor& dy) override {
    Tensor dx = dlogits_.clone();
    for (int64_t i = 0; i < dx.numel(); ++i) dx.f32()[i] *= dy.f32()[0];
    return dx;
  }
  std::string describe() const override { return "LossAsModule"; }

 private:
  std::vector<int32_t> labels_;
  Tensor dlogits_;
};

TEST(SoftmaxCrossEntropy, GradientMatchesFiniteDifferences) {
  LossAsModule loss({2, 0, 4, 4, 1});
  testing::GradCheckOptions o;
  o.atol = 1e-4;  // gradients here are O(1 / N) = 0.2 at most
  o.rtol = 1e-2;
  testing::check_gradients(loss, testing::random_tensor({5, 6}, 3, -4.0f, 4.0f), o);
}

TEST(SoftmaxCrossEntropy, MatchesTheReferenceAndCountsCorrectRows) {
  const Tensor logits = Tensor::from({3, 3}, {5, 1, 1, 0, 2, 1, 1000, -1000, 3});
  const std::vector<int32_t> labels{0, 2, 1};
  Tensor d;
  const LossResult r = softmax_cross_entropy(logits, labels, &d);
  std::vector<float> d_ref(9);
  const double loss_ref =
      ref::softmax_cross_entropy(logits.f32(), labels.data(), 3, 3, d_ref.data(), nullptr);
  EXPECT_NEAR(r.loss, loss_ref, 1e-6 * loss_ref);
  EXPECT_EQ(r.correct, 1);
  ASSERT_EQ(d.shape(), logits.shape());
  for (int i = 0; i < 9; ++i) EXPECT_NEAR(d.f32()[i], d_ref[static_cast<size_t>(i)], 1e-7f) << i;
}

TEST(SoftmaxCrossEntropy, GradientOutputIsOptionalAndReusedWhenShaped) {
  const Tensor logits = testing::random_tensor({4, 10}, 9);
  const std::vector<int32_t> labels{1, 2, 3, 9};
  const LossResult without = softmax_cross_entropy(logits, labels, nullptr);
  Tensor d = Tensor::full({4, 10}, 5.0);
  const Tensor same_storage = d;
  const LossResult with = softmax_cross_entropy(logits, labels, &d);
  EXPECT_EQ(without.loss, with.loss);
  EXPECT_EQ(without.correct, with.correct);
  EXPECT_TRUE(d.shares_storage(same_storage)) << "a correctly shaped buffer is reused";
  EXPECT_NE(d.f32()[0], 5.0f);
  Tensor wrong = Tensor::zeros({2, 10});
  softmax_cross_entropy(logits, labels, &wrong);
  EXPECT_EQ(wrong.shape(), logits.shape());
  Tensor alias = logits;
  softmax_cross_entropy(logits, labels, &alias);
  EXPECT_FALSE(alias.shares_storage(logits)) << "never written over the logits";
}

TEST(SoftmaxCrossEntropy, OutOfRangeLabelNamesTheSampleAndLabel) {
  const Tensor logits = Tensor::zeros({4, 10});
  Tensor d;
  const std::string high = error_of([&] { softmax_cross_entropy(logits, {0, 1, 2, 10}, &d); });
  EXPECT_NE(high.find("label 10 of sample 3"), std::string::npos) << high;
  EXPECT_NE(high.find("[0, 10)"), std::string::npos) << high;
  const std::string low = error_of([&] { softmax_cross_entropy(logits, {0, -1, 2, 3}, nullptr); });
  EXPECT_NE(low.find("label -1 of sample 1"), std::string::npos) << low;
}

TEST(SoftmaxCrossEntropy, RejectsMismatchedShapes) {
  const std::string count = error_of([] {
    softmax_cross_entropy(Tensor::zeros({4, 10}), {0, 1, 2}, nullptr);
  });
  EXPECT_NE(count.find("3 labels"), std::string::npos) << count;
  EXPECT_NE(count.find("[4, 10]"), std::string::npos) << count;
  EXPECT_THROW(softmax_cross_entropy(Tensor::zeros({4}), {0, 0, 0, 0}, nullptr), Error);
  EXPECT_THROW(softmax_cross_entropy(Tensor::zeros({0, 10}), {}, nullptr), Error);
  EXPECT_THROW(softmax_cross_entropy(Tensor::zeros({2, 10}, DType::i32), {0, 0}, nullptr), Error);
  EXPECT_THROW(softmax_cross_entropy(Tensor(), {}, nullptr), Error);
}

}  // namespace
}  // namespace tern
