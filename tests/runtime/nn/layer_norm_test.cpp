#include "runtime/nn/layer_norm.h"

#include <gtest/gtest.h>

#include "tests/support/gradcheck.h"

namespace tern {
namespace {

using testing::check_gradients;
using testing::random_tensor;

TEST(LayerNorm, RegistersUndecayedAffineStartingAtIdentity) {
  LayerNorm ln(6);
  EXPECT_EQ(ln.describe(), "LayerNorm(6)");
  const auto params = ln.params();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0]->name, "weight");
  EXPECT_EQ(params[1]->name, "bias");
  for (Param* p : params) EXPECT_FALSE(p->decay) << p->name;
  Tensor y = ln.forward(random_tensor({3, 6}, 1, 4.0f, 9.0f));
  for (int64_t r = 0; r < 3; ++r) {
    double s = 0;
    for (int64_t c = 0; c < 6; ++c) s += y.f32()[r * 6 + c];
    EXPECT_NEAR(s, 0.0, 1e-5) << r;
  }
}

TEST(LayerNorm, NormalisesTheLastDimOfAnyRank) {
  LayerNorm ln(4);
  Tensor x = random_tensor({2, 3, 4}, 2);
  Tensor y3 = ln.forward(x).clone();
  Tensor y2 = ln.forward(x.reshape({6, 4}));
  EXPECT_EQ(y3.shape(), (Shape{2, 3, 4}));
  for (int64_t i = 0; i < 24; ++i) EXPECT_EQ(y3.f32()[i], y2.f32()[i]);
  EXPECT_THROW(ln.forward(random_tensor({2, 5}, 3)), Error);
}

TEST(LayerNorm, GradientsMatchFiniteDifferences) {
  LayerNorm ln(8);
  ln.weight.value.copy_from(random_tensor({8}, 4, 0.5f, 1.5f));
  ln.bias.value.copy_from(random_tensor({8}, 5));
  check_gradients(ln, random_tensor({2, 3, 8}, 6, -2.0f, 2.0f));
}

TEST(LayerNorm, BackwardAccumulatesIntoParamGrads) {
  LayerNorm ln(5);
  Tensor x = random_tensor({3, 5}, 7), dy = random_tensor({3, 5}, 8);
  ln.forward(x);
  ln.backward(dy);
  Tensor once = ln.weight.grad.clone(), once_b = ln.bias.grad.clone();
  ln.forward(x);
  ln.backward(dy);
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_FLOAT_EQ(ln.weight.grad.f32()[i], 2 * once.f32()[i]);
    EXPECT_FLOAT_EQ(ln.bias.grad.f32()[i], 2 * once_b.f32()[i]);
  }
}

}  // namespace
}  // namespace tern
