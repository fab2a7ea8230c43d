// Pipeline parallelism: runs one stage of a model split over P ranks through a PipelineSchedule,
// moving micro-batches' activations and gradients between neighbouring stages. Used by
// tern-train --pipeline-stages, the gpt example and bench/pipeline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "runtime/nn/loss.h"
#include "runtime/nn/module.h"
#include "runtime/train/grad_sync.h"
#include "runtime/train/pipeline_schedule.h"

namespace tern {

// The communicators of one rank of a P x D layout: D copies (replicas) of a P-stage pipeline.
// World rank = replica * P + stage, so the ranks of one pipeline are consecutive.
struct PipelineLayout {
  int stages = 1, replicas = 1;
  int stage = 0, replica = 0;
  std::unique_ptr<Communicator> pipeline;       // this replica's stages; rank = stage
  std::unique_ptr<Communicator> data_parallel;  // this stage's replicas; rank = replica
};
// Collective over `world`, whose size must be a multiple of `stages` (a clear Error otherwise).
PipelineLayout make_pipeline_layout(Communicator& world, int stages);

struct PipelineOptions {
  ScheduleKind schedule = ScheduleKind::one_f_one_b;
  int micro_batches = 1;
  // Keep only each waiting micro-batch's stage input and run its forward again right before its
  // backward (GPipe's re-materialisation), instead of keeping every module's forward cache.
  // Less memory, one more forward per micro-batch. BatchNorm running statistics are restored
  // around the second forward; a model with Dropout (p > 0) is refused, as the second forward
  // would draw another mask.
  bool recompute = false;
};

// Called on the last stage with micro-batch i's output: returns the micro-batch's mean loss (and
// correct count), and when doutput is not null writes d(mean loss)/d(output) into it (any
// storage; the pipeline owns it afterwards). Micro-batches are equal slices of the batch, so
// the pipeline scales each gradient by 1/M: the step's gradients are those of the mean loss over
// the whole batch, as without a pipeline.
using PipelineLoss = std::function<LossResult(const Tensor& output, int micro_batch, Tensor* doutput)>;
// The usual classifier loss on labels[row] for the batch's rows (micro-batch i: rows i*n..).
// labels must outlive the returned function.
PipelineLoss classification_loss(const std::vector<int32_t>& labels, int micro_batches);

struct PipelineStepStats {
  double loss = 0;             // mean over the batch; last stage only (0 elsewhere)
  int64_t correct = 0;         // last stage only
  int64_t samples = 0;         // batch rows, on every stage
  double seconds = 0;          // the whole step on this stage, gradient sync included
  double compute_seconds = 0;  // forwards, loss and backwards (recomputation included)
  double wait_seconds = 0;     // blocked on receives from neighbours
  // Bytes held for backward between a micro-batch's forward and its backward (every module's
  // cached tensors of the waiting micro-batches, or their inputs with recompute, and the last
  // stage's loss gradients), at most during the step. Views of one storage count once.
  size_t peak_held_bytes = 0;
  int peak_in_flight = 0;  // micro-batches waiting for backward, at most
};

class Pipeline {
 public:
  // stage: this rank's modules (take_stage). comm: the pipeline communicator, rank = stage index,
  // size = P (make_pipeline_layout). Collective over comm: each link between neighbours gets
  // one communicator per direction, so activations and gradients never queue behind each other.
  // Sends run on the calling thread (one thread hand-off less per message) and, as every
  // backend buffers them (comm/transport.h), never wait for the receiver: simulate_schedule's
  // model, under which the schedules are deadlock-free. grad_sync (data parallel over replicas of this stage,
  // e.g. DataParallel's) is launched during the last micro-batch's backward and waited for at
  // the end of train_step; the pipeline owns the stage's grad-ready hook from here on.
  // Throws when a module cannot keep several forwards in flight (Module::swap_forward_state)
  // and the options need it.
  Pipeline(Module& stage, Communicator& comm, PipelineOptions options, GradSync* grad_sync = nullptr);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // One training step: forward and backward of every micro-batch as the schedule says; the
  // gradients accumulate into the stage's params (zero them before). The first stage passes the
  // batch ([N, ...], N a multiple of M); the others pass an undefined tensor and learn the
  // shapes from their neighbour (a handshake on the first micro-batch of each step checks that
  // both sides agree on the stages, micro-batches, schedule and shapes: a mismatch is an Error
  // naming both stages). The last stage passes the loss; the others may pass an empty function.
  PipelineStepStats train_step(const Tensor& input, const PipelineLoss& loss);
  // Forward only (evaluation: put the stage in eval mode first); loss gets doutput = null.
  PipelineStepStats forward_step(const Tensor& input, const PipelineLoss& loss);

  int stage() const { return stage_; }
  int stages() const { return stages_; }
  bool first_stage() const { return stage_ == 0; }
  bool last_stage() const { return stage_ == stages_ - 1; }
  const PipelineOptions& options() const { return options_; }
  const std::vector<Action>& schedule() const { return train_actions_; }
  Communicator& communicator() { return comm_; }

 private:
  struct Step;
  PipelineStepStats run(const std::vector<Action>& actions, bool training, const Tensor& input,
                        const PipelineLoss& loss);

  Module& stage_module_;
  Communicator& comm_;
  PipelineOptions options_;
  GradSync* grad_sync_;
  int stage_, stages_;
  bool stash_ = false;            // swap module caches per micro-batch (else one in flight, or recompute)
  std::vector<Module*> modules_;  // the stage's module tree, in visit order
  std::vector<Action> train_actions_, forward_actions_;
  // One communicator per link and direction; null where there is no neighbour.
  std::unique_ptr<Communicator> act_from_prev_, act_to_next_, grad_from_next_, grad_to_prev_;
};

}  // namespace tern
