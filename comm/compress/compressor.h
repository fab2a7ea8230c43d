// Compressor: how one gradient bucket is averaged across data-parallel ranks with less on the wire
// (top-k/DGC, quantizers, PowerSGD). GradSync owns one per bucket; its state is checkpointed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "runtime/tensor/tensor.h"

namespace tern {

// One tensor's place in a bucket's flat f32 buffer: elements [offset, offset + numel), which is the
// tensor of `shape` in row-major order (PowerSGD reshapes it to a matrix; others treat it flat).
struct Segment {
  std::string name;
  int64_t offset = 0;
  int64_t numel = 0;
  std::vector<int64_t> shape;
};
using BucketLayout = std::vector<Segment>;

// Where training is: compressors with schedules (DGC's warm-up, PowerSGD's start_iter) read it.
struct StepInfo {
  int64_t step = 0;   // optimizer steps taken before this one, counting from 0
  int64_t epoch = 0;  // 0-based
};

// Cumulative accounting of one compressor (summed over the buckets by GradSync).
struct CompressStats {
  uint64_t bytes_sent = 0;      // payload this rank put on the wire for gradients
  uint64_t bytes_received = 0;  // payload it received
  uint64_t bytes_dense = 0;     // what a dense f32 ring allreduce would have sent: 2(p-1)/p * 4n
  double compress_seconds = 0;
  double comm_seconds = 0;
  double decompress_seconds = 0;
  CompressStats& operator+=(const CompressStats& o);
  // bytes_dense / bytes_sent; 1 when nothing was sent (world size 1).
  double ratio() const;
};

// A sparse gradient: values at indices of a bucket's flat buffer. Indices may repeat (one list per
// rank, concatenated): the result is the sum of the entries, as sparse_axpy applies it.
struct SparseVector {
  std::vector<int32_t> indices;
  std::vector<float> values;
  void clear() {
    indices.clear();
    values.clear();
  }
  size_t size() const { return indices.size(); }
};

// A named piece of a compressor's state (residuals, velocities, PowerSGD's Q, counters as i64),
// returned as views so that a checkpoint can save them and load into them.
using StateTensors = std::vector<std::pair<std::string, Tensor>>;

class Compressor {
 public:
  virtual ~Compressor() = default;
  // The spec this compressor was built from, canonical (every option spelled out).
  virtual std::string spec() const = 0;

  // Averages `grad` (the bucket's flat f32 buffer; every rank passes the same layout) over comm's
  // ranks, in place, sending less than dense where it can. Blocking: runs comm's collectives, in
  // the same order on every rank. When `sparse` is non-null and the result is sparse (top-k, DGC),
  // the average goes there instead (values already divided by the world size) and the compressed
  // segments of grad are left unspecified; otherwise grad holds the dense average and *sparse is
  // left empty. Segments not in `layout` are not touched.
  virtual void reduce(Tensor grad, const BucketLayout& layout, Communicator& comm, const StepInfo& step,
                      SparseVector* sparse) = 0;

  // Called by BucketCompressor after it averaged the bucket's dense (small) tensors, `dense`
  // being their layout: DGC applies its momentum there, since the optimizer's is off.
  virtual void after_dense_average(float* /*grad*/, const BucketLayout& /*dense*/) {}

  // The dtype BucketCompressor sends the bucket's dense tensors in (f32, or f16 for DGC by default).
  virtual DType dense_wire_dtype() const { return DType::f32; }

  // True when reduce() can produce a sparse result (so the optimizer may skip densifying).
  virtual bool sparse_result() const { return false; }

  // Error-feedback residuals and other state, for checkpoints. Empty for stateless compressors.
  virtual StateTensors state() { return {}; }

  const CompressStats& stats() const { return stats_; }
  void reset_stats() { stats_ = CompressStats{}; }

 protected:
  CompressStats stats_;
};

}  // namespace tern
