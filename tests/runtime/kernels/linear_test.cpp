#include "runtime/kernels/cpu/linear.h"

#include <gtest/gtest.h>

#include <vector>

#include "runtime/kernels/reference/linear.h"
#include "runtime/rng.h"

namespace tern {
namespace {

std::vector<float> random_vector(int64_t n, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

class LinearKernel : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, bool>> {};

TEST_P(LinearKernel, ForwardAndBackwardMatchReference) {
  const auto [n, in, out, with_bias] = GetParam();
  Rng rng(n * 31 + in * 7 + out);
  const auto x = random_vector(n * in, rng), w = random_vector(out * in, rng), b = random_vector(out, rng);
  const auto dy = random_vector(n * out, rng);
  std::vector<float> y(n * out), y_ref(n * out), dx(n * in), dx_ref(n * in);
  // Gradients start non-zero: the kernels must accumulate into them.
  auto dw = random_vector(out * in, rng), db = random_vector(out, rng);
  auto dw_ref = dw, db_ref = db;
  const float* bp = with_bias ? b.data() : nullptr;
  cpu::linear_forward(x.data(), w.data(), bp, y.data(), n, in, out);
  ref::linear_forward(x.data(), w.data(), bp, y_ref.data(), n, in, out);
  cpu::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), with_bias ? db.data() : nullptr,
                       n, in, out);
  ref::linear_backward(x.data(), w.data(), dy.data(), dx_ref.data(), dw_ref.data(),
                       with_bias ? db_ref.data() : nullptr, n, in, out);
  const float tol = 2e-5f * static_cast<float>(std::max({in, out, n}));
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y_ref[i], tol) << "y " << i;
  for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx[i], dx_ref[i], tol) << "dx " << i;
  for (size_t i = 0; i < dw.size(); ++i) ASSERT_NEAR(dw[i], dw_ref[i], tol) << "dw " << i;
  for (size_t i = 0; i < db.size(); ++i) ASSERT_NEAR(db[i], db_ref[i], tol) << "db " << i;
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearKernel,
                         ::testing::Values(std::make_tuple(1, 1, 1, true), std::make_tuple(3, 7, 5, true),
                                           std::make_tuple(13, 17, 11, false),
                                           std::make_tuple(64, 784, 512, true),
                                           std::make_tuple(64, 128, 10, true)));

}  // namespace
}  // namespace tern
