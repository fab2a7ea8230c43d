#include "runtime/data/distributed_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "runtime/data/data_loader.h"
#include "runtime/data/synthetic.h"

namespace tern {
namespace {

TEST(DistributedSampler, ShardsAreDisjointAndCoverAllButTheRemainder) {
  const int64_t n = 103, batch = 4;
  for (int world : {1, 2, 3, 4}) {
    std::set<int64_t> seen;
    int64_t total = 0;
    for (int r = 0; r < world; ++r) {
      const auto mine = shard_order(n, {r, world}, batch, true, 9, 2);
      EXPECT_EQ(static_cast<int64_t>(mine.size()), sharded_batches(n, {r, world}, batch) * batch);
      total += static_cast<int64_t>(mine.size());
      seen.insert(mine.begin(), mine.end());
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), total) << "world " << world << ": a sample on two ranks";
    // Exactly the remainder n % (W*B) is dropped.
    EXPECT_EQ(total, n - n % (world * batch)) << "world " << world;
  }
}

TEST(DistributedSampler, DropsTheTailOfTheEpochPermutation) {
  const int64_t n = 50, batch = 3;
  const int world = 4;  // global batch 12: 4 full batches, the last 2 positions dropped
  const auto global = epoch_permutation(n, 5, 1);
  std::set<int64_t> taken;
  for (int r = 0; r < world; ++r) {
    const auto mine = shard_order(n, {r, world}, batch, true, 5, 1);
    taken.insert(mine.begin(), mine.end());
  }
  EXPECT_EQ(taken.size(), 48u);
  EXPECT_EQ(taken.count(global[48]), 0u);
  EXPECT_EQ(taken.count(global[49]), 0u);
}

TEST(DistributedSampler, RanksTogetherSeeWhatOneRankWithTheGlobalBatchSees) {
  const int64_t n = 200, batch = 5;
  for (int world : {2, 4}) {
    for (int64_t epoch : {0, 3}) {
      const auto single = shard_order(n, {0, 1}, batch * world, true, 11, epoch);
      std::vector<std::vector<int64_t>> ranks;
      for (int r = 0; r < world; ++r) ranks.push_back(shard_order(n, {r, world}, batch, true, 11, epoch));
      const int64_t steps = sharded_batches(n, {0, world}, batch);
      ASSERT_EQ(steps, sharded_batches(n, {0, 1}, batch * world));
      for (int64_t k = 0; k < steps; ++k) {
        for (int r = 0; r < world; ++r) {
          for (int64_t i = 0; i < batch; ++i) {
            ASSERT_EQ(ranks[r][k * batch + i], single[(k * world + r) * batch + i])
                << "world " << world << " epoch " << epoch << " step " << k << " rank " << r;
          }
        }
      }
    }
  }
}

TEST(DistributedSampler, ReshufflesEachEpochFromTheSeedAlone) {
  const auto e0 = shard_order(64, {1, 2}, 4, true, 3, 0);
  const auto e1 = shard_order(64, {1, 2}, 4, true, 3, 1);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(e1, shard_order(64, {1, 2}, 4, true, 3, 1));
  EXPECT_NE(e1, shard_order(64, {1, 2}, 4, true, 4, 1));
  // Without shuffling the global order is the dataset's.
  const auto plain = shard_order(20, {1, 2}, 3, false, 3, 7);
  EXPECT_EQ(plain, (std::vector<int64_t>{3, 4, 5, 9, 10, 11, 15, 16, 17}));
}

TEST(DistributedSampler, RejectsARankOutsideTheWorld) {
  EXPECT_THROW(shard_order(10, {2, 2}, 1, true, 0, 0), Error);
  EXPECT_THROW(shard_order(10, {-1, 2}, 1, true, 0, 0), Error);
  EXPECT_THROW(shard_range(10, {0, 0}), Error);
}

TEST(DistributedSampler, EvaluationRangesCoverEverySampleOnce) {
  for (int world : {1, 3, 4}) {
    int64_t expect_begin = 0;
    for (int r = 0; r < world; ++r) {
      const auto [begin, end] = shard_range(10, {r, world});
      EXPECT_EQ(begin, expect_begin);
      EXPECT_GE(end - begin, 10 / world);
      EXPECT_LE(end - begin, 10 / world + 1);
      expect_begin = end;
    }
    EXPECT_EQ(expect_begin, 10);
  }
}

TEST(DistributedSampler, ShardedLoaderYieldsThisRanksBatches) {
  const Dataset data = make_synthetic(30, {2}, 3, 1);
  const Shard shard{1, 3};
  DataLoader loader(data, 4, true, 8, /*drop_last=*/false, shard);
  EXPECT_EQ(loader.num_batches(), 2);  // 30 / 12; the last 6 dropped whatever drop_last says
  loader.start_epoch(2);
  const auto order = shard_order(30, shard, 4, true, 8, 2);
  Batch batch;
  size_t at = 0;
  while (loader.next(batch)) {
    ASSERT_EQ(batch.y.size(), 4u);
    for (size_t i = 0; i < 4; ++i, ++at) {
      const int64_t j = order[at];
      EXPECT_EQ(batch.y[i], data.labels[static_cast<size_t>(j)]);
      EXPECT_EQ(batch.x.f32()[i * 2], data.images.f32()[j * 2]);
    }
  }
  EXPECT_EQ(at, order.size());
}

}  // namespace
}  // namespace tern
