// Checkpoints: everything a training run needs to continue bit-for-bit (model, optimizer,
// compressor and RNG state, position), written atomically; used by --checkpoint-dir / --resume.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "optim/optimizer.h"
#include "runtime/nn/module.h"
#include "runtime/rng.h"
#include "runtime/tensor/tensor.h"

namespace tern {

// The version in the file header. Bump it when a reader of the old version would misread the
// new files; adding proto fields that old readers may ignore does not need a bump.
inline constexpr uint32_t kCheckpointFormatVersion = 1;

// On disk a checkpoint is a 24-byte header followed by the serialized tern.proto.Checkpoint:
//   bytes 0..7   "TERNCKPT"
//   bytes 8..11  format version, u32 little-endian
//   bytes 12..15 CRC-32 (zlib) of the payload, u32 little-endian
//   bytes 16..23 payload length in bytes, u64 little-endian
// Protobuf parses many truncated or altered messages without complaint, so the length and the
// CRC are what make a cut-off or flipped file a refusal instead of a silently different model.
inline constexpr size_t kCheckpointHeaderBytes = 24;

// A tensor with its state-dict name. Captured tensors are copies, not views of live state.
struct NamedTensor {
  std::string name;
  Tensor value;
};

struct RngSnapshot {
  std::string name;
  uint64_t state = 0;
  uint64_t increment = 1;
};

// The contents of a checkpoint as plain C++ (mirrors tern.proto.Checkpoint), so callers never
// touch protobuf types.
struct CheckpointData {
  std::string model_name;          // the registry name; restore_model can check it
  int world_size = 1;              // data-parallel ranks that wrote it (pipeline: replicas D)
  int64_t step = 0;                // global optimizer steps done
  int64_t epoch = 0;               // the epoch in progress (0-based)
  int64_t batches_in_epoch = 0;    // batches of `epoch` already trained; resume skips them
  std::vector<NamedTensor> model;  // parameters and buffers
  std::string optimizer_name;
  std::vector<NamedTensor> optimizer_state;
  std::string compressor;  // spec string, "" when gradients are not compressed
  std::vector<NamedTensor> compressor_state;
  std::vector<RngSnapshot> rngs;
  std::string config;  // Flags::echo() of the run that wrote it
  // Where it was loaded from, for error messages; not saved.
  std::string source;
};

// Writes `data` to `path` atomically: a temp file `path.tmp.<pid>` in the same directory is
// written and fsynced, renamed over `path`, and the directory is fsynced. If anything fails the
// previous file at `path` is untouched and the temp file is removed; the Error names the path and
// the OS error. Only one thread of a process may write a given path at a time (rank 0 does).
void save_checkpoint(const std::string& path, const CheckpointData& data);

// Reads a checkpoint. Refuses with a tern::Error naming the file and saying which: missing, not
// a Tern checkpoint (bad magic), unsupported version, truncated (expected vs got bytes),
// corrupted (CRC mismatch or inconsistent tensor), unparseable.
CheckpointData load_checkpoint(const std::string& path);

// The same framing in memory (header + payload), e.g. to broadcast a checkpoint to other ranks.
// `source` names the bytes in error messages.
std::string encode_checkpoint(const CheckpointData& data);
CheckpointData decode_checkpoint(const std::string& bytes, const std::string& source);

// Copies every parameter and buffer of `model` into data.model (replacing what was there).
// The caller sets data.model_name.
void capture_model(Module& model, CheckpointData& data);
// Copies data.model into the model's parameters and buffers, matched by name, bit-exactly.
// Everything is checked before anything is written, so a refused restore leaves the model as it
// was: a tensor missing from the checkpoint, one the model does not have, or a shape or dtype
// mismatch is an Error naming the tensor (and both shapes). A non-empty expected_model_name must
// equal data.model_name.
void restore_model(Module& model, const CheckpointData& data, const std::string& expected_model_name = "");
// Refuses a checkpoint written for another model, naming both.
void check_model_name(const CheckpointData& data, const std::string& expected_model_name);

// The same for Optimizer::state(); restore also requires the same optimizer (name()).
void capture_optimizer(Optimizer& optimizer, CheckpointData& data);
void restore_optimizer(Optimizer& optimizer, const CheckpointData& data);

// Adds (or replaces) the generator `name`; restore_rng refuses a name the checkpoint lacks.
void capture_rng(const std::string& name, const Rng& rng, CheckpointData& data);
void restore_rng(const CheckpointData& data, const std::string& name, Rng& rng);

// --- A directory of checkpoints (--checkpoint-dir DIR --checkpoint-every N --resume) ---

// "ckpt-<step, 10 digits>.tern": names sort in step order.
std::string checkpoint_file_name(int64_t step);

struct CheckpointFile {
  int64_t step;
  std::string path;
};
// The checkpoints in `dir` by ascending step; temp files and other names are ignored. A
// directory that does not exist holds none.
std::vector<CheckpointFile> list_checkpoints(const std::string& dir);

// The path of the highest-step checkpoint in `dir`, or "" if there is none. It does not skip a
// newest file that fails to load: see load_latest_checkpoint.
std::string latest_checkpoint(const std::string& dir);

// Loads the newest checkpoint in `dir`; nullopt if there is none. If the newest is truncated or
// corrupted this refuses (the Error says why and names the previous checkpoint that does load,
// if any) instead of falling back to it: atomic writes make a bad newest file a sign of outside
// damage that the user should see, a silent fallback would rerun steps the user believes done,
// and the resumed run would later overwrite the damaged file, the evidence, with its own.
std::optional<CheckpointData> load_latest_checkpoint(const std::string& dir);

// A checkpoint named the way the programs take one (`--checkpoint PATH`): a file, or a
// --checkpoint-dir whose newest checkpoint is loaded. A directory without one is an Error naming it.
CheckpointData load_checkpoint_file_or_dir(const std::string& path);

// Writes data to dir/checkpoint_file_name(data.step) (creating dir), then prunes: of the
// checkpoints with a step at or below data.step, the `keep` newest stay (the one just written
// among them). Pruning happens only after the write succeeded. Returns the path written.
std::string save_checkpoint_to_dir(const std::string& dir, const CheckpointData& data, int keep = 2);

// Removes checkpoints with step <= up_to_step except the `keep` (>= 1) newest of them. Files
// with a higher step (another run's) and temp files are left alone.
void prune_checkpoints(const std::string& dir, int keep, int64_t up_to_step = INT64_MAX);

}  // namespace tern
