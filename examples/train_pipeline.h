// tern-train's pipeline-parallel mode (--pipeline-stages P, --micro-batches M, --schedule): the
// world of P x D ranks trains D data-parallel copies of a P-stage pipeline. Called by train.cpp.
#pragma once

#include "comm/communicator.h"
#include "runtime/io/flags.h"

namespace tern {

// --pipeline-stages, --micro-batches, --schedule, --stages, --recompute.
void declare_pipeline_flags(Flags& f);
// Whether the command line asks for the pipeline (more than one stage or micro-batch).
bool pipeline_requested(const Flags& f);
// One rank's training and evaluation; rank 0 prints and writes the metrics and the checkpoints
// (one file of the unsplit model: runtime/train/pipeline_checkpoint.h). Returns the exit code.
int train_pipeline_rank(const Flags& f, Communicator& comm);

}  // namespace tern
