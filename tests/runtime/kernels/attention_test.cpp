#include "runtime/kernels/cpu/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <vector>

#include "runtime/kernels/reference/attention.h"
#include "runtime/rng.h"
#include "tests/support/kernel_check.h"

namespace tern {
namespace {

using testing::random_vector;
using testing::expect_all_near;

struct AttnCase {
  int64_t B, T, C, H;
  float spread;  // qkv values in [-spread, spread]: large spreads give near one-hot softmax rows
};

std::ostream& operator<<(std::ostream& out, const AttnCase& c) {
  return out << "B=" << c.B << " T=" << c.T << " C=" << c.C << " H=" << c.H << " spread=" << c.spread;
}

class CausalAttentionKernel : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CausalAttentionKernel, ForwardAndBackwardMatchTheReference) {
  const AttnCase c = GetParam();
  Rng rng(static_cast<uint64_t>(c.B * 1000 + c.T * 10 + c.H));
  const auto qkv = random_vector(c.B * c.T * 3 * c.C, rng, -c.spread, c.spread);
  const auto dy = random_vector(c.B * c.T * c.C, rng);
  const size_t ny = static_cast<size_t>(c.B * c.T * c.C), na = static_cast<size_t>(c.B * c.H * c.T * c.T);
  std::vector<float> y(ny), att(na), y_ref(ny), att_ref(na);
  cpu::causal_attention_forward(qkv.data(), c.B, c.T, c.C, c.H, y.data(), att.data());
  ref::causal_attention_forward(qkv.data(), c.B, c.T, c.C, c.H, y_ref.data(), att_ref.data());
  expect_all_near(att, att_ref, 2e-5, "att");
  expect_all_near(y, y_ref, 2e-5 * c.spread, "y");

  std::vector<float> dqkv(qkv.size(), 7.0f), dqkv_ref(qkv.size());  // 7: must be overwritten
  cpu::causal_attention_backward(dy.data(), qkv.data(), att.data(), c.B, c.T, c.C, c.H, dqkv.data());
  ref::causal_attention_backward(dy.data(), qkv.data(), att_ref.data(), c.B, c.T, c.C, c.H, dqkv_ref.data());
  // Gradients of q and k scale with the spread of k and q; with near one-hot rows the f32
  // probabilities carry relative errors of a few ulps times the score magnitude.
  expect_all_near(dqkv, dqkv_ref, 1e-4 * c.spread * c.spread, "dqkv");
}

INSTANTIATE_TEST_SUITE_P(Shapes, CausalAttentionKernel,
                         ::testing::Values(AttnCase{1, 1, 4, 1, 1.0f}, AttnCase{1, 5, 6, 2, 1.0f},
                                           AttnCase{2, 9, 12, 3, 2.0f}, AttnCase{3, 16, 32, 4, 1.0f},
                                           AttnCase{2, 33, 64, 4, 1.0f}, AttnCase{2, 7, 8, 2, 8.0f},
                                           AttnCase{4, 64, 64, 4, 1.0f}));  // threaded

TEST(CausalAttentionKernelProperty, RowsAreProbabilitiesThatNeverLookAhead) {
  const int64_t B = 2, T = 12, C = 16, H = 4;
  Rng rng(11);
  const auto qkv = random_vector(B * T * 3 * C, rng, -2.0f, 2.0f);
  std::vector<float> y(B * T * C), att(B * H * T * T);
  cpu::causal_attention_forward(qkv.data(), B, T, C, H, y.data(), att.data());
  for (int64_t r = 0; r < B * H * T; ++r) {
    const int64_t i = r % T;
    double sum = 0;
    for (int64_t j = 0; j < T; ++j) {
      const float p = att[r * T + j];
      if (j > i) {
        EXPECT_EQ(p, 0.0f) << "row " << r << " attends to a later position " << j;
      } else {
        EXPECT_GT(p, 0.0f);
      }
      sum += p;
    }
    EXPECT_NEAR(sum, 1.0, 1e-6) << r;
  }
}

TEST(CausalAttentionKernelProperty, ChangingALaterPositionLeavesEarlierOutputsAlone) {
  const int64_t B = 1, T = 10, C = 8, H = 2, changed = 6;
  Rng rng(12);
  auto qkv = random_vector(B * T * 3 * C, rng);
  std::vector<float> y(T * C), y2(T * C), att(H * T * T);
  cpu::causal_attention_forward(qkv.data(), B, T, C, H, y.data(), att.data());
  for (int64_t k = 0; k < 3 * C; ++k) qkv[changed * 3 * C + k] += 5.0f;  // its q, k and v
  cpu::causal_attention_forward(qkv.data(), B, T, C, H, y2.data(), att.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      if (t < changed)
        EXPECT_EQ(y[t * C + c], y2[t * C + c]) << "position " << t;
      else
        EXPECT_NE(y[t * C + c], y2[t * C + c]) << "position " << t;
    }
}

TEST(CausalAttentionKernelProperty, HugeScoresStayFinite) {
  // Scores of ~1e4 overflow exp() without the max subtraction; the rows must become one-hot.
  const int64_t B = 1, T = 8, C = 4, H = 1;
  Rng rng(13);
  const auto qkv = random_vector(B * T * 3 * C, rng, -100.0f, 100.0f);
  std::vector<float> y(T * C), att(T * T), dqkv(qkv.size()), dy(T * C, 1.0f);
  cpu::causal_attention_forward(qkv.data(), B, T, C, H, y.data(), att.data());
  cpu::causal_attention_backward(dy.data(), qkv.data(), att.data(), B, T, C, H, dqkv.data());
  for (float v : y) ASSERT_TRUE(std::isfinite(v));
  for (float v : dqkv) ASSERT_TRUE(std::isfinite(v));
  for (int64_t i = 0; i < T; ++i) {
    float mx = 0;
    for (int64_t j = 0; j <= i; ++j) mx = std::fmax(mx, att[i * T + j]);
    EXPECT_GT(mx, 0.99f) << "row " << i;
  }
}

}  // namespace
}  // namespace tern
