// MemoryPlan: where every buffer of one training step lives inside a single arena, decided before the
// step runs, so the device needs no heap. update_plan builds the buffers; tern-finetune plans and checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/io/byte_sizes.h"

namespace tern::ondevice {

// What a buffer holds; the per-layer memory table has one column per kind.
enum class BufferKind : uint8_t {
  kActivation,      // a forward activation that dies once its consumers ran
  kSaved,           // a forward activation kept for backward (the input of a trained weight)
  kReluMask,        // one bit per element of a ReLU output, for backward through the ReLU
  kGradient,        // an activation, weight or bias gradient
  kOptimizerState,  // momentum / Adam moments of the trained parameters
  kTrainedParam,    // the SRAM copy of a parameter that is updated (frozen ones stay in flash)
  kScratch,         // an operator's temporary workspace
};
inline constexpr int kNumBufferKinds = 7;
const char* buffer_kind_name(BufferKind kind);

// One buffer of a step: its bytes and its lifetime, the inclusive range of operator indices from the
// operator that writes it first to the one that reads it last.
struct Buffer {
  std::string name;   // "conv3.out", "conv3.grad_w"
  std::string layer;  // the layer it is charged to in the per-layer table
  BufferKind kind = BufferKind::kScratch;
  size_t size = 0;       // bytes
  size_t alignment = 1;  // a power of two; the buffer's offset is a multiple of it
  int first = 0;
  int last = 0;
};

// Both strategies place buffers in order of decreasing size (ties: earlier first use, then input
// order), as TFLite's greedy-by-size planner does; each buffer goes into a gap between the buffers
// already placed whose lifetimes overlap its own. First-fit takes the lowest gap that holds it,
// best-fit the tightest one (least bytes left over); both fall back to the top of those buffers.
enum class PlacementStrategy : uint8_t { kFirstFit, kBestFit };
const char* placement_strategy_name(PlacementStrategy strategy);

struct MemoryPlan {
  std::vector<Buffer> buffers;
  std::vector<size_t> offsets;   // offsets[i]: where buffers[i] starts in the arena
  std::vector<std::string> ops;  // operator names, for messages; may be empty
  size_t peak = 0;               // arena bytes: max over buffers of offset + size
  int num_ops = 0;               // 1 + the largest `last` of any buffer

  bool fits(size_t budget) const { return peak <= budget; }
  // Throws tern::Error when the plan needs more than `budget` bytes: by how much, at which operator
  // the arena is fullest, and the buffers live there, largest first.
  void require_fits(size_t budget) const;
  // Indices of the buffers live at operator `op`.
  std::vector<int> live_at(int op) const;
  // The operator at which the live buffers reach highest in the arena (ties: most live bytes).
  int peak_op() const;
  std::string op_name(int op) const;
};

// Places the buffers. Throws tern::Error for a buffer with last < first, a negative operator index or
// an alignment that is not a power of two.
MemoryPlan plan_memory(std::vector<Buffer> buffers, PlacementStrategy strategy = PlacementStrategy::kBestFit,
                       std::vector<std::string> ops = {});

// Throws tern::Error naming the two buffers when two buffers that are live at the same operator share
// a byte, and for a misaligned offset or a buffer past `peak`.
void validate(const MemoryPlan& plan);

// The most bytes live at any one operator: no placement can use a smaller arena.
size_t live_bytes_lower_bound(std::span<const Buffer> buffers);

// The per-layer memory table: bytes of each kind charged to each layer (sums of buffer sizes, which
// can exceed the arena since buffers that never live together share bytes).
struct LayerMemory {
  std::string layer;
  size_t bytes[kNumBufferKinds] = {};
  size_t total() const;
};
// Layers in order of their first buffer.
std::vector<LayerMemory> memory_table(const MemoryPlan& plan);
// The table as text, with totals, the arena peak and the live-bytes lower bound.
std::string format_memory_table(const MemoryPlan& plan);

// The run-time side: hands out the plan's offsets inside caller-owned memory and records the
// high-water mark (the highest byte any live buffer reached). It never throws and never allocates
// once constructed, so the bare-metal build can use it: a failed acquire returns nullptr.
class ArenaAllocator {
 public:
  // `plan` must outlive the allocator.
  ArenaAllocator(const MemoryPlan& plan, std::span<std::byte> memory);

  // The memory of plan buffer `index`; nullptr when the index is out of range, the buffer is already
  // live, it does not fit in the memory, or it would share a byte with a live buffer.
  std::byte* acquire(int index);
  // Ends buffer `index`'s lifetime; false when it was not live.
  bool release(int index);

  size_t high_water() const { return high_water_; }
  size_t live_bytes() const { return live_bytes_; }
  size_t peak_live_bytes() const { return peak_live_bytes_; }

 private:
  const MemoryPlan* plan_;
  std::span<std::byte> memory_;
  std::vector<uint8_t> live_;
  std::vector<int> live_list_;  // indices of live buffers, for the overlap check
  size_t high_water_ = 0;
  size_t live_bytes_ = 0;
  size_t peak_live_bytes_ = 0;
};

}  // namespace tern::ondevice
