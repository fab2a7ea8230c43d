#include "runtime/kernels/cpu/tiny_linear.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/kernels/cpu/linear.h"
#include "runtime/kernels/reference/linear.h"
#include "runtime/rng.h"
#include "tests/support/kernel_check.h"

namespace tern {
namespace {

using testing::expect_all_near;
using testing::random_vector;

// Tolerance, relative to 1 + |reference| (kernel_check.h), against the reference's double sums.
// Inputs are U(-1, 1): a sum of K products has terms of rms 1/3, and float rounding in any
// summation order is about u·sqrt(K)·sqrt(K/9) = 2e-8·K (u = 6e-8), which cancellation can leave
// next to a small result. So 2e-8·K, at least 1e-5 (also for dw, a sum of n <= 4 products
// onto its old value). A wrong index or a missing/duplicated term moves values by O(0.1..1).
double tol(int64_t K) { return std::max(1e-5, 2e-8 * static_cast<double>(K)); }

// (in, out): ones, sizes around the 16-float vector, column blocks of 64/128 with every tail
// length the data-gradient kernel dispatches (113, 255: 8 vectors, last partial), output counts
// that leave every remainder of the 8-, 4- and 2-row blocks, and the zoo's tiny-batch shapes
// (mlp 784-512-256-10, cnn's classifier 3136-128-10).
const std::vector<std::pair<int64_t, int64_t>>& shapes() {
  static const std::vector<std::pair<int64_t, int64_t>> s{
      {1, 1},     {1, 7},    {7, 1},     {7, 5},      {15, 17},  {16, 16}, {17, 33},
      {33, 7},    {15, 15},  {64, 3},    {113, 11},   {255, 13}, {129, 6}, {784, 512},
      {512, 256}, {256, 10}, {784, 256}, {3136, 128}, {128, 10}};
  return s;
}

// Values past an output's end that the kernels must leave alone (masked tails).
constexpr int64_t kGuard = 40;
constexpr float kSentinel = 12345.0f;

std::vector<float> guarded(int64_t n, float fill = 0.0f) {
  std::vector<float> v(static_cast<size_t>(n + kGuard), kSentinel);
  std::fill(v.begin(), v.begin() + n, fill);
  return v;
}

void expect_guard_intact(const std::vector<float>& v, int64_t n, const char* what) {
  for (int64_t i = n; i < n + kGuard; ++i)
    ASSERT_EQ(v[static_cast<size_t>(i)], kSentinel) << what << " wrote past its end at " << i;
}

std::vector<float> body(const std::vector<float>& v, int64_t n) { return {v.begin(), v.begin() + n}; }

TEST(TinyLinear, ForwardMatchesReferenceWithAndWithoutBias) {
  for (int64_t n = 1; n <= 4; ++n)
    for (const auto& [in, out] : shapes())
      for (bool with_bias : {true, false}) {
        SCOPED_TRACE("n=" + std::to_string(n) + " in=" + std::to_string(in) + " out=" + std::to_string(out) +
                     (with_bias ? " bias" : " no bias"));
        Rng rng(static_cast<uint64_t>(n * 1000003 + in * 1009 + out));
        const auto x = random_vector(n * in, rng), w = random_vector(out * in, rng),
                   b = random_vector(out, rng);
        const float* bp = with_bias ? b.data() : nullptr;
        auto y = guarded(n * out, -7.0f);  // overwritten, not accumulated
        std::vector<float> y_ref(static_cast<size_t>(n * out));
        cpu::tiny_linear_forward(x.data(), w.data(), bp, y.data(), n, in, out);
        ref::linear_forward(x.data(), w.data(), bp, y_ref.data(), n, in, out);
        expect_all_near(body(y, n * out), y_ref, tol(in), "y");
        expect_guard_intact(y, n * out, "y");
      }
}

TEST(TinyLinear, BackwardDataOverwritesDxWithDyTimesW) {
  for (int64_t n = 1; n <= 4; ++n)
    for (const auto& [in, out] : shapes()) {
      SCOPED_TRACE("n=" + std::to_string(n) + " in=" + std::to_string(in) + " out=" + std::to_string(out));
      Rng rng(static_cast<uint64_t>(n * 7919 + in * 31 + out));
      const auto x = random_vector(n * in, rng), w = random_vector(out * in, rng);
      const auto dy = random_vector(n * out, rng);
      auto dx = guarded(n * in, 3.0f);  // stale values must not leak into the result
      std::vector<float> dx_ref(static_cast<size_t>(n * in)), dw_ref(static_cast<size_t>(out * in));
      cpu::tiny_linear_backward_data(w.data(), dy.data(), dx.data(), n, in, out);
      ref::linear_backward(x.data(), w.data(), dy.data(), dx_ref.data(), dw_ref.data(), nullptr, n, in, out);
      expect_all_near(body(dx, n * in), dx_ref, tol(out), "dx");
      expect_guard_intact(dx, n * in, "dx");
    }
}

TEST(TinyLinear, BackwardWeightAccumulatesOntoExistingGradients) {
  for (int64_t n = 1; n <= 4; ++n)
    for (const auto& [in, out] : shapes())
      for (bool with_bias : {true, false}) {
        SCOPED_TRACE("n=" + std::to_string(n) + " in=" + std::to_string(in) + " out=" + std::to_string(out) +
                     (with_bias ? " db" : " no db"));
        Rng rng(static_cast<uint64_t>(n * 104729 + in * 17 + out));
        const auto x = random_vector(n * in, rng), w = random_vector(out * in, rng);
        const auto dy = random_vector(n * out, rng);
        // Non-zero starting gradients (an earlier micro-batch's), which must be added to.
        const auto dw0 = random_vector(out * in, rng), db0 = random_vector(out, rng);
        auto dw = guarded(out * in), db = guarded(out);
        std::copy(dw0.begin(), dw0.end(), dw.begin());
        std::copy(db0.begin(), db0.end(), db.begin());
        auto dw_ref = dw0, db_ref = db0;
        cpu::tiny_linear_backward_weight(x.data(), dy.data(), dw.data(), with_bias ? db.data() : nullptr, n,
                                         in, out);
        ref::linear_backward(x.data(), w.data(), dy.data(), nullptr, dw_ref.data(),
                             with_bias ? db_ref.data() : nullptr, n, in, out);
        expect_all_near(body(dw, out * in), dw_ref, tol(n), "dw");
        expect_guard_intact(dw, out * in, "dw");
        expect_all_near(body(db, out), with_bias ? db_ref : db0, tol(n), "db");
        expect_guard_intact(db, out, "db");
      }
}

TEST(TinyLinear, RowsBeyondFourAreTakenFourAtATime) {
  // Not the kernels' purpose, but they must still be right there (n = 5..9: one or two full
  // blocks of 4 and every remainder).
  const int64_t in = 37, out = 19;
  for (int64_t n = 5; n <= 9; ++n) {
    SCOPED_TRACE("n=" + std::to_string(n));
    Rng rng(static_cast<uint64_t>(n));
    const auto x = random_vector(n * in, rng), w = random_vector(out * in, rng), b = random_vector(out, rng);
    const auto dy = random_vector(n * out, rng);
    std::vector<float> y(static_cast<size_t>(n * out)), y_ref(y.size()), dx(static_cast<size_t>(n * in)),
        dx_ref(dx.size());
    auto dw = random_vector(out * in, rng), db = random_vector(out, rng);
    auto dw_ref = dw, db_ref = db;
    cpu::tiny_linear_forward(x.data(), w.data(), b.data(), y.data(), n, in, out);
    cpu::tiny_linear_backward_data(w.data(), dy.data(), dx.data(), n, in, out);
    cpu::tiny_linear_backward_weight(x.data(), dy.data(), dw.data(), db.data(), n, in, out);
    ref::linear_forward(x.data(), w.data(), b.data(), y_ref.data(), n, in, out);
    ref::linear_backward(x.data(), w.data(), dy.data(), dx_ref.data(), dw_ref.data(), db_ref.data(), n, in,
                         out);
    expect_all_near(y, y_ref, tol(in), "y");
    expect_all_near(dx, dx_ref, tol(out), "dx");
    expect_all_near(dw, dw_ref, tol(n), "dw");
    expect_all_near(db, db_ref, tol(n), "db");
  }
}

// Restores the process-wide switch however the test ends.
struct TinySwitch {
  explicit TinySwitch(bool on) : was(cpu::tiny_linear_enabled()) { cpu::set_tiny_linear_enabled(on); }
  ~TinySwitch() { cpu::set_tiny_linear_enabled(was); }
  bool was;
};

TEST(LinearDispatch, MatchesReferenceAtEveryRowCountEitherWay) {
  // Both sides of the tiny/gemm boundary (n = 1..8), with the tiny kernels allowed and switched
  // off, dx requested or not (null), bias or not.
  for (bool tiny : {true, false}) {
    TinySwitch on(tiny);
    for (int64_t n = 1; n <= 8; ++n)
      for (const auto& [in, out] : std::vector<std::pair<int64_t, int64_t>>{{17, 33}, {784, 512}, {256, 10}})
        for (bool with_bias : {true, false})
          for (bool with_dx : {true, false}) {
            SCOPED_TRACE(std::string(tiny ? "tiny on" : "tiny off") + " n=" + std::to_string(n) +
                         " in=" + std::to_string(in) + " out=" + std::to_string(out) +
                         (with_bias ? " bias" : "") + (with_dx ? " dx" : " no dx"));
            if (!tiny) {
              ASSERT_FALSE(cpu::linear_forward_uses_tiny(n, in, out));
              ASSERT_FALSE(cpu::linear_backward_uses_tiny(n, in, out));
            }
            Rng rng(static_cast<uint64_t>(n * 131 + in + out));
            const auto x = random_vector(n * in, rng), w = random_vector(out * in, rng),
                       b = random_vector(out, rng), dy = random_vector(n * out, rng);
            const float* bp = with_bias ? b.data() : nullptr;
            std::vector<float> y(static_cast<size_t>(n * out)), y_ref(y.size());
            std::vector<float> dx(static_cast<size_t>(n * in)), dx_ref(dx.size());
            auto dw = random_vector(out * in, rng), db = random_vector(out, rng);
            auto dw_ref = dw, db_ref = db;
            cpu::linear_forward(x.data(), w.data(), bp, y.data(), n, in, out);
            ref::linear_forward(x.data(), w.data(), bp, y_ref.data(), n, in, out);
            cpu::linear_backward(x.data(), w.data(), dy.data(), with_dx ? dx.data() : nullptr, dw.data(),
                                 with_bias ? db.data() : nullptr, n, in, out);
            ref::linear_backward(x.data(), w.data(), dy.data(), dx_ref.data(), dw_ref.data(),
                                 with_bias ? db_ref.data() : nullptr, n, in, out);
            expect_all_near(y, y_ref, tol(in), "y");
            if (with_dx) expect_all_near(dx, dx_ref, tol(out), "dx");
            expect_all_near(dw, dw_ref, tol(n), "dw");
            expect_all_near(db, db_ref, tol(n), "db");
          }
  }
}

TEST(LinearDispatch, TinyKernelsServeOnlyUpToFourRows) {
  TinySwitch on(true);
  for (int64_t n = cpu::kTinyLinearMaxRows + 1; n <= 64; ++n) {
    EXPECT_FALSE(cpu::linear_forward_uses_tiny(n, 784, 512)) << n;
    EXPECT_FALSE(cpu::linear_backward_uses_tiny(n, 784, 512)) << n;
  }
}

}  // namespace
}  // namespace tern
