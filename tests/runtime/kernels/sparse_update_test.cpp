#include "runtime/kernels/cpu/sparse_update.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/kernels/reference/sparse_update.h"
#include "runtime/rng.h"

namespace tern {
namespace {

std::vector<float> random_values(Rng& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal();
  return v;
}

// k indices into [0, n); with `distinct` false they repeat (drawn with replacement from a range
// smaller than k, so repeats are certain when k > 1).
std::vector<int32_t> random_indices(Rng& rng, int64_t n, int64_t k, bool distinct) {
  std::vector<int32_t> idx;
  if (distinct) {
    std::vector<int32_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    rng.shuffle(all);
    idx.assign(all.begin(), all.begin() + k);
  } else {
    const uint32_t range = static_cast<uint32_t>(std::max<int64_t>(1, std::min(n, k / 2 + 1)));
    for (int64_t i = 0; i < k; ++i) idx.push_back(static_cast<int32_t>(rng.below(range)));
  }
  return idx;
}

struct Case {
  int64_t n, k;
  bool distinct;
};

const Case kCases[] = {{10, 0, false},   {10, 1, false},          {10, 1, true},          {100, 37, false},
                       {100, 100, true}, {1 << 20, 50000, false}, {1 << 20, 200000, true}};

TEST(SparseUpdateKernel, AxpyMatchesReferenceIncludingRepeatedIndices) {
  Rng rng(1);
  for (const Case& c : kCases) {
    const std::vector<float> y0 = random_values(rng, c.n), x = random_values(rng, c.k);
    const std::vector<int32_t> idx = random_indices(rng, c.n, c.k, c.distinct);
    std::vector<float> y = y0, y_ref = y0;
    cpu::sparse_axpy(y.data(), idx.data(), x.data(), c.k, -0.75f);
    ref::sparse_axpy(y_ref.data(), idx.data(), x.data(), c.k, -0.75f);
    // Same additions in the same order: equal up to a possible fused multiply-add.
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], y_ref[i], 1e-5f * (1 + std::fabs(y_ref[i]))) << c.n << " " << i;
  }
}

TEST(SparseUpdateKernel, AxpyAddsEveryRepeatOfAnIndex) {
  std::vector<float> y = {1, 2, 3};
  const std::vector<int32_t> idx = {2, 0, 2, 2};
  const std::vector<float> x = {1, 10, 100, 1000};
  cpu::sparse_axpy(y.data(), idx.data(), x.data(), 4, 2.0f);
  EXPECT_EQ(y, (std::vector<float>{21, 2, 3 + 2 * 1101}));
}

TEST(SparseUpdateKernel, GatherAndZeroMatchReference) {
  Rng rng(2);
  for (const Case& c : kCases) {
    const std::vector<float> y0 = random_values(rng, c.n);
    const std::vector<int32_t> idx = random_indices(rng, c.n, c.k, c.distinct);
    std::vector<float> out(static_cast<size_t>(c.k), -1.0f), out_ref(out);
    cpu::sparse_gather(y0.data(), idx.data(), c.k, out.data());
    ref::sparse_gather(y0.data(), idx.data(), c.k, out_ref.data());
    ASSERT_EQ(out, out_ref) << c.n << " " << c.k;
    std::vector<float> y = y0, y_ref = y0;
    cpu::sparse_zero(y.data(), idx.data(), c.k);
    ref::sparse_zero(y_ref.data(), idx.data(), c.k);
    ASSERT_EQ(y, y_ref) << c.n << " " << c.k;
    int64_t zeros = 0;
    for (float v : y) zeros += v == 0.0f;
    if (c.distinct) {
      EXPECT_EQ(zeros, c.k) << "exactly the chosen entries are zeroed";
    }
  }
}

TEST(SparseUpdateKernel, RowsSgdMatchesReferenceAndLeavesOtherRowsAlone) {
  Rng rng(3);
  struct RowsCase {
    int64_t rows, cols, k;
  };
  for (const RowsCase& c :
       {RowsCase{5, 3, 0}, RowsCase{5, 3, 1}, RowsCase{64, 17, 40}, RowsCase{4096, 256, 1500}}) {
    const std::vector<float> w0 = random_values(rng, c.rows * c.cols), g = random_values(rng, c.k * c.cols);
    const std::vector<int32_t> rows = random_indices(rng, c.rows, c.k, true);
    std::vector<float> w = w0, w_ref = w0;
    cpu::sparse_rows_sgd(w.data(), c.cols, rows.data(), c.k, g.data(), 0.1f, 0.01f);
    ref::sparse_rows_sgd(w_ref.data(), c.cols, rows.data(), c.k, g.data(), 0.1f, 0.01f);
    std::vector<bool> chosen(static_cast<size_t>(c.rows), false);
    for (int32_t r : rows) chosen[static_cast<size_t>(r)] = true;
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t col = 0; col < c.cols; ++col) {
        const size_t i = static_cast<size_t>(r * c.cols + col);
        ASSERT_NEAR(w[i], w_ref[i], 1e-6f * (1 + std::fabs(w_ref[i]))) << r << " " << col;
        if (!chosen[static_cast<size_t>(r)]) {
          ASSERT_EQ(w[i], w0[i]) << "row " << r << " was not chosen";
        }
      }
    }
  }
}

TEST(SparseUpdateKernel, RowsSgdAppliesWeightDecayAndLearningRate) {
  std::vector<float> w = {1, 2, 3, 4};  // [2, 2]
  const std::vector<int32_t> rows = {1};
  const std::vector<float> g = {10, 20};
  cpu::sparse_rows_sgd(w.data(), 2, rows.data(), 1, g.data(), 0.5f, 0.5f);
  // w -= 0.5 * (g + 0.5 w): 3 - 0.5 * 11.5, 4 - 0.5 * 22.
  EXPECT_EQ(w, (std::vector<float>{1, 2, 3 - 5.75f, 4 - 11.0f}));
}

}  // namespace
}  // namespace tern
