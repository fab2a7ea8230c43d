// PowerSGD: Gram-Schmidt, exact recovery of low-rank gradients, error feedback, the dense paths
// (start_iter, min_ratio, vectors), agreement between ranks, the byte accounting and the state.
#include "comm/compress/powersgd.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "comm/local/local.h"
#include "runtime/rng.h"

namespace tern {
namespace {

std::vector<float> normal_values(int64_t n, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal();
  return v;
}

// The row-major [rows, cols] matrix sum_k u_k v_kᵀ with `rank` random terms.
std::vector<float> low_rank_matrix(int64_t rows, int64_t cols, int rank, Rng& rng) {
  std::vector<float> m(static_cast<size_t>(rows * cols), 0.0f);
  for (int k = 0; k < rank; ++k) {
    const auto u = normal_values(rows, rng), v = normal_values(cols, rng);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) m[static_cast<size_t>(i * cols + j)] += u[i] * v[j];
    }
  }
  return m;
}

Segment segment(const std::string& name, int64_t offset, const Shape& shape) {
  return Segment{name, offset, shape_numel(shape), shape};
}

// Segments placed back to back from offset 0.
BucketLayout pack(const std::vector<std::pair<std::string, Shape>>& tensors) {
  BucketLayout layout;
  int64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    layout.push_back(segment(name, offset, shape));
    offset += shape_numel(shape);
  }
  return layout;
}

int64_t extent(const BucketLayout& layout) {
  int64_t n = 0;
  for (const Segment& s : layout) n = std::max(n, s.offset + s.numel);
  return n;
}

Tensor state_of(PowerSgd& c, const std::string& name) {
  for (auto& [key, t] : c.state()) {
    if (key == name) return t;
  }
  ADD_FAILURE() << "no state named " << name;
  return Tensor();
}

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

Tensor tensor_of(const std::vector<float>& v) { return Tensor::from({static_cast<int64_t>(v.size())}, v); }

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::abs(x));
  return m;
}

TEST(PowerSgd, OrthonormalizeColumnsGivesOrthonormalBasisOfTheSameSpan) {
  Rng rng(11);
  for (const auto& [rows, cols] :
       std::vector<std::pair<int64_t, int64_t>>{{100, 1}, {100, 4}, {1000, 8}, {37, 37}}) {
    const auto a = normal_values(rows * cols, rng);
    auto p = a;
    orthonormalize_columns(p.data(), rows, cols);
    // PᵀP = I within 1e-5: float32 rounding of the projections, twice-repeated Gram-Schmidt.
    for (int64_t j = 0; j < cols; ++j) {
      for (int64_t k = 0; k < cols; ++k) {
        double dot = 0;
        for (int64_t i = 0; i < rows; ++i) dot += double(p[i * cols + j]) * p[i * cols + k];
        EXPECT_NEAR(dot, j == k ? 1.0 : 0.0, 1e-5) << rows << "x" << cols << " columns " << j << "," << k;
      }
    }
    // Every column of A lies in the span of P: |PPᵀa - a| <= 1e-5 |a|.
    for (int64_t j = 0; j < cols; ++j) {
      std::vector<double> coef(static_cast<size_t>(cols), 0.0);
      double norm = 0;
      for (int64_t i = 0; i < rows; ++i) {
        norm += double(a[i * cols + j]) * a[i * cols + j];
        for (int64_t k = 0; k < cols; ++k) coef[k] += double(p[i * cols + k]) * a[i * cols + j];
      }
      double err = 0;
      for (int64_t i = 0; i < rows; ++i) {
        double proj = 0;
        for (int64_t k = 0; k < cols; ++k) proj += coef[k] * p[i * cols + k];
        err += (proj - a[i * cols + j]) * (proj - a[i * cols + j]);
      }
      EXPECT_LE(std::sqrt(err), 1e-5 * std::sqrt(norm)) << rows << "x" << cols << " column " << j;
    }
  }
}

TEST(PowerSgd, OrthonormalizeColumnsZeroesDependentColumnsWithoutNaN) {
  const int64_t rows = 50, cols = 5;
  Rng rng(12);
  const auto c0 = normal_values(rows, rng), c1 = normal_values(rows, rng), c4 = normal_values(rows, rng);
  std::vector<float> a(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i) {
    a[i * cols + 0] = c0[i];
    a[i * cols + 1] = c1[i];
    a[i * cols + 2] = c0[i] - 2.0f * c1[i];  // dependent on 0 and 1
    a[i * cols + 3] = 0.0f;                  // zero
    a[i * cols + 4] = c4[i];                 // independent again, after the zero ones
  }
  orthonormalize_columns(a.data(), rows, cols);
  for (float x : a) ASSERT_TRUE(std::isfinite(x));
  for (int64_t i = 0; i < rows; ++i) {
    EXPECT_EQ(a[i * cols + 2], 0.0f);
    EXPECT_EQ(a[i * cols + 3], 0.0f);
  }
  for (int64_t j : {0, 1, 4}) {
    double norm = 0;
    for (int64_t i = 0; i < rows; ++i) norm += double(a[i * cols + j]) * a[i * cols + j];
    EXPECT_NEAR(norm, 1.0, 1e-5) << "column " << j;
  }
  std::vector<float> zeros(20, 0.0f);
  orthonormalize_columns(zeros.data(), 10, 2);
  for (float x : zeros) EXPECT_EQ(x, 0.0f);
}

// Runs `steps` reductions of the same rank-`true_rank` gradient, identical on all ranks, and checks
// each result: M̂ = P̂P̂ᵀM is M once P's columns span M's column space, which one power-iteration step
// from a random Q already gives when rank(M) <= R; warm start keeps it. Tolerance: 1e-4 of the
// largest entry, far above float32 rounding of three GEMMs of inner size <= 96 (about 1e-6).
void expect_low_rank_recovered(int world, int rank, int true_rank, bool warm_start) {
  const BucketLayout layout = pack({{"w", {64, 96}}, {"conv", {32, 4, 3, 3}}});
  Rng rng(21);
  const auto w = low_rank_matrix(64, 96, true_rank, rng);
  const auto conv = low_rank_matrix(32, 36, true_rank, rng);
  std::vector<float> grad = w;
  grad.insert(grad.end(), conv.begin(), conv.end());
  const float tol = 1e-4f * max_abs(grad);
  run_local(world, [&](Communicator& comm) {
    PowerSgdOptions options;
    options.rank = rank;
    options.start_iter = 0;
    options.warm_start = warm_start;
    options.seed = 5;
    PowerSgd c(options, layout);
    ASSERT_EQ(c.matrices().size(), 2u);
    for (int64_t s = 0; s < 3; ++s) {
      Tensor g = tensor_of(grad);
      c.reduce(g, layout, comm, StepInfo{s, 0}, nullptr);
      const float* out = g.f32();
      for (size_t i = 0; i < grad.size(); ++i) {
        ASSERT_NEAR(out[i], grad[i], tol) << "rank " << comm.rank() << " step " << s << " element " << i;
      }
      EXPECT_LE(max_abs(values(state_of(c, "residual"))), tol);
    }
  });
}

TEST(PowerSgd, RecoversGradientOfRankAtMostRExactly) {
  expect_low_rank_recovered(/*world=*/2, /*rank=*/2, /*true_rank=*/2, /*warm_start=*/true);
  expect_low_rank_recovered(2, 4, 1, true);  // rank-deficient: the extra directions come out zero
  expect_low_rank_recovered(3, 3, 3, false);
  expect_low_rank_recovered(1, 2, 2, true);
}

// A zero gradient leaves P̂ and then Q with zero columns; the next non-zero gradient of rank R
// must still be recovered in full (zero Q columns are redrawn), not through a Q stuck at zero.
TEST(PowerSgd, RecoversAfterAZeroOrRankDeficientGradient) {
  const BucketLayout layout = pack({{"w", {40, 30}}});
  Rng rng(22);
  const auto rank1 = low_rank_matrix(40, 30, 1, rng);
  const auto rank3 = low_rank_matrix(40, 30, 3, rng);
  const std::vector<float> zero(rank1.size(), 0.0f);
  run_local(2, [&](Communicator& comm) {
    PowerSgdOptions options;
    options.rank = 3;
    options.start_iter = 0;
    PowerSgd c(options, layout);
    int64_t step = 0;
    for (const auto* grad : {&zero, &rank1, &rank3}) {
      Tensor g = tensor_of(*grad);
      c.reduce(g, layout, comm, StepInfo{step++, 0}, nullptr);
      const float tol = 1e-4f * std::max(max_abs(*grad), 1.0f);
      for (size_t i = 0; i < grad->size(); ++i)
        ASSERT_NEAR(g.f32()[i], (*grad)[i], tol) << "step " << step - 1;
    }
  });
}

TEST(PowerSgd, ErrorFeedbackConservesTheGradient) {
  const BucketLayout layout = pack({{"w", {48, 40}}, {"b", {40}}});
  run_local(2, [&](Communicator& comm) {
    PowerSgdOptions options;
    options.rank = 2;
    options.start_iter = 1;
    PowerSgd c(options, layout);
    Rng rng(31, static_cast<uint64_t>(comm.rank()));
    const Segment& w = layout[0];
    for (int64_t s = 0; s < 4; ++s) {
      const auto grad = normal_values(extent(layout), rng);
      const auto before = values(state_of(c, "residual"));
      Tensor g = tensor_of(grad);
      c.reduce(g, layout, comm, StepInfo{s, 0}, nullptr);
      const auto after = values(state_of(c, "residual"));
      // Dense segments carry no residual, and nothing does before start_iter.
      for (int64_t i = layout[1].offset; i < layout[1].offset + layout[1].numel; ++i) {
        EXPECT_EQ(after[i], 0.0f);
      }
      if (s < options.start_iter) {
        EXPECT_EQ(max_abs(after), 0.0f) << "step " << s;
        continue;
      }
      // M̂ + residual = grad + previous residual on the compressed matrix (float32 rounding of one
      // subtraction: 1e-5 absolute for values of order 10).
      for (int64_t i = w.offset; i < w.offset + w.numel; ++i) {
        ASSERT_NEAR(g.f32()[i] + after[i], grad[i] + before[i], 1e-5f) << "step " << s << " element " << i;
      }
      EXPECT_GT(max_abs(after), 0.01f) << "full-rank gradients must leave a residual";
      if (s > options.start_iter) {
        EXPECT_GT(max_abs(before), 0.01f) << "the residual is carried over";
      }
    }
  });
}

// Each rank's gradient for step s: normal values from stream (rank, s), so the test can compute
// the exact average itself.
std::vector<float> rank_gradient(int64_t n, int rank, int64_t step) {
  Rng rng(41 + static_cast<uint64_t>(step), static_cast<uint64_t>(rank));
  return normal_values(n, rng);
}

std::vector<float> exact_average(int64_t n, int world, int64_t step) {
  std::vector<double> sum(static_cast<size_t>(n), 0.0);
  for (int r = 0; r < world; ++r) {
    const auto g = rank_gradient(n, r, step);
    for (int64_t i = 0; i < n; ++i) sum[i] += g[i];
  }
  std::vector<float> avg(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) avg[i] = static_cast<float>(sum[i] / world);
  return avg;
}

TEST(PowerSgd, StepsBeforeStartIterAreTheExactDenseAverage) {
  const BucketLayout layout = pack({{"w", {64, 64}}, {"b", {64}}});
  const int world = 3;
  const int64_t n = extent(layout);
  run_local(world, [&](Communicator& comm) {
    PowerSgdOptions options;
    options.rank = 2;
    options.start_iter = 2;
    PowerSgd c(options, layout);
    for (int64_t s = 0; s < 3; ++s) {
      Tensor g = tensor_of(rank_gradient(n, comm.rank(), s));
      c.reduce(g, layout, comm, StepInfo{s, 0}, nullptr);
      const auto avg = exact_average(n, world, s);
      float worst = 0;
      for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(g.f32()[i] - avg[i]));
      if (s < 2) {
        EXPECT_LE(worst, 1e-6f) << "step " << s;  // float sums of 3 values of order 1
        EXPECT_EQ(max_abs(values(state_of(c, "residual"))), 0.0f) << "no error feedback before start_iter";
        EXPECT_EQ(c.stats().bytes_sent, c.stats().bytes_dense) << "step " << s;
      } else {
        EXPECT_GT(worst, 0.1f) << "step " << s
                               << " should be a rank-2 approximation of random 64x64 gradients";
        EXPECT_LT(c.stats().bytes_sent, c.stats().bytes_dense);
      }
    }
  });
}

TEST(PowerSgd, SmallMatricesAndVectorsGoDense) {
  // With R = 4 and min_ratio = 2: [64, 64] -> 4096 / (4·128) = 8 (compressed); [16, 8, 3, 3] is
  // [16, 72] -> 1152 / (4·88) = 3.3 (compressed); [8, 3, 3, 3] is [8, 27] -> 216 / (4·35) = 1.5
  // (dense); [4, 3] has r = 3 -> 12 / (3·7) = 0.6 (dense); [10] is 1-D (dense); [0, 5] is empty.
  BucketLayout layout = pack({{"fc", {64, 64}},
                              {"small", {4, 3}},
                              {"bias", {10}},
                              {"conv", {16, 8, 3, 3}},
                              {"conv_small", {8, 3, 3, 3}},
                              {"empty", {0, 5}}});
  // A gap after the matrices (not in the layout) that reduce() must not touch.
  const int64_t gap = 7;
  for (size_t i = 1; i < layout.size(); ++i) layout[i].offset += gap;
  const int64_t n = extent(layout) + 3;
  const int world = 2;
  run_local(world, [&](Communicator& comm) {
    PowerSgdOptions options;
    options.rank = 4;
    options.start_iter = 0;
    options.min_ratio = 2.0;
    PowerSgd c(options, layout);
    const auto& mats = c.matrices();
    ASSERT_EQ(mats.size(), 2u);
    EXPECT_EQ(mats[0].segment, 0u);
    EXPECT_EQ(mats[0].rows, 64);
    EXPECT_EQ(mats[0].cols, 64);
    EXPECT_EQ(mats[1].segment, 3u);
    EXPECT_EQ(mats[1].rows, 16);
    EXPECT_EQ(mats[1].cols, 72);
    EXPECT_EQ(mats[1].p_offset, 64 * 4);
    EXPECT_EQ(mats[1].q_offset, 64 * 4);
    const auto grad = rank_gradient(n, comm.rank(), 0);
    Tensor g = tensor_of(grad);
    c.reduce(g, layout, comm, StepInfo{0, 0}, nullptr);
    const auto avg = exact_average(n, world, 0);
    for (size_t s : {1u, 2u, 4u}) {
      for (int64_t i = layout[s].offset; i < layout[s].offset + layout[s].numel; ++i) {
        EXPECT_NEAR(g.f32()[i], avg[i], 1e-6f) << layout[s].name << " element " << i;
      }
    }
    for (int64_t i = 64 * 64; i < 64 * 64 + gap; ++i) EXPECT_EQ(g.f32()[i], grad[i]) << "gap element " << i;
    for (int64_t i = n - 3; i < n; ++i) EXPECT_EQ(g.f32()[i], grad[i]) << "tail element " << i;
  });

  // With min_ratio 0 even the [4, 3] matrix is compressed (at rank 3); 1-D tensors never are.
  PowerSgdOptions all;
  all.rank = 4;
  all.min_ratio = 0;
  PowerSgd c(all, layout);
  EXPECT_EQ(c.matrices().size(), 4u);
  EXPECT_EQ(state_of(c, "q").numel(), 64 * 4 + 3 * 3 + 72 * 4 + 27 * 4);
}

// Every rank must end with the same bits, or the replicas' weights drift apart.
TEST(PowerSgd, AllRanksGetTheSameResult) {
  const BucketLayout layout = pack({{"w1", {32, 50}}, {"b1", {50}}, {"w2", {20, 6, 5}}, {"tiny", {3, 3}}});
  const int64_t n = extent(layout);
  for (int world : {2, 3}) {
    std::vector<std::vector<float>> results(static_cast<size_t>(world));
    run_local(world, [&](Communicator& comm) {
      PowerSgdOptions options;
      options.rank = 2;
      options.start_iter = 1;
      PowerSgd c(options, layout);
      std::vector<float>& out = results[static_cast<size_t>(comm.rank())];
      for (int64_t s = 0; s < 4; ++s) {
        Tensor g = tensor_of(rank_gradient(n, comm.rank(), s));
        c.reduce(g, layout, comm, StepInfo{s, 0}, nullptr);
        out.insert(out.end(), g.f32(), g.f32() + n);
      }
    });
    for (int r = 1; r < world; ++r) {
      ASSERT_EQ(results[r].size(), results[0].size());
      EXPECT_EQ(std::memcmp(results[r].data(), results[0].data(), results[0].size() * sizeof(float)), 0)
          << "world " << world << ": rank " << r << " differs from rank 0";
    }
  }
}

// With one rank there is nothing to average: the result is P̂P̂ᵀM with P̂ = orth(M·Q), Q the warm
// start that the previous step left in the state.
TEST(PowerSgd, SingleRankFollowsTheFormula) {
  const int64_t rows = 30, cols = 20, r = 3;
  const BucketLayout layout = pack({{"w", {rows, cols}}});
  auto comm = make_single_communicator();
  PowerSgdOptions options;
  options.rank = static_cast<int>(r);
  options.start_iter = 0;
  PowerSgd c(options, layout);
  Rng rng(51);
  Tensor g1 = tensor_of(normal_values(rows * cols, rng));
  c.reduce(g1, layout, *comm, StepInfo{0, 0}, nullptr);
  const auto q = values(state_of(c, "q"));
  const auto residual = values(state_of(c, "residual"));
  ASSERT_EQ(q.size(), size_t(cols * r));

  const auto grad = normal_values(rows * cols, rng);
  std::vector<float> m(grad.size());
  for (size_t i = 0; i < m.size(); ++i) m[i] = grad[i] + residual[i];
  std::vector<float> p(static_cast<size_t>(rows * r), 0.0f);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t k = 0; k < r; ++k) {
      double sum = 0;
      for (int64_t j = 0; j < cols; ++j) sum += double(m[i * cols + j]) * q[j * r + k];
      p[i * r + k] = static_cast<float>(sum);
    }
  }
  orthonormalize_columns(p.data(), rows, r);
  // expected = P̂ (P̂ᵀ M)
  std::vector<double> ptm(static_cast<size_t>(r * cols), 0.0);
  for (int64_t k = 0; k < r; ++k) {
    for (int64_t j = 0; j < cols; ++j) {
      for (int64_t i = 0; i < rows; ++i) ptm[k * cols + j] += double(p[i * r + k]) * m[i * cols + j];
    }
  }
  Tensor g2 = tensor_of(grad);
  c.reduce(g2, layout, *comm, StepInfo{1, 0}, nullptr);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      double expected = 0;
      for (int64_t k = 0; k < r; ++k) expected += double(p[i * r + k]) * ptm[k * cols + j];
      // 1e-4: float32 GEMMs of inner size <= 30 on values of order 3.
      ASSERT_NEAR(g2.f32()[i * cols + j], expected, 1e-4) << i << "," << j;
    }
  }
  EXPECT_EQ(c.stats().bytes_sent, 0u);
  EXPECT_EQ(c.stats().bytes_dense, 0u);
}

TEST(PowerSgd, CountsRingAllreduceBytes) {
  const BucketLayout layout = pack({{"w", {60, 40}}, {"b", {40}}});
  const int world = 3;
  // Per rank and allreduce of b bytes: 2(p-1)/p·b, rounded down per collective.
  auto ring = [&](uint64_t bytes) { return 2 * (world - 1) * bytes / world; };
  run_local(world, [&](Communicator& comm) {
    PowerSgdOptions options;
    options.rank = 2;
    options.start_iter = 1;
    PowerSgd c(options, layout);
    const int64_t n = extent(layout);
    Tensor g = tensor_of(rank_gradient(n, comm.rank(), 0));
    c.reduce(g, layout, comm, StepInfo{0, 0}, nullptr);
    EXPECT_EQ(c.stats().bytes_sent, ring(4 * n));
    EXPECT_EQ(c.stats().bytes_dense, ring(4 * n));
    c.reset_stats();
    g = tensor_of(rank_gradient(n, comm.rank(), 1));
    c.reduce(g, layout, comm, StepInfo{1, 0}, nullptr);
    const uint64_t expected = ring(4 * 60 * 2) + ring(4 * 40 * 2) + ring(4 * 40);  // P, Q, bias
    EXPECT_EQ(c.stats().bytes_sent, expected);
    EXPECT_EQ(c.stats().bytes_received, expected);
    EXPECT_EQ(c.stats().bytes_dense, ring(4 * n));
    EXPECT_GE(c.stats().compress_seconds, 0.0);
    EXPECT_GE(c.stats().comm_seconds, 0.0);
  });
}

TEST(PowerSgd, StateHoldsResidualAndQAndSpecSpellsOutOptions) {
  const BucketLayout layout = pack({{"w", {64, 32}}, {"b", {32}}, {"v", {128, 16}}});
  PowerSgdOptions options;
  options.rank = 4;
  options.start_iter = 100;
  options.min_ratio = 1.5;
  options.warm_start = false;
  PowerSgd c(options, layout);
  const StateTensors state = c.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "residual");
  EXPECT_EQ(state[0].second.numel(), 64 * 32 + 32 + 128 * 16);
  EXPECT_EQ(state[1].first, "q");
  EXPECT_EQ(state[1].second.numel(), (32 + 16) * 4);
  EXPECT_EQ(c.spec(), "powersgd:rank=4,start_iter=100,min_ratio=1.5,warm_start=0");
  EXPECT_EQ(PowerSgd(PowerSgdOptions{}, layout).spec(),
            "powersgd:rank=1,start_iter=10,min_ratio=2,warm_start=1");
}

// Loading a checkpoint's state into a fresh compressor continues the run bit for bit.
TEST(PowerSgd, RestoredStateContinuesTheRun) {
  const BucketLayout layout = pack({{"w", {24, 18}}, {"b", {18}}});
  const int64_t n = extent(layout);
  auto comm = make_single_communicator();
  PowerSgdOptions options;
  options.rank = 2;
  options.start_iter = 0;
  PowerSgd a(options, layout), b(options, layout);
  for (int64_t s = 0; s < 2; ++s) {
    Tensor g = tensor_of(rank_gradient(n, 0, s));
    a.reduce(g, layout, *comm, StepInfo{s, 0}, nullptr);
  }
  auto from = a.state(), to = b.state();
  for (size_t i = 0; i < from.size(); ++i) to[i].second.copy_from(from[i].second);
  Tensor ga = tensor_of(rank_gradient(n, 0, 2)), gb = tensor_of(rank_gradient(n, 0, 2));
  a.reduce(ga, layout, *comm, StepInfo{2, 0}, nullptr);
  b.reduce(gb, layout, *comm, StepInfo{2, 0}, nullptr);
  EXPECT_EQ(std::memcmp(ga.f32(), gb.f32(), static_cast<size_t>(n) * sizeof(float)), 0);
}

TEST(PowerSgd, RejectsBadOptionsAndMismatchedLayouts) {
  const BucketLayout layout = pack({{"w", {8, 8}}});
  PowerSgdOptions bad;
  bad.rank = 0;
  EXPECT_THROW(PowerSgd(bad, layout), Error);
  EXPECT_THROW(PowerSgd(PowerSgdOptions{}, BucketLayout{Segment{"w", 0, 10, {3, 3}}}), Error);
  EXPECT_THROW(PowerSgd(PowerSgdOptions{}, BucketLayout{segment("a", 0, {4, 4}), segment("b", 8, {4})}),
               Error);
  PowerSgd c(PowerSgdOptions{}, layout);
  auto comm = make_single_communicator();
  Tensor small = Tensor::zeros({10});
  EXPECT_THROW(c.reduce(small, layout, *comm, StepInfo{}, nullptr), Error);
  Tensor g = Tensor::zeros({64});
  EXPECT_THROW(c.reduce(g, pack({{"w", {4, 16}}}), *comm, StepInfo{}, nullptr), Error);
}

}  // namespace
}  // namespace tern
