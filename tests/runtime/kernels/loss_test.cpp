#include "runtime/kernels/cpu/loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/error.h"
#include "runtime/kernels/reference/loss.h"
#include "runtime/rng.h"

namespace tern {
namespace {

struct LossCase {
  int64_t N, K;
  float spread;  // logits uniform in [-spread, spread]
};

class CrossEntropyMatchesReference : public ::testing::TestWithParam<LossCase> {};

TEST_P(CrossEntropyMatchesReference, LossGradientAndCorrectCount) {
  const LossCase c = GetParam();
  Rng rng(c.N * 100 + c.K);
  std::vector<float> logits(static_cast<size_t>(c.N * c.K));
  for (float& v : logits) v = rng.uniform(-c.spread, c.spread);
  std::vector<int32_t> labels(static_cast<size_t>(c.N));
  for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(static_cast<uint32_t>(c.K)));

  std::vector<float> d(logits.size(), 42.0f), d_ref(logits.size());
  int64_t bad = 99, bad_ref = 99;
  const float loss = cpu::softmax_cross_entropy(logits.data(), labels.data(), c.N, c.K, d.data(), &bad);
  const double loss_ref =
      ref::softmax_cross_entropy(logits.data(), labels.data(), c.N, c.K, d_ref.data(), &bad_ref);
  EXPECT_EQ(bad, -1);
  EXPECT_EQ(bad_ref, -1);
  EXPECT_NEAR(loss, loss_ref, 1e-6 * (1 + std::fabs(loss_ref)));
  // The same loss without the gradient.
  EXPECT_EQ(cpu::softmax_cross_entropy(logits.data(), labels.data(), c.N, c.K, nullptr, nullptr), loss);
  for (size_t i = 0; i < d.size(); ++i) ASSERT_NEAR(d[i], d_ref[i], 1e-6f / c.N + 1e-7f) << i;
  EXPECT_EQ(cpu::count_correct(logits.data(), labels.data(), c.N, c.K),
            ref::count_correct(logits.data(), labels.data(), c.N, c.K));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CrossEntropyMatchesReference,
                         ::testing::Values(LossCase{1, 1, 1}, LossCase{1, 2, 1}, LossCase{3, 5, 3},
                                           LossCase{64, 10, 5}, LossCase{7, 1000, 2}, LossCase{13, 17, 80},
                                           LossCase{2, 3, 1000}),
                         [](const ::testing::TestParamInfo<LossCase>& info) {
                           return detail::concat("N", info.param.N, "K", info.param.K, "spread",
                                                 static_cast<int>(info.param.spread));
                         });

TEST(CrossEntropyKernel, StableOnHugeLogits) {
  // exp(1000) overflows float and double: the textbook log(sum(exp(x))) would give inf / NaN.
  const std::vector<float> logits{1000.0f,  -1000.0f, 0.0f,  //
                                  1000.0f,  -1000.0f, 0.0f,  //
                                  -1000.0f, -1000.0f, -1000.0f};
  const std::vector<int32_t> labels{0, 1, 2};
  std::vector<float> d(9), d_ref(9);
  const float loss = cpu::softmax_cross_entropy(logits.data(), labels.data(), 3, 3, d.data(), nullptr);
  const double loss_ref =
      ref::softmax_cross_entropy(logits.data(), labels.data(), 3, 3, d_ref.data(), nullptr);
  // Rows: 0 (label is the max), 2000, log 3.
  EXPECT_NEAR(loss_ref, (0.0 + 2000.0 + std::log(3.0)) / 3, 1e-9);
  EXPECT_NEAR(loss, loss_ref, 1e-6 * loss_ref);
  for (size_t i = 0; i < d.size(); ++i) {
    ASSERT_TRUE(std::isfinite(d[i])) << i;
    ASSERT_NEAR(d[i], d_ref[i], 1e-7f) << i;
  }
  EXPECT_NEAR(d[3], 1.0f / 3, 1e-7f);   // softmax 1 on the max, label elsewhere
  EXPECT_NEAR(d[4], -1.0f / 3, 1e-7f);  // softmax 0 on the label
}

TEST(CrossEntropyKernel, UniformLogitsGiveLogKAndTheKnownGradient) {
  const int64_t N = 2, K = 4;
  const std::vector<float> logits(N * K, 3.5f);
  const std::vector<int32_t> labels{1, 3};
  std::vector<float> d(N * K);
  const float loss = cpu::softmax_cross_entropy(logits.data(), labels.data(), N, K, d.data(), nullptr);
  EXPECT_NEAR(loss, std::log(4.0f), 1e-6f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) EXPECT_NEAR(d[n * K + k], (0.25f - (k == labels[n])) / N, 1e-7f);
}

TEST(CrossEntropyKernel, GradientMatchesFiniteDifferences) {
  const int64_t N = 3, K = 5;
  Rng rng(5);
  std::vector<float> logits(N * K);
  for (float& v : logits) v = rng.uniform(-3.0f, 3.0f);
  const std::vector<int32_t> labels{4, 0, 2};
  std::vector<float> d(N * K);
  cpu::softmax_cross_entropy(logits.data(), labels.data(), N, K, d.data(), nullptr);
  const float eps = 1e-2f;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float saved = logits[i];
    logits[i] = saved + eps;
    const double plus = cpu::softmax_cross_entropy(logits.data(), labels.data(), N, K, nullptr, nullptr);
    logits[i] = saved - eps;
    const double minus = cpu::softmax_cross_entropy(logits.data(), labels.data(), N, K, nullptr, nullptr);
    logits[i] = saved;
    EXPECT_NEAR(d[i], (plus - minus) / (2 * eps), 1e-4) << i;
  }
}

TEST(CrossEntropyKernel, GradientRowsSumToZero) {
  const int64_t N = 4, K = 7;
  Rng rng(11);
  std::vector<float> logits(N * K);
  for (float& v : logits) v = rng.uniform(-20.0f, 20.0f);
  const std::vector<int32_t> labels{0, 6, 3, 3};
  std::vector<float> d(N * K);
  cpu::softmax_cross_entropy(logits.data(), labels.data(), N, K, d.data(), nullptr);
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += d[n * K + k];
    EXPECT_NEAR(s, 0.0, 1e-7) << n;
  }
}

TEST(CrossEntropyKernel, OutOfRangeLabelIsReportedNotComputed) {
  const std::vector<float> logits(3 * 4, 1.0f);
  for (const std::vector<int32_t>& labels : {std::vector<int32_t>{0, 4, 1}, std::vector<int32_t>{0, -1, 9}}) {
    std::vector<float> d(12, 7.0f);
    int64_t bad = -5;
    const float loss = cpu::softmax_cross_entropy(logits.data(), labels.data(), 3, 4, d.data(), &bad);
    EXPECT_TRUE(std::isnan(loss));
    EXPECT_EQ(bad, 1) << "the first offending sample";
    EXPECT_EQ(d, std::vector<float>(12, 7.0f)) << "dlogits untouched";
  }
}

TEST(CrossEntropyKernel, CountCorrectBreaksTiesTowardTheLowestIndex) {
  const std::vector<float> logits{1,  5,  5,  0,    // argmax 1 (tie with 2)
                                  2,  2,  2,  2,    // argmax 0
                                  0,  0,  0,  9,    // argmax 3
                                  -1, -3, -1, -2};  // argmax 0
  EXPECT_EQ(cpu::count_correct(logits.data(), std::vector<int32_t>{1, 0, 3, 0}.data(), 4, 4), 4);
  EXPECT_EQ(cpu::count_correct(logits.data(), std::vector<int32_t>{2, 1, 3, 2}.data(), 4, 4), 1);
  EXPECT_EQ(cpu::count_correct(logits.data(), std::vector<int32_t>{7, -1, 3, 0}.data(), 4, 4), 2);
}

}  // namespace
}  // namespace tern
