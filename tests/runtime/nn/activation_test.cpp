#include "runtime/nn/activation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <initializer_list>
#include <string>

#include "tests/support/gradcheck.h"

namespace tern {
namespace {

// Random inputs in [-8, 8] moved at least 0.05 away from every kink: the finite-difference
// step (0.01) must not straddle one, where the numeric derivative is meaningless.
Tensor away_from_kinks(const Shape& shape, uint64_t seed, std::initializer_list<float> kinks) {
  Tensor t = testing::random_tensor(shape, seed, -8.0f, 8.0f);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float& v = t.f32()[i];
    for (float k : kinks)
      if (std::fabs(v - k) < 0.05f) v = v < k ? k - 0.05f : k + 0.05f;
  }
  return t;
}

// Values on each side of and at the kinks, so every piece is exercised.
Tensor with_kinks(std::initializer_list<float> kinks) {
  std::vector<float> v{-10.0f, 10.0f};
  for (float k : kinks) {
    v.push_back(k);
    v.push_back(k - 0.5f);
    v.push_back(k + 0.5f);
  }
  return Tensor::from({static_cast<int64_t>(v.size())}, v);
}

TEST(ReLU, GradientsMatchFiniteDifferencesForAnyShape) {
  for (const Shape& shape : {Shape{17}, Shape{4, 9}, Shape{2, 3, 5, 5}}) {
    ReLU relu;
    testing::check_gradients(relu, away_from_kinks(shape, 1, {0.0f}));
  }
}

TEST(ReLU, ForwardAndBackwardValues) {
  ReLU relu;
  EXPECT_EQ(relu.describe(), "ReLU");
  const Tensor y = relu.forward(Tensor::from({2, 2}, {-1.0f, 0.0f, 2.0f, -0.5f}));
  EXPECT_EQ(y.shape(), (Shape{2, 2}));
  EXPECT_EQ(std::vector<float>(y.f32(), y.f32() + 4), (std::vector<float>{0, 0, 2, 0}));
  const Tensor dx = relu.backward(Tensor::from({2, 2}, {1, 1, 1, 1}));
  EXPECT_EQ(std::vector<float>(dx.f32(), dx.f32() + 4), (std::vector<float>{0, 0, 1, 0}));
}

TEST(ReLU6, GradientsMatchFiniteDifferencesForAnyShape) {
  for (const Shape& shape : {Shape{23}, Shape{3, 2, 7}}) {
    ReLU6 relu6;
    testing::check_gradients(relu6, away_from_kinks(shape, 2, {0.0f, 6.0f}));
  }
  ReLU6 relu6;
  EXPECT_EQ(relu6.describe(), "ReLU6");
}

TEST(ReLU6, ClampsToZeroAndSix) {
  ReLU6 relu6;
  const Tensor y = relu6.forward(Tensor::from({4}, {-3.0f, 2.5f, 6.0f, 9.0f}));
  EXPECT_EQ(std::vector<float>(y.f32(), y.f32() + 4), (std::vector<float>{0, 2.5f, 6, 6}));
  const Tensor dx = relu6.backward(Tensor::from({4}, {1, 1, 1, 1}));
  EXPECT_EQ(std::vector<float>(dx.f32(), dx.f32() + 4), (std::vector<float>{0, 1, 0, 0}));
}

TEST(HSwish, GradientsMatchFiniteDifferencesForAnyShape) {
  for (const Shape& shape : {Shape{31}, Shape{2, 4, 3, 3}}) {
    HSwish hswish;
    testing::check_gradients(hswish, away_from_kinks(shape, 3, {-3.0f, 3.0f}));
  }
  HSwish hswish;
  EXPECT_EQ(hswish.describe(), "HSwish");
}

TEST(HSwish, BackwardUsesTheSavedInput) {
  HSwish hswish;
  const Tensor x = with_kinks({-3.0f, 3.0f});
  hswish.forward(x);
  const Tensor dx = hswish.backward(Tensor::full(x.shape(), 1.0));
  // x: -10, 10, -3, -3.5, -2.5, 3, 2.5, 3.5
  const std::vector<float> expected{0, 1, -0.5f, 0, -1.0f / 3, 1.5f, 4.0f / 3, 1};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_FLOAT_EQ(dx.f32()[i], expected[i]) << i;
}

TEST(Activations, RejectBackwardBeforeForwardAndMismatchedGradients) {
  ReLU relu;
  ReLU6 relu6;
  HSwish hswish;
  for (Module* m : std::initializer_list<Module*>{&relu, &relu6, &hswish}) {
    SCOPED_TRACE(m->describe());
    EXPECT_THROW(m->backward(Tensor::zeros({3})), Error);
    m->forward(Tensor::zeros({2, 3}));
    try {
      m->backward(Tensor::zeros({3, 2}));
      ADD_FAILURE() << "mismatched gradient accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(m->describe()), std::string::npos) << msg;
      EXPECT_NE(msg.find("[2, 3]"), std::string::npos) << msg;
    }
    EXPECT_THROW(m->forward(Tensor::zeros({2}, DType::i32)), Error);
  }
}

}  // namespace
}  // namespace tern
