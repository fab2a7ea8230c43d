// DataParallel: makes one model replica per rank train as one model on the global batch: same
// start (rank 0's state), gradients averaged in overlapped buckets, optional synchronised BN.
#pragma once

#include <cstddef>
#include <memory>

#include "comm/communicator.h"
#include "runtime/nn/module.h"
#include "runtime/nn/norm.h"
#include "runtime/train/grad_sync.h"

namespace tern {

struct DataParallelOptions {
  size_t bucket_bytes = kDefaultBucketBytes;  // GradSync's cap (DDP's bucket_cap_mb)
  // BatchNorm2d layers normalise with the statistics of the global batch (see norm.h); their
  // allreduces run on a communicator split off `comm`, so they neither wait behind gradient
  // buckets nor change the order of the gradient collectives.
  bool sync_bn = false;
  GradCompression compression;  // comm/compress; off by default
};

// Per step: forward(x), loss, backward(dloss), sync_gradients(), then the optimizer. The
// constructor is collective: every rank must build the same model (names, shapes, dtypes of
// params and buffers, trainable flags) or all of them throw an Error naming the first
// difference and the ranks; then rank 0's params and buffers are copied to every rank. The
// model's grads become views of GradSync's buckets (see grad_sync.h). While this object lives
// the model announces finished gradients to it; the destructor removes the hooks.
class DataParallel {
 public:
  DataParallel(Module& model, Communicator& comm, DataParallelOptions options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  Tensor forward(const Tensor& x) { return model_.forward(x); }
  // model.run_backward(dy): buckets launch as their gradients are finished.
  Tensor backward(const Tensor& dy) { return model_.run_backward(dy); }
  // Waits until every gradient is averaged over the ranks (launching what backward did not).
  void sync_gradients() { grad_sync_->wait(); }

  Module& module() { return model_; }
  Communicator& communicator() { return comm_; }
  const GradSync& grad_sync() const { return *grad_sync_; }
  GradSync& grad_sync() { return *grad_sync_; }
  GradSyncStats stats() const { return grad_sync_->stats(); }
  // Bytes the synchronised BatchNorm layers sent and received (0 without sync_bn).
  uint64_t sync_bn_bytes_sent() const;
  uint64_t sync_bn_bytes_received() const;

 private:
  Module& model_;
  Communicator& comm_;
  std::unique_ptr<Communicator> bn_comm_;  // sync_bn only
  std::unique_ptr<GradSync> grad_sync_;
};

// Sync-BN's sum of per-channel statistics over `comm` (BatchNorm2d::StatsAllreduce): every rank's
// values are gathered and added up in rank order, in double, so every rank gets the same bits.
// The communicators reduce no f64; gathering is what PyTorch's SyncBatchNorm does too.
BatchNorm2d::StatsAllreduce sync_bn_stats_sum(Communicator& comm);

// Collective: throws the same Error on every rank unless all ranks' models have the same params
// and buffers (names, dtypes, shapes, trainable flags), naming the first difference.
void check_same_model(Module& model, Communicator& comm);
// Collective: copies rank 0's param values and buffers to every rank.
void broadcast_model(Module& model, Communicator& comm);

}  // namespace tern
