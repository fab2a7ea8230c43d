#include "optim/clip.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace tern {
namespace {

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

Param with_grad(const std::vector<float>& g) {
  Param p(Tensor::zeros({static_cast<int64_t>(g.size())}));
  for (size_t i = 0; i < g.size(); ++i) p.grad.f32()[i] = g[i];
  return p;
}

TEST(ClipGradNorm, ReturnsTheGlobalNormAcrossParams) {
  Param a = with_grad({3.0f}), b = with_grad({0.0f, 4.0f});
  EXPECT_EQ(clip_grad_norm({&a, &b}, 100.0f), 5.0f);
}

TEST(ClipGradNorm, BelowMaxLeavesGradientsBitIdentical) {
  Param a = with_grad({0.1f, -0.2f, 0.3f});
  const float norm = clip_grad_norm({&a}, 1.0f);
  EXPECT_FLOAT_EQ(norm, std::sqrt(0.14f));
  EXPECT_EQ(values(a.grad), (std::vector<float>{0.1f, -0.2f, 0.3f}));
  // Equal to max_norm is not above it.
  Param b = with_grad({3.0f, 4.0f});
  clip_grad_norm({&b}, 5.0f);
  EXPECT_EQ(values(b.grad), (std::vector<float>{3.0f, 4.0f}));
}

TEST(ClipGradNorm, AboveMaxScalesEveryGradientByMaxOverNormPlusEpsilon) {
  Param a = with_grad({3.0f, 0.0f}), b = with_grad({-4.0f});
  const float norm = clip_grad_norm({&a, &b}, 1.0f);
  EXPECT_EQ(norm, 5.0f);
  const float factor = static_cast<float>(1.0 / (5.0 + 1e-6));
  EXPECT_EQ(values(a.grad), (std::vector<float>{3.0f * factor, 0.0f}));
  EXPECT_EQ(values(b.grad), (std::vector<float>{-4.0f * factor}));
  // The clipped norm is max_norm, a hair under.
  EXPECT_NEAR(std::hypot(a.grad.f32()[0], b.grad.f32()[0]), 1.0, 1e-6);
}

TEST(ClipGradNorm, AccumulatesInDoubleSoLargeGradientsDoNotOverflow) {
  // 1e20^2 overflows float but not double.
  Param a = with_grad({1e20f, 1e20f});
  const float norm = clip_grad_norm({&a}, 1.0f);
  EXPECT_FLOAT_EQ(norm, 1e20f * std::sqrt(2.0f));
  EXPECT_FLOAT_EQ(a.grad.f32()[0], 1.0f / std::sqrt(2.0f));
}

TEST(ClipGradNorm, FrozenParamsAreNeitherCountedNorScaled) {
  Param a = with_grad({3.0f, 4.0f}), frozen = with_grad({100.0f});
  frozen.trainable = false;
  EXPECT_EQ(clip_grad_norm({&a, &frozen}, 1.0f), 5.0f);
  EXPECT_EQ(frozen.grad.f32()[0], 100.0f);
}

TEST(ClipGradNorm, NonFiniteNormThrowsNamingTheParam) {
  Param a = with_grad({1.0f}), b = with_grad({std::numeric_limits<float>::quiet_NaN()});
  b.name = "classifier.weight";
  try {
    clip_grad_norm({&a, &b}, 1.0f);
    FAIL() << "expected tern::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("classifier.weight"), std::string::npos) << e.what();
  }
  Param c = with_grad({std::numeric_limits<float>::infinity()});
  EXPECT_THROW(clip_grad_norm({&c}, 1.0f), Error);
  EXPECT_EQ(a.grad.f32()[0], 1.0f);  // nothing was scaled on the way out
}

TEST(ClipGradNorm, MaxNormMustBePositive) {
  Param a = with_grad({1.0f});
  EXPECT_THROW(clip_grad_norm({&a}, 0.0f), Error);
  EXPECT_THROW(clip_grad_norm({&a}, -1.0f), Error);
}

}  // namespace
}  // namespace tern
