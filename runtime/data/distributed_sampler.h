// The distributed sampler: which samples each data-parallel rank trains on, epoch by epoch, and
// which it evaluates. DataLoader takes a Shard and reads its order from here.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace tern {

// This process's place among the data-parallel ranks.
struct Shard {
  int rank = 0;
  int world_size = 1;
};

// Training order. The global order of epoch e is epoch_permutation(n, seed, e) (or 0..n-1
// without shuffling) whatever the world size. Global batch k is positions [k*W*B, (k+1)*W*B) of
// it, and rank r takes its B-slice [k*W*B + r*B, k*W*B + (r+1)*B): so W ranks with batch B see,
// step by step, exactly the samples that one rank with batch W*B sees, and the shards are
// disjoint. Remainder: the last n % (W*B) positions of each epoch are dropped (DDP's
// drop_last), so every rank runs the same number of full batches and gradient averages weigh
// every sample alike; the permutation changes per epoch, so different samples are dropped.
//
// Returns rank shard.rank's samples of the epoch in the order it visits them, B per batch:
// sharded_batches(n, shard, B) * B indices.
std::vector<int64_t> shard_order(int64_t n, Shard shard, int64_t batch_size, bool shuffle, uint64_t seed,
                                 int64_t epoch);
// Full batches per rank per epoch: n / (W*B), the same on every rank.
int64_t sharded_batches(int64_t n, Shard shard, int64_t batch_size);

// Evaluation split: every sample exactly once over all ranks, rank r taking the contiguous
// range [begin, end) of 0..n-1 (sizes differ by at most one; the first n % W ranks get the
// extra one). Ranks then sum their loss and correct counts, not average them.
std::pair<int64_t, int64_t> shard_range(int64_t n, Shard shard);

// Throws tern::Error unless 0 <= rank < world_size.
void check_shard(Shard shard, const char* who);

}  // namespace tern
