#include "runtime/kernels/cpu/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/kernels/reference/gemm.h"
#include "runtime/rng.h"

namespace tern {
namespace {

std::vector<float> random_vector(size_t n, Rng& rng) {
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

struct GemmCase {
  int64_t M, N, K;
  bool ta, tb;
  float alpha, beta;
};

class GemmMatchesReference : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmMatchesReference, AllTransposesAndStrides) {
  const GemmCase c = GetParam();
  Rng rng(c.M * 1000 + c.N * 10 + c.K);
  // Padded leading dimensions check that strides are honoured.
  const int64_t lda = (c.ta ? c.M : c.K) + 3, ldb = (c.tb ? c.K : c.N) + 1, ldc = c.N + 2;
  const auto A = random_vector(static_cast<size_t>((c.ta ? c.K : c.M) * lda), rng);
  const auto B = random_vector(static_cast<size_t>((c.tb ? c.N : c.K) * ldb), rng);
  auto C = random_vector(static_cast<size_t>(c.M * ldc), rng);
  auto C_ref = C;
  cpu::gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc);
  ref::gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C_ref.data(), ldc);
  // f32 accumulation of K products of magnitude <= 1: error grows like sqrt(K) * eps.
  const float tol = 1e-5f * std::sqrt(static_cast<float>(c.K) + 1.0f) * 4;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j)
      ASSERT_NEAR(C[i * ldc + j], C_ref[i * ldc + j], tol) << i << "," << j;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmMatchesReference,
    ::testing::Values(GemmCase{1, 1, 1, false, false, 1, 0}, GemmCase{7, 13, 5, false, false, 1, 0},
                      GemmCase{7, 13, 5, true, false, 1, 1}, GemmCase{7, 13, 5, false, true, 0.5f, 1},
                      GemmCase{7, 13, 5, true, true, 2, -1}, GemmCase{64, 512, 784, false, true, 1, 0},
                      GemmCase{784, 512, 64, true, false, 1, 1}, GemmCase{64, 784, 512, false, false, 1, 0},
                      GemmCase{3, 4, 0, false, false, 1, 0.5f}, GemmCase{0, 4, 3, false, false, 1, 0}));

}  // namespace
}  // namespace tern
