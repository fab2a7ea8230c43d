// Checkpoints of pipeline-parallel training: the stages' state gathered into one checkpoint of the
// unsplit model, and each stage's part picked out of one again. Used by tern-train --pipeline-stages.
#pragma once

#include <optional>
#include <vector>

#include "comm/communicator.h"
#include "optim/optimizer.h"
#include "runtime/nn/module.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/grad_sync.h"

namespace tern {

// Why one file for the whole model, written by world rank 0, rather than one file per stage:
//  - it is an ordinary checkpoint: the model tensors are exactly the unsplit model's (take_stage
//    keeps their names), so tern-finetune, an evaluation, or a data-parallel run read it as they
//    read any other;
//  - the optimizer state is keyed by parameter name too, so a run may resume it with another
//    --pipeline-stages or --stages: each stage restores the names it holds;
//  - one writer keeps save_checkpoint_to_dir's atomic rename and pruning as they are, where
//    files per stage would need a commit protocol across ranks to appear (or not) together.
// The replicas of a stage hold the same parameters and optimizer state after every step, so only
// replica 0 contributes them; compressor state differs per replica and is gathered from each.

// One stage's part: its parameters and buffers, its optimizer's state and, when `sync` compresses
// gradients, every replica's compressor state. Collective over `data_parallel` (this stage's
// replicas, rank = replica) when sync compresses; replica 0's part holds everything, the other
// replicas' parts are empty.
CheckpointData capture_stage(Module& stage, Optimizer& optimizer, GradSync* sync = nullptr,
                             Communicator* data_parallel = nullptr);

// The stages' parts (index = stage) as one checkpoint of the unsplit model: the model tensors and
// the optimizer state side by side in stage order. A name held by several parts must hold the same
// bytes in each and is kept once (the optimizer's global "step" counter); model tensors must not
// repeat. Compressor state is per stage's buckets: it is kept as "stage<s>.<name>" with the specs
// "stage0=<specs>|stage1=<specs>|...", or none when no stage compresses. The position, config,
// world size and model name are left for the caller to set.
CheckpointData merge_stage_checkpoints(const std::vector<CheckpointData>& parts);

// Collective over `pipeline` (one replica's stages, rank = stage): every stage sends its part to
// stage 0, which returns merge_stage_checkpoints of them all; the other stages return nullopt.
std::optional<CheckpointData> gather_stage_checkpoints(const CheckpointData& part, Communicator& pipeline);

// Restores a stage's optimizer from a checkpoint of the whole model (a pipeline's, however it was
// split, or a data-parallel run's): the state of the stage's own params and the global counters.
// Everything is checked before anything is written; state missing for one of the stage's params
// is an Error naming it, as is another optimizer.
void restore_stage_optimizer(Optimizer& optimizer, const CheckpointData& whole);

// Restores replica `replica` of stage `stage` (of `stages`) from a merged checkpoint's compressor
// state. That state belongs to the buckets of one split, so a checkpoint compressed over another
// number of stages, or written by a data-parallel run, is refused naming both; another split or
// --compress is refused by restore_compressor. Nothing happens when neither side compresses.
void restore_stage_compressor(GradSync& sync, int stage, int stages, int replica,
                              const CheckpointData& whole);

}  // namespace tern
