#include "runtime/kernels/cpu/norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/kernels/reference/norm.h"
#include "runtime/rng.h"
#include "tests/support/kernel_check.h"

namespace tern {
namespace {

using testing::random_vector;
using testing::expect_all_near;

struct NormCase {
  int64_t N, C, S, G;  // G is used by the group norm tests only
};

std::ostream& operator<<(std::ostream& out, const NormCase& c) {
  return out << "N=" << c.N << " C=" << c.C << " S=" << c.S << " G=" << c.G;
}

// Inputs shared by the tests: x with a non-zero mean, an affine that is not the identity, and
// running statistics that are not the defaults.
struct Inputs {
  std::vector<float> x, dy, gamma, beta, running_mean, running_var;
  explicit Inputs(const NormCase& c) {
    Rng rng(static_cast<uint64_t>(c.N * 7919 + c.C * 131 + c.S * 7 + c.G));
    x = random_vector(c.N * c.C * c.S, rng, -1.5f, 2.5f);
    dy = random_vector(c.N * c.C * c.S, rng);
    gamma = random_vector(c.C, rng, 0.5f, 1.5f);
    beta = random_vector(c.C, rng);
    running_mean = random_vector(c.C, rng);
    running_var = random_vector(c.C, rng, 0.5f, 2.0f);
  }
};

class BatchNormKernel : public ::testing::TestWithParam<NormCase> {};

TEST_P(BatchNormKernel, TrainForwardMatchesReferenceIncludingRunningStats) {
  const NormCase c = GetParam();
  Inputs in(c);
  const size_t n = in.x.size(), C = static_cast<size_t>(c.C);
  std::vector<float> y(n), mean(C), invstd(C), rm = in.running_mean, rv = in.running_var;
  std::vector<float> y_ref(n), mean_ref(C), invstd_ref(C), rm_ref = rm, rv_ref = rv;
  cpu::batch_norm_forward_train(in.x.data(), c.N, c.C, c.S, in.gamma.data(), in.beta.data(), 0.1f, 1e-5f,
                                y.data(), mean.data(), invstd.data(), rm.data(), rv.data());
  ref::batch_norm_forward_train(in.x.data(), c.N, c.C, c.S, in.gamma.data(), in.beta.data(), 0.1f, 1e-5f,
                                y_ref.data(), mean_ref.data(), invstd_ref.data(), rm_ref.data(),
                                rv_ref.data());
  expect_all_near(y, y_ref, 2e-5, "y");
  expect_all_near(mean, mean_ref, 1e-6, "save_mean");
  expect_all_near(invstd, invstd_ref, 1e-5, "save_invstd");
  expect_all_near(rm, rm_ref, 1e-6, "running_mean");
  expect_all_near(rv, rv_ref, 1e-6, "running_var");
}

TEST_P(BatchNormKernel, EvalForwardMatchesReference) {
  const NormCase c = GetParam();
  Inputs in(c);
  std::vector<float> y(in.x.size()), y_ref(in.x.size());
  cpu::batch_norm_forward_eval(in.x.data(), c.N, c.C, c.S, in.gamma.data(), in.beta.data(),
                               in.running_mean.data(), in.running_var.data(), 1e-5f, y.data());
  ref::batch_norm_forward_eval(in.x.data(), c.N, c.C, c.S, in.gamma.data(), in.beta.data(),
                               in.running_mean.data(), in.running_var.data(), 1e-5f, y_ref.data());
  expect_all_near(y, y_ref, 2e-6, "y");
}

TEST_P(BatchNormKernel, TrainBackwardMatchesReference) {
  const NormCase c = GetParam();
  Inputs in(c);
  const size_t n = in.x.size(), C = static_cast<size_t>(c.C);
  std::vector<float> y(n), mean(C), invstd(C), rm = in.running_mean, rv = in.running_var;
  cpu::batch_norm_forward_train(in.x.data(), c.N, c.C, c.S, in.gamma.data(), in.beta.data(), 0.1f, 1e-5f,
                                y.data(), mean.data(), invstd.data(), rm.data(), rv.data());
  // Stale values in the outputs check that the kernels overwrite rather than accumulate.
  std::vector<float> dx(n, 7.0f), dgamma(C, 7.0f), dbeta(C, 7.0f);
  std::vector<float> dx_ref(n), dgamma_ref(C), dbeta_ref(C);
  cpu::batch_norm_backward_train(in.dy.data(), in.x.data(), c.N, c.C, c.S, in.gamma.data(), mean.data(),
                                 invstd.data(), dx.data(), dgamma.data(), dbeta.data());
  ref::batch_norm_backward_train(in.dy.data(), in.x.data(), c.N, c.C, c.S, in.gamma.data(), mean.data(),
                                 invstd.data(), dx_ref.data(), dgamma_ref.data(), dbeta_ref.data());
  const double sums = 1e-6 * std::sqrt(static_cast<double>(c.N * c.S)) + 1e-6;
  expect_all_near(dx, dx_ref, 1e-4, "dx");
  expect_all_near(dgamma, dgamma_ref, sums, "dgamma");
  expect_all_near(dbeta, dbeta_ref, sums, "dbeta");
}

TEST_P(BatchNormKernel, EvalBackwardMatchesReference) {
  const NormCase c = GetParam();
  Inputs in(c);
  const size_t n = in.x.size(), C = static_cast<size_t>(c.C);
  std::vector<float> dx(n, 7.0f), dgamma(C, 7.0f), dbeta(C, 7.0f);
  std::vector<float> dx_ref(n), dgamma_ref(C), dbeta_ref(C);
  cpu::batch_norm_backward_eval(in.dy.data(), in.x.data(), c.N, c.C, c.S, in.gamma.data(),
                                in.running_mean.data(), in.running_var.data(), 1e-5f, dx.data(),
                                dgamma.data(), dbeta.data());
  ref::batch_norm_backward_eval(in.dy.data(), in.x.data(), c.N, c.C, c.S, in.gamma.data(),
                                in.running_mean.data(), in.running_var.data(), 1e-5f, dx_ref.data(),
                                dgamma_ref.data(), dbeta_ref.data());
  const double sums = 1e-6 * std::sqrt(static_cast<double>(c.N * c.S)) + 1e-6;
  expect_all_near(dx, dx_ref, 2e-6, "dx");
  expect_all_near(dgamma, dgamma_ref, sums, "dgamma");
  expect_all_near(dbeta, dbeta_ref, sums, "dbeta");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, BatchNormKernel,
    ::testing::Values(NormCase{1, 3, 7, 0},      // one sample, spatial positions only
                      NormCase{3, 1, 5, 0},      // one channel
                      NormCase{3, 4, 1, 0},      // [N, C] input
                      NormCase{2, 1, 1, 0},      // the smallest legal training batch
                      NormCase{5, 7, 13, 0},     // primes
                      NormCase{2, 3, 1031, 0},   // runs longer than the kernel's float blocks
                      NormCase{17, 300, 1, 0},   // [N, C] with C over the kernel's channel block
                      NormCase{8, 16, 64, 0}));  // a ResNet-like tile

TEST(BatchNormKernel, RunningStatsFollowPyTorchMomentumAndUnbiasedVariance) {
  // One channel, values 1, 2, 3, 4: mean 2.5, biased variance 1.25, unbiased 5/3.
  const std::vector<float> x = {1, 2, 3, 4};
  const float gamma = 1, beta = 0;
  float y[4], mean, invstd, running_mean = 1.0f, running_var = 2.0f;
  cpu::batch_norm_forward_train(x.data(), 2, 1, 2, &gamma, &beta, 0.25f, 0.0f, y, &mean, &invstd,
                                &running_mean, &running_var);
  EXPECT_FLOAT_EQ(mean, 2.5f);
  EXPECT_FLOAT_EQ(invstd, static_cast<float>(1.0 / std::sqrt(1.25)));
  EXPECT_FLOAT_EQ(running_mean, 0.75f * 1.0f + 0.25f * 2.5f);
  EXPECT_FLOAT_EQ(running_var, 0.75f * 2.0f + 0.25f * (5.0f / 3.0f));
  EXPECT_FLOAT_EQ(y[0], static_cast<float>(-1.5 / std::sqrt(1.25)));
}

TEST(BatchNormKernel, VarianceStaysAccurateWhenTheMeanIsLarge) {
  // E[x^2] - E[x]^2 in f32 loses every digit here (x^2 ~ 1e8, variance ~ 1/3).
  Rng rng(5);
  const int64_t N = 16, S = 1000;
  std::vector<float> x = random_vector(N * S, rng);
  for (float& v : x) v += 10000.0f;
  const float gamma = 1, beta = 0;
  std::vector<float> y(x.size()), y_ref(x.size());
  float mean, invstd, rm = 0, rv = 1, mean_ref, invstd_ref, rm_ref = 0, rv_ref = 1;
  cpu::batch_norm_forward_train(x.data(), N, 1, S, &gamma, &beta, 0.1f, 1e-5f, y.data(), &mean, &invstd, &rm,
                                &rv);
  ref::batch_norm_forward_train(x.data(), N, 1, S, &gamma, &beta, 0.1f, 1e-5f, y_ref.data(), &mean_ref,
                                &invstd_ref, &rm_ref, &rv_ref);
  EXPECT_NEAR(invstd, invstd_ref, 1e-4 * invstd_ref);
  EXPECT_NEAR(rv, rv_ref, 1e-5);
}

class GroupNormKernel : public ::testing::TestWithParam<NormCase> {};

TEST_P(GroupNormKernel, ForwardMatchesReference) {
  const NormCase c = GetParam();
  Inputs in(c);
  const size_t n = in.x.size(), NG = static_cast<size_t>(c.N * c.G);
  std::vector<float> y(n), mean(NG), invstd(NG), y_ref(n), mean_ref(NG), invstd_ref(NG);
  cpu::group_norm_forward(in.x.data(), c.N, c.C, c.S, c.G, in.gamma.data(), in.beta.data(), 1e-5f, y.data(),
                          mean.data(), invstd.data());
  ref::group_norm_forward(in.x.data(), c.N, c.C, c.S, c.G, in.gamma.data(), in.beta.data(), 1e-5f,
                          y_ref.data(), mean_ref.data(), invstd_ref.data());
  expect_all_near(y, y_ref, 2e-5, "y");
  expect_all_near(mean, mean_ref, 1e-6, "save_mean");
  expect_all_near(invstd, invstd_ref, 1e-5, "save_invstd");
}

TEST_P(GroupNormKernel, BackwardMatchesReference) {
  const NormCase c = GetParam();
  Inputs in(c);
  const size_t n = in.x.size(), C = static_cast<size_t>(c.C), NG = static_cast<size_t>(c.N * c.G);
  std::vector<float> y(n), mean(NG), invstd(NG);
  cpu::group_norm_forward(in.x.data(), c.N, c.C, c.S, c.G, in.gamma.data(), in.beta.data(), 1e-5f, y.data(),
                          mean.data(), invstd.data());
  std::vector<float> dx(n, 7.0f), dgamma(C, 7.0f), dbeta(C, 7.0f);
  std::vector<float> dx_ref(n), dgamma_ref(C), dbeta_ref(C);
  cpu::group_norm_backward(in.dy.data(), in.x.data(), c.N, c.C, c.S, c.G, in.gamma.data(), mean.data(),
                           invstd.data(), dx.data(), dgamma.data(), dbeta.data());
  ref::group_norm_backward(in.dy.data(), in.x.data(), c.N, c.C, c.S, c.G, in.gamma.data(), mean.data(),
                           invstd.data(), dx_ref.data(), dgamma_ref.data(), dbeta_ref.data());
  const double sums = 1e-6 * std::sqrt(static_cast<double>(c.N * c.S)) + 1e-6;
  expect_all_near(dx, dx_ref, 1e-4, "dx");
  expect_all_near(dgamma, dgamma_ref, sums, "dgamma");
  expect_all_near(dbeta, dbeta_ref, sums, "dbeta");
}

INSTANTIATE_TEST_SUITE_P(Shapes, GroupNormKernel,
                         ::testing::Values(NormCase{1, 6, 7, 1},    // G = 1 (layer norm over C and S)
                                           NormCase{1, 6, 7, 6},    // G = C (instance norm)
                                           NormCase{3, 1, 9, 1},    // one channel
                                           NormCase{3, 4, 1, 2},    // [N, C] input
                                           NormCase{2, 12, 1, 12},  // [N, C] with one value per group
                                           NormCase{5, 15, 13, 5},  // primes, three channels per group
                                           NormCase{2, 4, 1031,
                                                    2},  // runs longer than the kernel's float blocks
                                           NormCase{8, 32, 64, 4}));  // a ResNet-like tile

}  // namespace
}  // namespace tern
