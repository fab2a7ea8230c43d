// GradSync: averages gradients across data-parallel ranks in buckets that are launched while
// backward is still running, so communication overlaps the rest of the backward pass.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "comm/communicator.h"
#include "comm/compress/auto_select.h"
#include "comm/compress/bucket_compressor.h"
#include "optim/optimizer.h"
#include "runtime/nn/module.h"
#include "comm/comm_thread.h"

namespace tern {

// Small enough that the models of the zoo (1-2 MB of gradients) get a few buckets, so the first
// ones reduce while the convolutions' backward still runs; DDP's 25 MB default would make each
// of them one bucket launched at the very end. A param larger than the cap gets a bucket alone.
inline constexpr size_t kDefaultBucketBytes = size_t{1} << 20;

// Cumulative over sync steps (one wait() each). comm_seconds is the time the communication thread
// spent on this GradSync's buckets; exposed_seconds is the part of it that wait() spent blocked
// after backward had finished, i.e. what overlap did not hide.
struct GradSyncStats {
  int64_t steps = 0;
  int64_t buckets = 0;                       // bucket reductions, over all steps
  int64_t buckets_launched_in_backward = 0;  // of them, launched before wait() (overlapped)
  double comm_seconds = 0;
  double exposed_seconds = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  // What dense f32 ring allreduces of the same buckets would have sent (2(p-1)/p · 4n per bucket).
  uint64_t bytes_dense = 0;
  // Compression only: time compressing and decompressing (part of comm_seconds, which is the
  // whole time the buckets' reductions took).
  double compress_seconds = 0;
  double compression_ratio() const { return bytes_sent == 0 ? 1.0 : static_cast<double>(bytes_dense) / static_cast<double>(bytes_sent); }
  // 1 - exposed / comm, in [0, 1]; 0 before any communication.
  double hidden_fraction() const;
};

// Gradient compression for GradSync (comm/compress). An empty spec or "none" is the plain
// overlapped allreduce.
struct GradCompression {
  std::string spec;                     // for every bucket, unless per_bucket is given; "auto"
                                        // chooses per bucket at construction (auto_select.h)
  std::vector<std::string> per_bucket;  // one spec per bucket ("auto" resolves to this)
  uint64_t seed = 0;
  // g += fold_weight_decay · w for params with decay, before compression: DGC's momentum
  // correction and sparse updates need the decay inside the gradient (the optimizer's is then 0).
  float fold_weight_decay = 0;
  // Leave sparse results (top-k, DGC) sparse: sparse_grads() has them after wait() and the
  // params' grads are not filled. Otherwise they are densified into the grads.
  bool keep_sparse = false;
  bool enabled() const { return !per_bucket.empty() || (!spec.empty() && spec != "none"); }
};

class GradSync {
 public:
  // Buckets the trainable params (f32; grads shaped like their values) in reverse order of
  // `params`, which must be registration order: the order backward finishes them. Each param's
  // grad becomes a view of its bucket's flat buffer (current values kept), so launching a bucket
  // copies nothing and the averaged gradients are in place when wait() returns; a grad tensor
  // that someone replaces is copied into its slot at launch and becomes a view again. comm must
  // outlive this object, and every rank must pass the same params in the same order.
  GradSync(std::vector<Param*> params, Communicator& comm, size_t bucket_bytes = kDefaultBucketBytes,
           const GradCompression& compression = {});
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // p's gradient is final for this step. When this completes p's bucket and every earlier bucket
  // has been launched, the bucket (and any complete ones after it) is launched at once: buckets
  // always launch in bucket order, so every rank queues the same collectives in the same order.
  // Params that are not bucketed (frozen, or not passed in) are ignored. Announcing a param twice
  // in one step is an error (its gradient was not final the first time).
  void mark_ready(Param& p);
  // Launches the buckets not launched yet (params never announced, e.g. unused in this forward,
  // contribute their gradients as they are), waits for all, and starts the next step. Rethrows
  // the first communication error.
  void wait();

  size_t bucket_count() const { return buckets_.size(); }
  // The params of bucket i, in the order they lie in its buffer.
  std::vector<std::string> bucket_param_names(size_t i) const;
  // Bytes of bucket i's buffer (its params plus alignment padding).
  size_t bucket_bytes(size_t i) const;
  // Buckets already launched in the current step (reset by wait()).
  size_t buckets_launched() const { return next_launch_; }

  GradSyncStats stats() const;
  void reset_stats();

  // Bucket layouts (each param's offset, size and shape in its bucket), e.g. for auto_select.
  BucketLayout bucket_layout(size_t i) const;
  // Compression: where training is (DGC's warm-up and PowerSGD's start read it). step counts
  // wait() calls from `step`; epoch stays until set again.
  void set_step(int64_t step) { step_info_.step = step; }
  void set_epoch(int64_t epoch) { step_info_.epoch = epoch; }
  bool compressed() const { return !compressors_.empty(); }
  // The spec each bucket runs (canonical), empty without compression.
  std::vector<std::string> bucket_specs() const;
  // What compress=auto measured and chose, per bucket (empty otherwise).
  const std::vector<AutoChoice>& auto_choices() const { return auto_choices_; }
  // Sparse gradients of the last wait() (keep_sparse only; empty otherwise).
  const SparseGrads& sparse_grads() const { return sparse_grads_; }
  // Every bucket's compressor state, named "bucket<i>.<name>", as views (checkpoints).
  StateTensors compressor_state();

 private:
  using Clock = std::chrono::steady_clock;
  struct Slot {
    Param* param;
    int64_t offset;  // in floats, into the bucket buffer
    bool announced = false;
  };
  struct Bucket {
    Tensor flat;  // f32 [padded size]
    std::vector<Slot> slots;
    size_t pending = 0;  // slots not announced in this step
    WorkPtr work;
  };
  struct Launch {
    WorkPtr work;
    Clock::time_point at;
  };

  void launch(size_t b);
  void reduce_compressed(size_t b);  // on executor_
  void collect_sparse();
  void launch_ready();
  void reset_step();
  void watch();  // the completion-stamping thread's loop

  Communicator& comm_;
  std::vector<Bucket> buckets_;
  std::unordered_map<const Param*, std::pair<size_t, size_t>> where_;  // param -> (bucket, slot)
  size_t next_launch_ = 0;  // buckets [0, next_launch_) are launched this step
  uint64_t sent_at_step_start_ = 0, received_at_step_start_ = 0;
  uint64_t dense_bytes_per_step_ = 0;

  // Compression (empty compressors_ without it): one BucketCompressor per bucket, run in bucket
  // order on a thread of its own (a CommThread: in order, or on a waiter that is next in line),
  // from which the compressor calls the communicator's blocking collectives.
  GradCompression compression_;
  std::vector<std::unique_ptr<BucketCompressor>> compressors_;
  std::vector<SparseVector> sparse_results_;
  std::vector<AutoChoice> auto_choices_;
  SparseGrads sparse_grads_;
  StepInfo step_info_;
  std::unique_ptr<CommThread> executor_;

  // A watcher thread waits on each launched bucket in launch order and stamps its completion:
  // the communication thread runs the buckets one after another, so bucket i was busy from
  // max(its launch, bucket i-1's completion) to its own completion.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Launch> to_watch_;
  int64_t watched_ = 0, launched_total_ = 0;
  Clock::time_point last_done_{};
  bool stopping_ = false;
  GradSyncStats stats_;  // comm_seconds written by the watcher, the rest by the caller; under mu_
  std::thread watcher_;  // last member: started after, and joined before, everything above
};

}  // namespace tern
