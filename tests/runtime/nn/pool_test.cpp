#include "runtime/nn/pool.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/rng.h"
#include "tests/support/gradcheck.h"
#include "tests/support/error_of.h"

namespace tern {
namespace {

using testing::error_of;

// Distinct values at least 0.1 apart in random order: the finite-difference step (0.01) can then
// never change which element of a window is the max.
Tensor distinct_tensor(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  std::vector<float> values(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.1f * static_cast<float>(i) - 3.0f;
  Rng rng(seed);
  rng.shuffle(values);
  for (size_t i = 0; i < values.size(); ++i) t.f32()[i] = values[i];
  return t;
}

TEST(MaxPool2d, OutputShapeAndDescription) {
  MaxPool2d pool(2);
  EXPECT_EQ(pool.describe(), "MaxPool2d(k=2, s=2)");
  EXPECT_EQ(pool.forward(Tensor::zeros({4, 3, 7, 9})).shape(), (Shape{4, 3, 3, 4}));
  MaxPool2d overlapping(3, 2, 1);
  EXPECT_EQ(overlapping.describe(), "MaxPool2d(k=3, s=2, p=1)");
  EXPECT_EQ(overlapping.forward(Tensor::zeros({1, 2, 7, 8})).shape(), (Shape{1, 2, 4, 4}));
}

TEST(MaxPool2d, GradientsMatchFiniteDifferences) {
  for (auto [k, s, p] :
       {std::tuple{2, 0, 0}, std::tuple{3, 2, 1}, std::tuple{3, 1, 0}, std::tuple{2, 1, 1}}) {
    MaxPool2d pool(k, s, p);
    SCOPED_TRACE(pool.describe());
    testing::check_gradients(pool, distinct_tensor({2, 3, 7, 6}, 17));
  }
}

TEST(MaxPool2d, ForwardTakesTheWindowMaximum) {
  MaxPool2d pool(2);
  const Tensor x = Tensor::from({1, 1, 2, 4}, {1, 8, 3, -4, 5, 2, -7, -6});
  const Tensor y = pool.forward(x);
  EXPECT_EQ(y.f32()[0], 8.0f);
  EXPECT_EQ(y.f32()[1], 3.0f);
  const Tensor dx = pool.backward(Tensor::from({1, 1, 1, 2}, {10, 20}));
  EXPECT_EQ(std::vector<float>(dx.f32(), dx.f32() + 8), (std::vector<float>{0, 10, 20, 0, 0, 0, 0, 0}));
}

TEST(MaxPool2d, RejectsBadConfigurationsAndShapes) {
  EXPECT_THROW(MaxPool2d(0), Error);
  EXPECT_THROW(MaxPool2d(2, -1), Error);
  EXPECT_NE(error_of([] { MaxPool2d(3, 1, 2); }).find("padding"), std::string::npos);
  MaxPool2d pool(3);
  EXPECT_NE(error_of([&] {
              pool.backward(Tensor::zeros({1, 1, 1, 1}));
            }).find("before forward"),
            std::string::npos);
  const std::string rank = error_of([&] { pool.forward(Tensor::zeros({3, 8, 8})); });
  EXPECT_NE(rank.find("MaxPool2d(k=3, s=3)"), std::string::npos) << rank;
  EXPECT_NE(rank.find("[N, C, H, W]"), std::string::npos) << rank;
  EXPECT_NE(error_of([&] {
              pool.forward(Tensor::zeros({1, 1, 2, 8}));
            }).find("smaller than"),
            std::string::npos);
  pool.forward(Tensor::zeros({1, 1, 6, 6}));
  EXPECT_NE(error_of([&] {
              pool.backward(Tensor::zeros({1, 1, 3, 3}));
            }).find("[1, 1, 2, 2]"),
            std::string::npos);
}

TEST(AvgPool2d, OutputShapeAndDescription) {
  AvgPool2d pool(2);
  EXPECT_EQ(pool.describe(), "AvgPool2d(k=2, s=2)");
  EXPECT_EQ(pool.forward(Tensor::zeros({2, 1, 5, 5})).shape(), (Shape{2, 1, 2, 2}));
  EXPECT_EQ(AvgPool2d(3, 1, 1).describe(), "AvgPool2d(k=3, s=1, p=1)");
}

TEST(AvgPool2d, GradientsMatchFiniteDifferences) {
  for (auto [k, s, p] :
       {std::tuple{2, 0, 0}, std::tuple{3, 2, 1}, std::tuple{3, 1, 1}, std::tuple{5, 3, 2}}) {
    AvgPool2d pool(k, s, p);
    SCOPED_TRACE(pool.describe());
    testing::check_gradients(pool, testing::random_tensor({2, 3, 7, 6}, 5));
  }
}

TEST(AvgPool2d, RejectsBadConfigurationsAndShapes) {
  EXPECT_THROW(AvgPool2d(2, 2, 2), Error);
  AvgPool2d pool(2);
  EXPECT_THROW(pool.forward(Tensor::zeros({1, 1, 1, 5})), Error);
  EXPECT_THROW(pool.forward(Tensor::zeros({1, 1, 4, 4}, DType::i32)), Error);
  pool.forward(Tensor::zeros({2, 3, 4, 4}));
  EXPECT_THROW(pool.backward(Tensor::zeros({2, 3, 4, 4})), Error);
}

TEST(GlobalAvgPool2d, AveragesEachPlaneIntoNC) {
  GlobalAvgPool2d pool;
  EXPECT_EQ(pool.describe(), "GlobalAvgPool2d");
  const Tensor y = pool.forward(Tensor::from({1, 2, 1, 3}, {1, 2, 3, 10, 20, 60}));
  ASSERT_EQ(y.shape(), (Shape{1, 2}));
  EXPECT_FLOAT_EQ(y.f32()[0], 2.0f);
  EXPECT_FLOAT_EQ(y.f32()[1], 30.0f);
}

TEST(GlobalAvgPool2d, GradientsMatchFiniteDifferences) {
  GlobalAvgPool2d pool;
  testing::check_gradients(pool, testing::random_tensor({3, 4, 5, 3}, 8));
}

TEST(GlobalAvgPool2d, RejectsWrongShapes) {
  GlobalAvgPool2d pool;
  EXPECT_THROW(pool.backward(Tensor::zeros({1, 1})), Error);
  EXPECT_THROW(pool.forward(Tensor::zeros({2, 3})), Error);
  pool.forward(Tensor::zeros({2, 3, 4, 4}));
  const std::string msg = error_of([&] { pool.backward(Tensor::zeros({2, 4})); });
  EXPECT_NE(msg.find("[2, 3]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tern
