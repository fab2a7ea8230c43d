#include "runtime/data/distributed_sampler.h"

#include <algorithm>
#include <numeric>

#include "runtime/data/data_loader.h"
#include "runtime/error.h"

namespace tern {

void check_shard(Shard shard, const char* who) {
  TERN_CHECK(shard.world_size >= 1 && shard.rank >= 0 && shard.rank < shard.world_size, who, ": rank ",
             shard.rank, " of world size ", shard.world_size, ", expected 0 <= rank < world size");
}

int64_t sharded_batches(int64_t n, Shard shard, int64_t batch_size) {
  check_shard(shard, "sharded_batches");
  TERN_CHECK(n >= 0 && batch_size > 0, "sharded_batches: n = ", n, ", batch size ", batch_size,
             ", expected n >= 0 and batch size > 0");
  return n / (batch_size * shard.world_size);
}

std::vector<int64_t> shard_order(int64_t n, Shard shard, int64_t batch_size, bool shuffle, uint64_t seed,
                                 int64_t epoch) {
  const int64_t batches = sharded_batches(n, shard, batch_size);
  std::vector<int64_t> global;
  if (shuffle) {
    global = epoch_permutation(n, seed, epoch);
  } else {
    global.resize(static_cast<size_t>(n));
    std::iota(global.begin(), global.end(), int64_t{0});
  }
  const int64_t global_batch = batch_size * shard.world_size;
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(batches * batch_size));
  for (int64_t k = 0; k < batches; ++k) {
    const auto begin = global.begin() + k * global_batch + shard.rank * batch_size;
    mine.insert(mine.end(), begin, begin + batch_size);
  }
  return mine;
}

std::pair<int64_t, int64_t> shard_range(int64_t n, Shard shard) {
  check_shard(shard, "shard_range");
  TERN_CHECK(n >= 0, "shard_range: n = ", n, ", expected >= 0");
  const int64_t base = n / shard.world_size, extra = n % shard.world_size;
  const int64_t r = shard.rank;
  const int64_t begin = r * base + std::min<int64_t>(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

}  // namespace tern
