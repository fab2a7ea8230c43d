// Helpers of the kernel-vs-reference tests: seeded random inputs and an element-wise comparison
// relative to the reference's magnitude (with an absolute floor for values near zero).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "runtime/rng.h"

namespace tern::testing {

inline std::vector<float> random_vector(int64_t n, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.uniform(lo, hi);
  return v;
}

// |got - want| <= tol · (1 + |want|) element by element; the first failure names `what`[i].
inline void expect_all_near(const std::vector<float>& got, const std::vector<float>& want, double tol,
                            const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1.0 + std::fabs(want[i]))) << what << "[" << i << "]";
}

}  // namespace tern::testing
