#include "runtime/kernels/cpu/layer_norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/kernels/reference/layer_norm.h"
#include "runtime/rng.h"
#include "tests/support/kernel_check.h"

namespace tern {
namespace {

using testing::random_vector;
using testing::expect_all_near;

struct Shape2 {
  int64_t N, C;
};

class LayerNormKernel : public ::testing::TestWithParam<Shape2> {};

// Rows with an offset far larger than their spread (a one-pass variance would lose it), an
// affine that is not the identity; N*C of the largest case takes the threaded path.
TEST_P(LayerNormKernel, ForwardAndBackwardMatchTheReference) {
  const auto [N, C] = GetParam();
  Rng rng(static_cast<uint64_t>(N * 31 + C));
  std::vector<float> x = random_vector(N * C, rng, -2.0f, 2.0f);
  for (int64_t n = 0; n < N; n += 3)
    for (int64_t c = 0; c < C; ++c) x[n * C + c] += 300.0f;
  const auto gamma = random_vector(C, rng, 0.5f, 1.5f), beta = random_vector(C, rng);
  const auto dy = random_vector(N * C, rng);
  const size_t nc = static_cast<size_t>(N * C), n = static_cast<size_t>(N);
  std::vector<float> y(nc), mean(n), rstd(n), y_ref(nc), mean_ref(n), rstd_ref(n);
  cpu::layer_norm_forward(x.data(), N, C, gamma.data(), beta.data(), 1e-5f, y.data(), mean.data(),
                          rstd.data());
  ref::layer_norm_forward(x.data(), N, C, gamma.data(), beta.data(), 1e-5f, y_ref.data(), mean_ref.data(),
                          rstd_ref.data());
  // f32 against double after subtracting a mean of ~300: a relative error of a few 1e-5 is the
  // rounding of x itself (ulp(300) / spread).
  expect_all_near(y, y_ref, 1e-4, "y");
  expect_all_near(mean, mean_ref, 1e-6, "mean");
  expect_all_near(rstd, rstd_ref, 1e-4, "rstd");

  std::vector<float> dx(nc), dx_ref(nc);
  std::vector<float> dgamma(gamma.size(), 0.25f), dbeta(gamma.size(), -0.5f), dgamma_ref = dgamma,
                                                                              dbeta_ref = dbeta;
  cpu::layer_norm_backward(dy.data(), x.data(), N, C, gamma.data(), mean.data(), rstd.data(), dx.data(),
                           dgamma.data(), dbeta.data());
  ref::layer_norm_backward(dy.data(), x.data(), N, C, gamma.data(), mean.data(), rstd.data(), dx_ref.data(),
                           dgamma_ref.data(), dbeta_ref.data());
  expect_all_near(dx, dx_ref, 1e-4, "dx");
  expect_all_near(dgamma, dgamma_ref, 1e-4 * std::sqrt(static_cast<double>(N)), "dgamma");
  expect_all_near(dbeta, dbeta_ref, 1e-5 * std::sqrt(static_cast<double>(N)), "dbeta");
}

INSTANTIATE_TEST_SUITE_P(Shapes, LayerNormKernel,
                         ::testing::Values(Shape2{1, 1}, Shape2{1, 7}, Shape2{5, 16}, Shape2{33, 128},
                                           Shape2{512, 96}));

TEST(LayerNormKernelProperty, RowsComeOutWithZeroMeanAndUnitVariance) {
  const int64_t N = 9, C = 64;
  Rng rng(3);
  const auto x = random_vector(N * C, rng, -5.0f, 20.0f);
  std::vector<float> gamma(C, 1.0f), beta(C, 0.0f), y(x.size()), mean(N), rstd(N);
  cpu::layer_norm_forward(x.data(), N, C, gamma.data(), beta.data(), 1e-5f, y.data(), mean.data(),
                          rstd.data());
  for (int64_t n = 0; n < N; ++n) {
    double s = 0, sq = 0;
    for (int64_t c = 0; c < C; ++c) {
      s += y[n * C + c];
      sq += static_cast<double>(y[n * C + c]) * y[n * C + c];
    }
    EXPECT_NEAR(s / C, 0.0, 1e-5) << n;
    EXPECT_NEAR(sq / C, 1.0, 1e-4) << n;  // eps = 1e-5 against a variance of ~50
  }
}

TEST(LayerNormKernelProperty, InputGradientIsOrthogonalToConstantAndToXhat) {
  // y is invariant to shifting a row and (gamma = 1) its xhat to scaling it, so dx must have zero
  // row sum and zero dot product with (x - mean): the two directions that change nothing.
  const int64_t N = 4, C = 32;
  Rng rng(4);
  const auto x = random_vector(N * C, rng, -3.0f, 3.0f), dy = random_vector(N * C, rng);
  std::vector<float> gamma(C, 1.0f), beta(C, 0.0f), y(x.size()), mean(N), rstd(N), dx(x.size());
  std::vector<float> dgamma(C, 0.0f), dbeta(C, 0.0f);
  cpu::layer_norm_forward(x.data(), N, C, gamma.data(), beta.data(), 0.0f, y.data(), mean.data(),
                          rstd.data());
  cpu::layer_norm_backward(dy.data(), x.data(), N, C, gamma.data(), mean.data(), rstd.data(), dx.data(),
                           dgamma.data(), dbeta.data());
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0, dot = 0;
    for (int64_t c = 0; c < C; ++c) {
      sum += dx[n * C + c];
      dot += dx[n * C + c] * (x[n * C + c] - mean[n]);
    }
    EXPECT_NEAR(sum, 0.0, 1e-5) << n;
    EXPECT_NEAR(dot, 0.0, 1e-4) << n;
  }
}

}  // namespace
}  // namespace tern
