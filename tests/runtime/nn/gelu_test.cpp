#include "runtime/nn/gelu.h"

#include <gtest/gtest.h>

#include "tests/support/gradcheck.h"

namespace tern {
namespace {

TEST(GELU, GradientsMatchFiniteDifferences) {
  GELU g;
  testing::check_gradients(g, testing::random_tensor({3, 2, 7}, 1, -4.0f, 4.0f));
}

TEST(GELU, KeepsTheShapeAndIsNearIdentityForLargeInputs) {
  GELU g;
  Tensor y = g.forward(Tensor::from({2, 2}, {10.0f, -10.0f, 0.0f, 1.0f}));
  EXPECT_EQ(y.shape(), (Shape{2, 2}));
  EXPECT_FLOAT_EQ(y.f32()[0], 10.0f);
  EXPECT_NEAR(y.f32()[1], 0.0f, 1e-6);
  EXPECT_EQ(y.f32()[2], 0.0f);
  EXPECT_NEAR(y.f32()[3], 0.841192f, 1e-6);
}

}  // namespace
}  // namespace tern
