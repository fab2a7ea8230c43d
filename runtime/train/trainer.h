// Trainer: the single-process training loop (forward, softmax cross-entropy, backward, optimizer
// step, LR schedule) and evaluation. Data-parallel training wraps the same step.
#pragma once

#include <cstdint>
#include <functional>

#include "comm/communicator.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/dataset.h"
#include "runtime/nn/module.h"

namespace tern {

struct EpochStats {
  double loss = 0;      // mean over samples
  double accuracy = 0;  // fraction correct
  int64_t samples = 0;
  double seconds = 0;
  double samples_per_s() const { return seconds > 0 ? static_cast<double>(samples) / seconds : 0.0; }
};

struct TrainerOptions {
  float clip_grad_norm = 0;  // 0: off
  // Data parallel: called after backward, before clipping and the optimizer step (gradient
  // averaging across ranks); and the communicator over which epoch metrics and evaluation are
  // summed. Both empty/null for single-process training.
  std::function<void()> after_backward;
  Communicator* comm = nullptr;
  // Compressed data parallel: the sparse gradients after_backward left (params found there take
  // their gradient from it), applied by Optimizer::step(sparse). Null: every gradient is dense.
  const SparseGrads* sparse_grads = nullptr;
};

class Trainer {
 public:
  // schedule may be null (the optimizer's lr stays as set).
  Trainer(Module& model, Optimizer& optimizer, const LrSchedule* schedule, TrainerOptions options = {});

  // Called after every batch with (samples done this epoch, mean loss so far this epoch).
  using BatchCallback = std::function<void(int64_t, double)>;

  // One pass over the loader (which the caller has started for `epoch`). With a communicator the
  // returned loss, accuracy and samples are over all ranks; seconds are this rank's.
  EpochStats train_epoch(DataLoader& loader, const BatchCallback& on_batch = {});
  // One optimisation step on a batch; returns the batch's mean loss and adds its correct count.
  double train_step(const Batch& batch, int64_t* correct = nullptr);
  // Loss and accuracy over a whole dataset in eval mode (the model is put back in train mode).
  // With a communicator each rank evaluates a contiguous shard and the sums are combined.
  EpochStats evaluate(const Dataset& data, int64_t batch_size, const BatchCallback& on_batch = {});

  int64_t global_step() const { return step_; }
  double last_loss() const { return last_loss_; }  // this rank's loss on its latest batch
  void set_global_step(int64_t step) { step_ = step; }  // resuming: the LR schedule continues

 private:
  Module& model_;
  Optimizer& optimizer_;
  const LrSchedule* schedule_;
  TrainerOptions options_;
  int64_t step_ = 0;
  double last_loss_ = 0;
  std::vector<Param*> params_;
  Tensor dlogits_;
};

}  // namespace tern
