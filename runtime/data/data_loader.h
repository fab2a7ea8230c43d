// DataLoader: cuts a Dataset into mini-batches in a seeded order that depends only on
// (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would have.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/data/dataset.h"
#include "runtime/data/distributed_sampler.h"
#include "runtime/tensor/tensor.h"

namespace tern {

// The sample order of one epoch: a permutation of [0, n) drawn from (seed, epoch) alone, so epoch
// e's order does not depend on which epochs ran before. Kept separate from DataLoader so a
// distributed sampler can shard the same global order across ranks.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

struct Batch {
  Tensor x;                // f32 [B, ...sample shape]
  std::vector<int32_t> y;  // B labels
};

class DataLoader {
 public:
  // data must outlive the loader. shuffle=false keeps the dataset order every epoch. The last
  // partial batch of an epoch is returned unless drop_last. Epoch 0 is started here.
  // With shard.world_size > 1 the loader yields only this rank's batches of each epoch, as
  // shard_order (distributed_sampler.h) says: batch_size is per rank, and the remainder of the
  // global order that does not fill a batch on every rank is dropped whatever drop_last says.
  DataLoader(const Dataset& data, int64_t batch_size, bool shuffle, uint64_t seed, bool drop_last = false,
             Shard shard = {});

  // Rewinds to the start of `epoch` with that epoch's order.
  void start_epoch(int64_t epoch);
  // Fills out with the next batch; false (out untouched) when the epoch is over. out.x is a view
  // of a buffer the loader reuses, so no batch allocates: it is overwritten by the next call
  // (clone() it to keep it), and out.y keeps its capacity.
  bool next(Batch& out);

  int64_t num_batches() const;
  int64_t batch_size() const { return batch_size_; }
  const Shard& shard() const { return shard_; }
  int64_t epoch() const { return epoch_; }
  // Batches already returned in this epoch (a resume point).
  int64_t batches_done() const { return cursor_ / batch_size_; }

 private:
  const Dataset* data_;
  int64_t batch_size_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  Shard shard_;
  int64_t epoch_ = 0;
  int64_t cursor_ = 0;  // position in order_ of the next sample
  std::vector<int64_t> order_;
  Tensor buffer_;  // [batch_size, ...sample shape]
  int64_t sample_numel_ = 0;
};

}  // namespace tern
