#include "runtime/data/synthetic.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace tern {
namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Per-class mean sample, [num_classes * D].
std::vector<double> class_means(const Dataset& d) {
  const int64_t dim = shape_numel(d.sample_shape());
  std::vector<double> sum(static_cast<size_t>(d.num_classes * dim), 0.0);
  std::vector<int64_t> count(static_cast<size_t>(d.num_classes), 0);
  const float* x = d.images.f32();
  for (int64_t i = 0; i < d.size(); ++i) {
    const int32_t y = d.labels[static_cast<size_t>(i)];
    ++count[static_cast<size_t>(y)];
    for (int64_t k = 0; k < dim; ++k) sum[static_cast<size_t>(y * dim + k)] += x[i * dim + k];
  }
  for (int c = 0; c < d.num_classes; ++c)
    for (int64_t k = 0; k < dim; ++k)
      sum[static_cast<size_t>(c * dim + k)] /= count[static_cast<size_t>(c)];
  return sum;
}

// Accuracy on `test` of the classifier "nearest class mean of `train`".
double nearest_mean_accuracy(const Dataset& train, const Dataset& test) {
  const auto means = class_means(train);
  const int64_t dim = shape_numel(test.sample_shape());
  const float* x = test.images.f32();
  int64_t right = 0;
  for (int64_t i = 0; i < test.size(); ++i) {
    int best = -1;
    double best_d = 0;
    for (int c = 0; c < train.num_classes; ++c) {
      double dist = 0;
      for (int64_t k = 0; k < dim; ++k) {
        const double diff = x[i * dim + k] - means[static_cast<size_t>(c * dim + k)];
        dist += diff * diff;
      }
      if (best < 0 || dist < best_d) best = c, best_d = dist;
    }
    right += best == test.labels[static_cast<size_t>(i)];
  }
  return static_cast<double>(right) / static_cast<double>(test.size());
}

double correlation(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return ab / std::sqrt(aa * bb);
}

TEST(Synthetic, SameArgumentsGiveIdenticalData) {
  const Dataset a = make_synthetic(100, {3, 5, 5}, 4, 7, 2);
  const Dataset b = make_synthetic(100, {3, 5, 5}, 4, 7, 2);
  EXPECT_TRUE(same_bits(a.images, b.images));
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.images.shape(), Shape({100, 3, 5, 5}));
  EXPECT_EQ(a.sample_shape(), Shape({3, 5, 5}));
  EXPECT_EQ(a.num_classes, 4);
}

TEST(Synthetic, LabelsAreBalancedAndInRange) {
  const Dataset d = make_synthetic(103, {8}, 10, 1);
  std::vector<int> count(10, 0);
  for (int32_t y : d.labels) {
    ASSERT_GE(y, 0);
    ASSERT_LT(y, 10);
    ++count[static_cast<size_t>(y)];
  }
  for (int c : count) EXPECT_TRUE(c == 10 || c == 11) << c;
  // Shuffled: not simply 0, 1, 2, ... in order.
  int in_order = 0;
  for (size_t i = 0; i < d.labels.size(); ++i)
    in_order += d.labels[i] == static_cast<int32_t>(i % 10);
  EXPECT_LT(in_order, 50);
}

TEST(Synthetic, SampleSeedsDrawDifferentSamplesOfTheSameTask) {
  const Dataset train = make_synthetic(2000, {64}, 5, 42, 0);
  const Dataset test = make_synthetic(2000, {64}, 5, 42, 1);
  EXPECT_FALSE(same_bits(train.images, test.images));
  // Class means estimated from each agree (same prototypes); another seed's do not.
  const Dataset other = make_synthetic(2000, {64}, 5, 43, 0);
  EXPECT_GT(correlation(class_means(train), class_means(test)), 0.8);
  EXPECT_LT(std::abs(correlation(class_means(train), class_means(other))), 0.3);
}

TEST(Synthetic, DefaultTaskIsLearnableFromAFewHundredSamples) {
  // Fashion-MNIST's shape: the nearest class mean of 512 training samples classifies a test set
  // drawn with another sample_seed well, so the two splits really are one task.
  const Dataset train = make_synthetic(512, {1, 28, 28}, 10, 3, 0);
  const Dataset test = make_synthetic(1000, {1, 28, 28}, 10, 3, 1);
  EXPECT_GT(nearest_mean_accuracy(train, test), 0.9);
}

TEST(Synthetic, SmallerSeparationIsAHarderTask) {
  const Dataset test = make_synthetic(1000, {1, 28, 28}, 10, 3, 1, 3.0f);
  const double hard =
      nearest_mean_accuracy(make_synthetic(5000, {1, 28, 28}, 10, 3, 0, 3.0f), test);
  EXPECT_GT(hard, 0.7);  // still learnable (chance is 0.1)
  EXPECT_LT(hard, 0.95);
  const double easy = nearest_mean_accuracy(make_synthetic(5000, {1, 28, 28}, 10, 3, 0, 5.0f),
                                            make_synthetic(1000, {1, 28, 28}, 10, 3, 1, 5.0f));
  EXPECT_GT(easy, hard);
}

TEST(Synthetic, ValuesAreRoughlyStandardised) {
  const Dataset d = make_synthetic(500, {1, 28, 28}, 10, 9);
  double sum = 0, sq = 0;
  const float* x = d.images.f32();
  for (int64_t i = 0; i < d.images.numel(); ++i) sum += x[i], sq += double{x[i]} * x[i];
  const double n = static_cast<double>(d.images.numel());
  const double mean = sum / n, std = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(std, 1.0, 0.03);
}

TEST(Synthetic, RejectsBadArguments) {
  EXPECT_THROW(make_synthetic(-1, {4}, 2, 0), Error);
  EXPECT_THROW(make_synthetic(10, {4}, 0, 0), Error);
  EXPECT_THROW(make_synthetic(10, {}, 2, 0), Error);
  EXPECT_THROW(make_synthetic(10, {4, 0}, 2, 0), Error);
  EXPECT_EQ(make_synthetic(0, {4}, 2, 0).size(), 0);
}

}  // namespace
}  // namespace tern
