// Saving and restoring gradient-compression state (error-feedback residuals, DGC's velocities,
// PowerSGD's Q) in checkpoints. The state differs per rank, so capture gathers every rank's.
#pragma once

#include "comm/communicator.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/grad_sync.h"

namespace tern {

// Collective over comm (every rank calls it at the same step): stores every rank's compressor
// state in data.compressor_state as "rank<r>.bucket<b>.<name>" and the bucket specs in
// data.compressor. Only rank 0's `data` is filled; the others' is left as it was.
void capture_compressor(GradSync& sync, Communicator& comm, CheckpointData& data);

// Copies this rank's saved state into sync's compressors. Refuses (Error naming the file) a
// checkpoint written with other compressor specs, or whose state is missing or mis-sized; a
// checkpoint without compressor state for an uncompressed run is fine.
void restore_compressor(GradSync& sync, int rank, const CheckpointData& data);

}  // namespace tern
