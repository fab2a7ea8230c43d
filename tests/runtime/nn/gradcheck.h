// Finite-difference gradient check for any Module: compares backward()'s input and parameter
// gradients with central differences of the scalar L = sum(forward(x) * r) for a fixed random r.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "runtime/nn/module.h"
#include "runtime/rng.h"

namespace tern::testing {

struct GradCheckOptions {
  double eps = 1e-2;        // perturbation (f32 forward: smaller steps drown in rounding)
  double rtol = 2e-2;       // |num - ana| <= atol + rtol * max(|num|, |ana|)
  double atol = 2e-3;
  int max_checks = 48;      // elements checked per tensor (spread evenly); all if fewer
  bool check_input = true;  // false for modules whose input is not differentiable (ids)
  uint64_t seed = 1234;
};

inline double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0;
  const float* a = y.f32();
  const float* b = r.f32();
  for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Central difference of L with respect to element i of t (t is x or a parameter value).
inline double numeric_derivative(Module& m, const Tensor& x, const Tensor& r, float* t, int64_t i,
                                 double eps) {
  const float saved = t[i];
  t[i] = static_cast<float>(saved + eps);
  const double plus = weighted_sum(m.forward(x), r);
  t[i] = static_cast<float>(saved - eps);
  const double minus = weighted_sum(m.forward(x), r);
  t[i] = saved;
  return (plus - minus) / (2 * eps);
}

inline void expect_close(const std::string& what, int64_t i, double numeric, double analytic,
                         const GradCheckOptions& o) {
  const double tol = o.atol + o.rtol * std::max(std::fabs(numeric), std::fabs(analytic));
  EXPECT_NEAR(analytic, numeric, tol) << what << "[" << i << "]";
}

// Checks d(sum(y*r))/dx and /dparam. x is modified temporarily and restored. The module must be
// deterministic between forward calls (fix dropout masks, use batch statistics consistently).
inline void check_gradients(Module& m, Tensor x, const GradCheckOptions& o = {}) {
  Rng rng(o.seed);
  Tensor y = m.forward(x);
  Tensor r = Tensor::empty(y.shape());
  for (int64_t i = 0; i < r.numel(); ++i) r.f32()[i] = rng.uniform(-1.0f, 1.0f);

  m.zero_grad();
  m.forward(x);
  Tensor dx = m.backward(r);
  ASSERT_EQ(dx.shape(), x.shape()) << "backward must return a gradient shaped like the input";
  // Snapshot analytic grads before the numeric forwards run.
  std::vector<Tensor> grads;
  for (Param* p : m.params()) grads.push_back(p->grad.clone());

  auto indices = [&](int64_t n) {
    std::vector<int64_t> idx;
    const int64_t k = std::min<int64_t>(n, o.max_checks);
    for (int64_t j = 0; j < k; ++j) idx.push_back(n <= o.max_checks ? j : (j * n) / k + (j % 3));
    for (int64_t& v : idx) v = std::min(v, n - 1);
    return idx;
  };

  if (o.check_input) {
    for (int64_t i : indices(x.numel()))
      expect_close("input", i, numeric_derivative(m, x, r, x.f32(), i, o.eps), dx.f32()[i], o);
  }
  const auto params = m.params();
  for (size_t p = 0; p < params.size(); ++p) {
    if (!params[p]->trainable) continue;
    float* v = params[p]->value.f32();
    for (int64_t i : indices(params[p]->value.numel()))
      expect_close(params[p]->name, i, numeric_derivative(m, x, r, v, i, o.eps), grads[p].f32()[i], o);
  }
}

inline Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Rng rng(seed);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.uniform(lo, hi);
  return t;
}

}  // namespace tern::testing
