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

inline double loss_at(Module& m, const Tensor& x, const Tensor& r, float* t, int64_t i, double value) {
  const float saved = t[i];
  t[i] = static_cast<float>(value);
  const double l = weighted_sum(m.forward(x), r);
  t[i] = saved;
  return l;
}

inline double tolerance(double a, double b, const GradCheckOptions& o) {
  return o.atol + o.rtol * std::max(std::fabs(a), std::fabs(b));
}

// Compares the analytic derivative with the central difference at eps/2. The element is skipped
// when the step crossed a kink (ReLU, max pool, clamp), which finite differences cannot see past:
// detected as the one-sided differences disagreeing (a kink within eps) or the central
// differences at eps and eps/2 disagreeing. Skips are counted by the caller, which fails if too
// many elements could not be checked.
inline bool check_element(Module& m, const Tensor& x, const Tensor& r, double base, float* t, int64_t i,
                          double analytic, const std::string& what, const GradCheckOptions& o) {
  const double v = t[i], e = o.eps;
  const double plus = loss_at(m, x, r, t, i, v + e), minus = loss_at(m, x, r, t, i, v - e);
  const double fine = (loss_at(m, x, r, t, i, v + e / 2) - loss_at(m, x, r, t, i, v - e / 2)) / e;
  const double central = (plus - minus) / (2 * e);
  const double forward = (plus - base) / e, backward = (base - minus) / e;
  if (std::fabs(forward - backward) > tolerance(forward, backward, o) ||
      std::fabs(central - fine) > tolerance(central, fine, o))
    return false;
  EXPECT_NEAR(analytic, fine, tolerance(fine, analytic, o)) << what << "[" << i << "]";
  return true;
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

  const double base = weighted_sum(m.forward(x), r);
  int64_t checked = 0, skipped = 0;
  auto count = [&](bool ok) { ok ? ++checked : ++skipped; };
  if (o.check_input) {
    for (int64_t i : indices(x.numel())) count(check_element(m, x, r, base, x.f32(), i, dx.f32()[i], "input", o));
  }
  const auto params = m.params();
  for (size_t p = 0; p < params.size(); ++p) {
    if (!params[p]->trainable) continue;
    float* v = params[p]->value.f32();
    for (int64_t i : indices(params[p]->value.numel()))
      count(check_element(m, x, r, base, v, i, grads[p].f32()[i], params[p]->name, o));
  }
  // Kinks are common in a deep ReLU net, and strong curvature also trips the one-sided test;
  // still, at least two thirds of the elements must be checked.
  EXPECT_LE(skipped * 3, checked + skipped) << skipped << " of " << checked + skipped
                                            << " elements sat on kinks: use smaller inputs or eps";
  EXPECT_GT(checked, 0);
}

inline Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Rng rng(seed);
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.uniform(lo, hi);
  return t;
}

}  // namespace tern::testing
