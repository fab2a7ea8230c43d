#include "runtime/kernels/cpu/embedding.h"

#include <gtest/gtest.h>

#include <vector>

#include "runtime/kernels/reference/embedding.h"
#include "runtime/rng.h"

namespace tern {
namespace {

std::vector<float> random_vector(int64_t n, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

TEST(EmbeddingKernel, ForwardGathersTheRowsOfTheIdsLikeTheReference) {
  const int64_t vocab = 11, dim = 7;
  Rng rng(1);
  const auto table = random_vector(vocab * dim, rng);
  const std::vector<int32_t> ids{3, 0, 10, 3, 3, 7, 1, 0, 9};
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<float> out(static_cast<size_t>(n * dim)), want(out.size());
  EXPECT_EQ(cpu::embedding_forward(ids.data(), n, table.data(), vocab, dim, out.data()), -1);
  EXPECT_EQ(ref::embedding_forward(ids.data(), n, table.data(), vocab, dim, want.data()), -1);
  EXPECT_EQ(out, want);
  for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(out[2 * dim + j], table[10 * dim + j]);
}

TEST(EmbeddingKernel, ForwardReportsTheFirstIdOutOfRangeAndZeroesItsRow) {
  const int64_t vocab = 5, dim = 3;
  const std::vector<float> table(vocab * dim, 1.0f);
  const std::vector<int32_t> ids{0, 4, 5, -1, 2};
  std::vector<float> out(ids.size() * dim, 9.0f);
  EXPECT_EQ(cpu::embedding_forward(ids.data(), 5, table.data(), vocab, dim, out.data()), 2);
  for (int64_t j = 0; j < dim; ++j) {
    EXPECT_EQ(out[2 * dim + j], 0.0f);
    EXPECT_EQ(out[3 * dim + j], 0.0f);
    EXPECT_EQ(out[4 * dim + j], 1.0f);
  }
}

TEST(EmbeddingKernel, BackwardScatterAddsRepeatedIdsIntoTheTable) {
  const int64_t vocab = 6, dim = 5;
  Rng rng(2);
  const std::vector<int32_t> ids{2, 5, 2, 0, 2, 5};
  const int64_t n = static_cast<int64_t>(ids.size());
  const auto dout = random_vector(n * dim, rng);
  const auto start = random_vector(vocab * dim, rng);  // gradients accumulate onto what is there
  std::vector<float> dtable = start, want = start;
  cpu::embedding_backward(ids.data(), n, dout.data(), vocab, dim, dtable.data());
  ref::embedding_backward(ids.data(), n, dout.data(), vocab, dim, want.data());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(dtable[i], want[i]) << i;
  for (int64_t j = 0; j < dim; ++j) {
    EXPECT_FLOAT_EQ(dtable[2 * dim + j],
                    start[2 * dim + j] + dout[0 * dim + j] + dout[2 * dim + j] + dout[4 * dim + j]);
    EXPECT_EQ(dtable[1 * dim + j], start[1 * dim + j]) << "an id that does not occur keeps its gradient";
    EXPECT_EQ(dtable[3 * dim + j], start[3 * dim + j]);
  }
}

}  // namespace
}  // namespace tern
