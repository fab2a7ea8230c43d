#include "runtime/data/data_loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace tern {
namespace {

// n samples of shape [2]: sample i is (i, -i) with label i % 3, so a batch row says its index.
Dataset indexed_dataset(int64_t n) {
  Dataset d;
  d.name = "indexed";
  d.num_classes = 3;
  d.images = Tensor::empty({n, 2});
  for (int64_t i = 0; i < n; ++i) {
    d.images.f32()[2 * i] = static_cast<float>(i);
    d.images.f32()[2 * i + 1] = -static_cast<float>(i);
    d.labels.push_back(static_cast<int32_t>(i % 3));
  }
  return d;
}

// The sample indices of every batch of the loader's current epoch, checking rows match labels.
std::vector<std::vector<int64_t>> drain(DataLoader& loader) {
  std::vector<std::vector<int64_t>> batches;
  Batch b;
  while (loader.next(b)) {
    EXPECT_EQ(b.x.dim(0), static_cast<int64_t>(b.y.size()));
    std::vector<int64_t> idx;
    for (int64_t r = 0; r < b.x.dim(0); ++r) {
      const float v = b.x.f32()[2 * r];
      EXPECT_EQ(b.x.f32()[2 * r + 1], -v);
      const auto i = static_cast<int64_t>(v);
      EXPECT_EQ(b.y[static_cast<size_t>(r)], static_cast<int32_t>(i % 3));
      idx.push_back(i);
    }
    batches.push_back(idx);
  }
  return batches;
}

std::vector<int64_t> flatten(const std::vector<std::vector<int64_t>>& batches) {
  std::vector<int64_t> all;
  for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
  return all;
}

TEST(EpochPermutation, IsAPermutationOfAllIndices) {
  for (int64_t n : {0, 1, 2, 7, 1000}) {
    auto p = epoch_permutation(n, 123, 4);
    ASSERT_EQ(static_cast<int64_t>(p.size()), n);
    std::sort(p.begin(), p.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(p[static_cast<size_t>(i)], i);
  }
}

TEST(EpochPermutation, DependsOnlyOnSeedAndEpoch) {
  const auto a = epoch_permutation(500, 9, 3);
  epoch_permutation(500, 9, 0);  // unrelated calls in between change nothing
  EXPECT_EQ(epoch_permutation(500, 9, 3), a);
  EXPECT_NE(epoch_permutation(500, 9, 4), a);
  EXPECT_NE(epoch_permutation(500, 10, 3), a);
  std::vector<int64_t> identity(500);
  for (int64_t i = 0; i < 500; ++i) identity[static_cast<size_t>(i)] = i;
  EXPECT_NE(a, identity);
}

TEST(DataLoader, VisitsEveryIndexExactlyOncePerEpoch) {
  const Dataset d = indexed_dataset(103);
  DataLoader loader(d, 10, /*shuffle=*/true, 5);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    loader.start_epoch(epoch);
    auto all = flatten(drain(loader));
    std::sort(all.begin(), all.end());
    ASSERT_EQ(all.size(), 103u);
    for (int64_t i = 0; i < 103; ++i) EXPECT_EQ(all[static_cast<size_t>(i)], i);
  }
}

TEST(DataLoader, OrderFollowsEpochPermutationAndDiffersAcrossEpochs) {
  const Dataset d = indexed_dataset(64);
  DataLoader loader(d, 8, true, 77);
  const auto e0 = flatten(drain(loader));  // the constructor starts epoch 0
  EXPECT_EQ(e0, epoch_permutation(64, 77, 0));
  loader.start_epoch(1);
  const auto e1 = flatten(drain(loader));
  EXPECT_EQ(e1, epoch_permutation(64, 77, 1));
  EXPECT_NE(e0, e1);
}

TEST(DataLoader, StartEpochReproducesTheOrderRegardlessOfHistory) {
  const Dataset d = indexed_dataset(50);
  DataLoader ran(d, 7, true, 3);
  for (int64_t e = 0; e < 3; ++e) {
    ran.start_epoch(e);
    drain(ran);
  }
  ran.start_epoch(3);
  DataLoader resumed(d, 7, true, 3);
  resumed.start_epoch(3);
  EXPECT_EQ(drain(ran), drain(resumed));
}

TEST(DataLoader, KeepsThePartialLastBatch) {
  const Dataset d = indexed_dataset(10);
  DataLoader loader(d, 4, true, 1);
  EXPECT_EQ(loader.num_batches(), 3);
  EXPECT_EQ(loader.batch_size(), 4);
  const auto batches = drain(loader);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].size(), 4u);
  EXPECT_EQ(batches[1].size(), 4u);
  EXPECT_EQ(batches[2].size(), 2u);
}

TEST(DataLoader, DropLastSkipsThePartialBatch) {
  const Dataset d = indexed_dataset(10);
  DataLoader loader(d, 4, true, 1, /*drop_last=*/true);
  EXPECT_EQ(loader.num_batches(), 2);
  const auto batches = drain(loader);
  ASSERT_EQ(batches.size(), 2u);
  for (const auto& b : batches) EXPECT_EQ(b.size(), 4u);
  // The dropped samples are the last two of this epoch's order.
  const auto order = epoch_permutation(10, 1, 0);
  EXPECT_EQ(flatten(batches), std::vector<int64_t>(order.begin(), order.begin() + 8));
  // An exact multiple drops nothing.
  const Dataset d8 = indexed_dataset(8);
  DataLoader exact(d8, 4, true, 1, true);
  EXPECT_EQ(exact.num_batches(), 2);
  EXPECT_EQ(flatten(drain(exact)).size(), 8u);
}

TEST(DataLoader, WithoutShuffleKeepsDatasetOrderEveryEpoch) {
  const Dataset d = indexed_dataset(9);
  DataLoader loader(d, 4, /*shuffle=*/false, 1);
  const std::vector<int64_t> expected = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(flatten(drain(loader)), expected);
  loader.start_epoch(5);
  EXPECT_EQ(flatten(drain(loader)), expected);
}

TEST(DataLoader, NextReturnsFalseAfterTheEpochUntilRestarted) {
  const Dataset d = indexed_dataset(5);
  DataLoader loader(d, 5, true, 2);
  Batch b;
  EXPECT_TRUE(loader.next(b));
  EXPECT_EQ(loader.batches_done(), 1);
  EXPECT_FALSE(loader.next(b));
  EXPECT_FALSE(loader.next(b));
  loader.start_epoch(1);
  EXPECT_EQ(loader.batches_done(), 0);
  EXPECT_TRUE(loader.next(b));
}

TEST(DataLoader, ReusesTheBatchBufferAcrossCalls) {
  const Dataset d = indexed_dataset(20);
  DataLoader loader(d, 6, true, 4);
  Batch b;
  ASSERT_TRUE(loader.next(b));
  const void* first = b.x.raw();
  const int32_t* labels = b.y.data();
  ASSERT_TRUE(loader.next(b));
  EXPECT_EQ(b.x.raw(), first);
  EXPECT_EQ(b.y.data(), labels);
  ASSERT_TRUE(loader.next(b));
  ASSERT_TRUE(loader.next(b));  // the partial batch of 2 is a view of the same buffer
  EXPECT_EQ(b.x.shape(), Shape({2, 2}));
  EXPECT_EQ(b.x.raw(), first);
}

TEST(DataLoader, EmptyDatasetHasNoBatches) {
  const Dataset d = indexed_dataset(0);
  DataLoader loader(d, 4, true, 0);
  EXPECT_EQ(loader.num_batches(), 0);
  Batch b;
  EXPECT_FALSE(loader.next(b));
}

TEST(DataLoader, RejectsNonPositiveBatchSize) {
  const Dataset d = indexed_dataset(5);
  EXPECT_THROW(DataLoader(d, 0, true, 0), Error);
}

}  // namespace
}  // namespace tern
