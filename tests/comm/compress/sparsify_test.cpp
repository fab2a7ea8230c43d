#include "comm/compress/sparsify.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/rng.h"

namespace tern {
namespace {

// The definition, by sorting: indices ordered by |x| descending then index ascending, the first k,
// returned ascending and offset by base.
std::vector<int32_t> sorted_topk(const std::vector<float>& x, int64_t k, int32_t base) {
  std::vector<int32_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return std::fabs(x[static_cast<size_t>(a)]) > std::fabs(x[static_cast<size_t>(b)]);
  });
  order.resize(static_cast<size_t>(std::clamp<int64_t>(k, 0, static_cast<int64_t>(x.size()))));
  std::sort(order.begin(), order.end());
  for (int32_t& i : order) i += base;
  return order;
}

enum class Dist { normal, ties, coarse, heavy, zeros };

std::vector<float> values(Dist dist, int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) {
    switch (dist) {
      case Dist::normal:
        v = rng.normal();
        break;
      case Dist::ties:
        v = static_cast<float>(static_cast<int>(rng.below(9)) - 4);
        break;  // -4..4, many ties and zeros
      case Dist::coarse:
        v = std::round(rng.normal() * 64) / 64;
        break;  // a few ties at every magnitude
      case Dist::heavy:
        v = rng.normal() / std::max(1e-3f, rng.uniform());
        break;  // Cauchy-like tails
      case Dist::zeros:
        v = rng.uniform() < 0.9f ? 0.0f : rng.normal();
        break;  // 90% zeros
    }
  }
  return x;
}

TEST(TopK, PicksExactlyTheKLargest) {
  struct Case {
    Dist dist;
    int64_t n;
    std::vector<int64_t> ks;
  };
  // n = 1 << 18 with k <= n / 64 takes the sampled path (coarse: with ties at the cut); the rest,
  // and the many-ties case whose guess admits too many candidates, take the radix path.
  const std::vector<Case> cases = {
      {Dist::normal, 0, {0, 1, 5}},
      {Dist::normal, 1, {0, 1, 2}},
      {Dist::normal, 7, {0, 1, 3, 7, 8}},
      {Dist::ties, 100, {1, 10, 11, 50, 99, 100}},
      {Dist::normal, 5000, {1, 5, 50, 2500, 4999}},
      {Dist::normal, 1 << 18, {1, 262, 1000, 4096, 100000}},
      {Dist::ties, 1 << 18, {1, 262, 4096, 100000}},
      {Dist::coarse, 1 << 18, {1, 262, 1000, 4096, 100000}},
      {Dist::heavy, 1 << 18, {1, 262, 4096}},
      {Dist::zeros, 1 << 18, {262, 4096, 30000}},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    const std::vector<float> x = values(c.dist, c.n, seed++);
    for (int64_t k : c.ks) {
      for (int32_t base : {0, 1000}) {
        std::vector<int32_t> idx = {-7};  // appends: what was there stays
        topk_select(x.data(), c.n, k, base, idx);
        std::vector<int32_t> expect = sorted_topk(x, k, base);
        expect.insert(expect.begin(), -7);
        ASSERT_EQ(idx, expect) << "dist " << static_cast<int>(c.dist) << " n " << c.n << " k " << k
                               << " base " << base;
      }
    }
  }
}

TEST(TopK, TiesGoToTheLowerIndexAndSignIsIgnored) {
  const std::vector<float> x = {1, -3, 3, 2, -3, 0, 3};
  std::vector<int32_t> idx;
  topk_select(x.data(), 7, 2, 0, idx);
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2}));
  idx.clear();
  topk_select(x.data(), 7, 4, 10, idx);
  EXPECT_EQ(idx, (std::vector<int32_t>{11, 12, 14, 16}));
}

// Checks what threshold_select promises for x and k: ascending, in range, a threshold cut
// (everything strictly above the final threshold is in, everything in is at or above it), no
// zeros, and a count in [k (1 - tolerance), k] unless fewer entries are non-zero.
void expect_threshold_selection(const std::vector<float>& x, int64_t k, const std::vector<int32_t>& idx,
                                const ThresholdSelectStats& stats, const std::string& what) {
  int64_t nonzero = 0;
  for (float v : x) nonzero += v != 0.0f;
  const int64_t count = static_cast<int64_t>(idx.size());
  EXPECT_LE(count, k) << what;
  EXPECT_GE(static_cast<double>(count),
            std::min<double>((1 - kSelectTolerance) * static_cast<double>(k), static_cast<double>(nonzero)))
      << what << " rounds " << stats.rounds;
  std::vector<bool> in(x.size(), false);
  for (size_t j = 0; j < idx.size(); ++j) {
    ASSERT_TRUE(idx[j] >= 0 && idx[j] < static_cast<int32_t>(x.size())) << what;
    if (j > 0) {
      ASSERT_LT(idx[j - 1], idx[j]) << what << ": ascending, no repeats";
    }
    in[static_cast<size_t>(idx[j])] = true;
    ASSERT_NE(x[static_cast<size_t>(idx[j])], 0.0f) << what;
    ASSERT_GE(std::fabs(x[static_cast<size_t>(idx[j])]), stats.threshold) << what;
  }
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::fabs(x[i]) > stats.threshold) {
      ASSERT_TRUE(in[i]) << what << ": entry " << i << " is above the threshold";
    }
  }
}

TEST(ThresholdSelect, CountIsWithinToleranceOfKOnSeveralDistributions) {
  const int64_t n = 300000;
  for (Dist dist : {Dist::normal, Dist::heavy, Dist::zeros, Dist::ties}) {
    const std::vector<float> x = values(dist, n, 11 + static_cast<uint64_t>(dist));
    for (double ratio : {0.001, 0.003, 0.01, 0.03, 0.1}) {
      const int64_t k = static_cast<int64_t>(std::ceil(ratio * n));
      Rng rng(5);
      std::vector<int32_t> idx;
      const ThresholdSelectStats stats = threshold_select(x.data(), n, k, 0, rng, idx);
      expect_threshold_selection(
          x, k, idx, stats,
          "dist " + std::to_string(static_cast<int>(dist)) + " ratio " + std::to_string(ratio));
    }
  }
}

TEST(ThresholdSelect, TakesEveryNonZeroWhenTooFewAreNonZero) {
  std::vector<float> x(100000, 0.0f);
  for (int i = 0; i < 300; ++i) x[static_cast<size_t>(i * 331)] = static_cast<float>(i % 5) - 2.5f;
  Rng rng(1);
  std::vector<int32_t> idx;
  const ThresholdSelectStats stats = threshold_select(x.data(), 100000, 1000, 0, rng, idx);
  EXPECT_EQ(idx.size(), 300u);
  expect_threshold_selection(x, 1000, idx, stats, "sparse input");
}

TEST(ThresholdSelect, SmallTensorsAreSampledWholeAndSelectedExactly) {
  // n <= min_sample: the sample is all of x, so the threshold is the exact k-th largest and
  // (distinct magnitudes) exactly the top k are selected, without refinement.
  const std::vector<float> x = values(Dist::normal, 800, 3);
  for (int64_t k : {1, 8, 80, 800}) {
    Rng rng(2);
    std::vector<int32_t> idx = {-1};
    const ThresholdSelectStats stats = threshold_select(x.data(), 800, k, 50, rng, idx);
    std::vector<int32_t> expect = sorted_topk(x, k, 50);
    expect.insert(expect.begin(), -1);
    EXPECT_EQ(idx, expect) << k;
    EXPECT_EQ(stats.rounds, 0) << k;
  }
}

TEST(ThresholdSelect, SameSeedSameSelection) {
  const std::vector<float> x = values(Dist::heavy, 200000, 4);
  Rng a(9), b(9);
  std::vector<int32_t> ia, ib;
  threshold_select(x.data(), 200000, 200, 0, a, ia);
  threshold_select(x.data(), 200000, 200, 0, b, ib);
  EXPECT_EQ(ia, ib);
  EXPECT_EQ(a.state(), b.state());
}

TEST(DgcWarmup, FollowsThePapersExponentialSchedule) {
  DgcOptions o;  // ratio 0.001, 4 warm-up epochs: the paper's 75%, 93.75%, 98.4375%, 99.6%, 99.9% sparsity
  const double paper[] = {0.25, 0.0625, 0.015625, 0.004};
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(dgc_ratio_at(o, e), paper[e], 0.02 * paper[e]) << e;
  for (int e : {4, 5, 100}) EXPECT_EQ(dgc_ratio_at(o, e), 0.001) << e;
  // Other lengths: E + 1 equal steps in log-space from 1 down to ratio (the reference code).
  o.ratio = 0.01;
  o.warmup_epochs = 2;
  EXPECT_NEAR(dgc_ratio_at(o, 0), std::pow(0.01, 1.0 / 3), 1e-12);
  EXPECT_NEAR(dgc_ratio_at(o, 1), std::pow(0.01, 2.0 / 3), 1e-12);
  EXPECT_EQ(dgc_ratio_at(o, 2), 0.01);
  o.warmup_epochs = 0;
  EXPECT_EQ(dgc_ratio_at(o, 0), 0.01) << "no warm-up";
  o.warmup_epochs = 7;
  for (int e = 0; e < 10; ++e) {
    EXPECT_GE(dgc_ratio_at(o, e), 0.01) << "never below ratio";
    if (e > 0) {
      EXPECT_LE(dgc_ratio_at(o, e), dgc_ratio_at(o, e - 1)) << "sparsity only grows";
    }
  }
}

BucketLayout two_segments() {
  BucketLayout layout(2);
  layout[0] = {"a", 0, 4, {4}};
  layout[1] = {"b", 6, 2, {2}};  // [4, 6) is not in the layout
  return layout;
}

TEST(Dgc, MomentumCorrectionAndMaskingMatchAHandComputation) {
  DgcOptions o;
  o.ratio = 0.25;  // k = 1 for both segments
  o.momentum = 0.5;
  o.warmup_epochs = 0;
  Dgc dgc(o, two_segments(), 1);
  SparseVector out;
  // Step 1: u = g, v = g. a sends -4 at 1; b sends 3 at 6; both zero u and v there.
  const std::vector<float> g1 = {1, -4, 2, 0.5f, 100, 100, 3, -1};
  dgc.compress(g1.data(), StepInfo{0, 0}, out);
  EXPECT_EQ(out.indices, (std::vector<int32_t>{1, 6}));
  EXPECT_EQ(out.values, (std::vector<float>{-4, 3}));
  auto flat = [](const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); };
  EXPECT_EQ(flat(dgc.velocity()), (std::vector<float>{1, 0, 2, 0.5f, 0, 0, 0, -1}));
  EXPECT_EQ(flat(dgc.accumulation()), (std::vector<float>{1, 0, 2, 0.5f, 0, 0, 0, -1}));
  // Step 2: a: u = 0.5 [1 0 2 .5] + [1 1 -1 2] = [1.5 1 0 2.25], v = [2.5 1 2 2.75]: sends 2.75 at 3.
  //         b: u = 0.5 [0 -1] + [1 1] = [1 .5], v = [1 -.5]: sends 1 at 6.
  const std::vector<float> g2 = {1, 1, -1, 2, 100, 100, 1, 1};
  out.clear();
  dgc.compress(g2.data(), StepInfo{1, 0}, out);
  EXPECT_EQ(out.indices, (std::vector<int32_t>{3, 6}));
  EXPECT_EQ(out.values, (std::vector<float>{2.75f, 1}));
  EXPECT_EQ(flat(dgc.velocity()), (std::vector<float>{1.5f, 1, 0, 0, 0, 0, 0, 0.5f}));
  EXPECT_EQ(flat(dgc.accumulation()), (std::vector<float>{2.5f, 1, 2, 0, 0, 0, 0, -0.5f}));
}

TEST(Dgc, SendsCeilOfTheWarmupRatioPerTensor) {
  DgcOptions o;  // ratio 0.001, warm-up 4 epochs
  BucketLayout layout(2);
  layout[0] = {"w", 0, 1000, {1000}};
  layout[1] = {"b", 1000, 10, {10}};
  Dgc dgc(o, layout, 1);
  const std::vector<float> g = values(Dist::normal, 1010, 8);  // distinct magnitudes; n < min_sample: exact
  SparseVector out;
  dgc.compress(g.data(), StepInfo{0, 0}, out);
  const int64_t k0 = static_cast<int64_t>(std::ceil(dgc_ratio_at(o, 0) * 1000));  // 252
  EXPECT_EQ(static_cast<int64_t>(out.size()), k0 + 3);                            // + ceil(2.512)
  out.clear();
  dgc.compress(g.data(), StepInfo{1, 4}, out);
  EXPECT_EQ(out.size(), 2u) << "after warm-up: max(1, ceil(0.001 n)) per tensor";
}

TEST(Dgc, WhatIsSentPlusWhatRemainsEqualsTheAccumulatedVelocities) {
  DgcOptions o;
  o.ratio = 0.01;
  o.momentum = 0.9;
  o.warmup_epochs = 0;
  o.min_sample = 100;  // sampled thresholds, refinement and all
  BucketLayout layout(3);
  layout[0] = {"conv", 0, 20000, {20, 1000}};
  layout[1] = {"bias", 20000, 7, {7}};
  layout[2] = {"fc", 20010, 5000, {5000}};
  const int64_t extent = 25010;
  Dgc dgc(o, layout, 2);
  std::vector<double> velocity_sum(extent, 0), sent_sum(extent, 0);
  Rng rng(3);
  SparseVector out;
  for (int64_t step = 0; step < 20; ++step) {
    std::vector<float> g(extent);
    for (float& v : g) v = rng.normal();
    // u_t = m u_{t-1} + g_t, where u_{t-1} is the state after the previous step's masking.
    const float* u = dgc.velocity().f32();
    for (int64_t i = 0; i < extent; ++i) velocity_sum[i] += 0.9 * u[i] + g[i];
    out.clear();
    dgc.compress(g.data(), StepInfo{step, 0}, out);
    ASSERT_EQ(out.indices.size(), out.values.size());
    for (size_t j = 0; j < out.size(); ++j) {
      const int32_t i = out.indices[j];
      ASSERT_FALSE(i >= 20007 && i < 20010) << "index outside the layout";
      ASSERT_EQ(dgc.velocity().f32()[i], 0.0f) << "momentum-factor masking";
      ASSERT_EQ(dgc.accumulation().f32()[i], 0.0f);
      sent_sum[i] += out.values[j];
    }
  }
  const float* v = dgc.accumulation().f32();
  for (int64_t i = 0; i < extent; ++i) {
    if (i >= 20007 && i < 20010) continue;
    const double expect = velocity_sum[i], got = sent_sum[i] + v[i];
    ASSERT_NEAR(got, expect, 1e-4 * (1 + std::fabs(expect))) << i;
  }
}

TEST(Dgc, ClipsALargeGradientToClipOverSqrtWorldSize) {
  DgcOptions o;
  o.ratio = 0.1;
  o.warmup_epochs = 0;
  o.clip = 2.0;  // with 4 ranks: max norm 2 / sqrt(4) = 1 per rank
  BucketLayout layout(1);
  layout[0] = {"w", 0, 200, {200}};
  // First step: u = v = the clipped gradient, split between what was sent and what remains in v.
  auto first_velocity = [&](const std::vector<float>& g) {
    Dgc dgc(o, layout, 4);
    SparseVector out;
    dgc.compress(g.data(), StepInfo{0, 0}, out);
    std::vector<float> u(dgc.accumulation().f32(), dgc.accumulation().f32() + 200);
    for (size_t j = 0; j < out.size(); ++j) u[static_cast<size_t>(out.indices[j])] += out.values[j];
    return u;
  };
  std::vector<float> g = values(Dist::normal, 200, 6);
  for (float& v : g) v *= 10;  // norm ~ 141
  double gnorm = 0;
  for (float v : g) gnorm += static_cast<double>(v) * v;
  gnorm = std::sqrt(gnorm);
  const std::vector<float> u = first_velocity(g);
  double norm = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    norm += static_cast<double>(u[i]) * u[i];
    ASSERT_NEAR(u[i], g[i] / gnorm, 1e-6) << "clipping scales, keeping the direction";
  }
  EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-5);
  // A gradient already inside the bound is left alone.
  std::vector<float> small = values(Dist::normal, 200, 7);
  for (float& v : small) v *= 0.02f;  // norm ~ 0.28
  EXPECT_EQ(first_velocity(small), small);
}

TEST(Dgc, RejectsBadOptions) {
  DgcOptions o;
  o.ratio = 0;
  EXPECT_THROW(Dgc(o, two_segments(), 1), Error);
  o.ratio = 0.01;
  EXPECT_THROW(Dgc(o, two_segments(), 0), Error);
  o.clip = -1;
  EXPECT_THROW(Dgc(o, two_segments(), 1), Error);
}

}  // namespace
}  // namespace tern
