#include "ondevice/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>
#include <sstream>

#include "runtime/error.h"

namespace tern::ondevice {
namespace {

size_t align_up(size_t value, size_t alignment) { return (value + alignment - 1) / alignment * alignment; }

bool is_power_of_two(size_t x) { return x != 0 && (x & (x - 1)) == 0; }

bool lifetimes_overlap(const Buffer& a, const Buffer& b) { return a.first <= b.last && b.first <= a.last; }

bool bytes_overlap(size_t a_offset, size_t a_size, size_t b_offset, size_t b_size) {
  return a_size > 0 && b_size > 0 && a_offset < b_offset + b_size && b_offset < a_offset + a_size;
}

// Places buffer `b` among `placed` (indices of buffers already placed whose lifetimes overlap b's).
size_t choose_offset(const Buffer& b, std::vector<std::pair<size_t, size_t>>& placed,
                     PlacementStrategy strategy) {
  std::sort(placed.begin(), placed.end());  // by offset
  size_t cursor = 0;                        // the lowest byte not covered by a placed buffer below
  size_t best_offset = 0;
  size_t best_slack = std::numeric_limits<size_t>::max();
  bool found = false;
  for (const auto& [offset, size] : placed) {
    const size_t candidate = align_up(cursor, b.alignment);
    if (offset > cursor && candidate + b.size <= offset) {
      const size_t slack = offset - cursor - b.size;
      if (strategy == PlacementStrategy::kFirstFit) return candidate;
      if (slack < best_slack) {
        best_slack = slack;
        best_offset = candidate;
        found = true;
      }
    }
    cursor = std::max(cursor, offset + size);
  }
  return found ? best_offset : align_up(cursor, b.alignment);
}

}  // namespace

const char* buffer_kind_name(BufferKind kind) {
  switch (kind) {
    case BufferKind::kActivation:
      return "activation";
    case BufferKind::kSaved:
      return "saved activation";
    case BufferKind::kReluMask:
      return "relu mask";
    case BufferKind::kGradient:
      return "gradient";
    case BufferKind::kOptimizerState:
      return "optimizer state";
    case BufferKind::kTrainedParam:
      return "trained parameter";
    case BufferKind::kScratch:
      return "scratch";
  }
  return "?";
}

const char* placement_strategy_name(PlacementStrategy strategy) {
  return strategy == PlacementStrategy::kFirstFit ? "first-fit" : "best-fit";
}

MemoryPlan plan_memory(std::vector<Buffer> buffers, PlacementStrategy strategy,
                       std::vector<std::string> ops) {
  MemoryPlan plan;
  for (const Buffer& b : buffers) {
    TERN_CHECK(b.first >= 0 && b.last >= b.first, "memory plan: buffer '", b.name, "' has lifetime [",
               b.first, ", ", b.last, "]; expected 0 <= first <= last");
    TERN_CHECK(is_power_of_two(b.alignment), "memory plan: buffer '", b.name, "' has alignment ", b.alignment,
               "; expected a power of two");
    plan.num_ops = std::max(plan.num_ops, b.last + 1);
  }
  std::vector<int> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    if (buffers[a].size != buffers[b].size) return buffers[a].size > buffers[b].size;
    return buffers[a].first < buffers[b].first;
  });

  plan.offsets.assign(buffers.size(), 0);
  std::vector<int> placed;
  placed.reserve(buffers.size());
  std::vector<std::pair<size_t, size_t>> neighbours;
  for (int i : order) {
    const Buffer& b = buffers[i];
    if (b.size == 0) continue;  // takes no bytes; offset 0
    neighbours.clear();
    for (int j : placed)
      if (lifetimes_overlap(b, buffers[j])) neighbours.emplace_back(plan.offsets[j], buffers[j].size);
    plan.offsets[i] = choose_offset(b, neighbours, strategy);
    plan.peak = std::max(plan.peak, plan.offsets[i] + b.size);
    placed.push_back(i);
  }
  plan.buffers = std::move(buffers);
  plan.ops = std::move(ops);
  return plan;
}

void validate(const MemoryPlan& plan) {
  const auto& bufs = plan.buffers;
  TERN_CHECK(plan.offsets.size() == bufs.size(), "memory plan: ", plan.offsets.size(), " offsets for ",
             bufs.size(), " buffers");
  for (size_t i = 0; i < bufs.size(); ++i) {
    TERN_CHECK(plan.offsets[i] % bufs[i].alignment == 0, "memory plan: buffer '", bufs[i].name,
               "' at offset ", plan.offsets[i], " is not aligned to ", bufs[i].alignment);
    TERN_CHECK(bufs[i].size == 0 || plan.offsets[i] + bufs[i].size <= plan.peak, "memory plan: buffer '",
               bufs[i].name, "' ends at ", plan.offsets[i] + bufs[i].size, ", past the arena's ", plan.peak,
               " bytes");
    for (size_t j = i + 1; j < bufs.size(); ++j) {
      if (!lifetimes_overlap(bufs[i], bufs[j])) continue;
      TERN_CHECK(!bytes_overlap(plan.offsets[i], bufs[i].size, plan.offsets[j], bufs[j].size),
                 "memory plan: buffers '", bufs[i].name, "' [", plan.offsets[i], ", ",
                 plan.offsets[i] + bufs[i].size, ") and '", bufs[j].name, "' [", plan.offsets[j], ", ",
                 plan.offsets[j] + bufs[j].size, ") are live together (ops ",
                 std::max(bufs[i].first, bufs[j].first), "..", std::min(bufs[i].last, bufs[j].last),
                 ") and share bytes");
    }
  }
}

size_t live_bytes_lower_bound(std::span<const Buffer> buffers) {
  // Sweep: +size at first, -size after last.
  std::vector<std::pair<int, int64_t>> events;
  events.reserve(2 * buffers.size());
  for (const Buffer& b : buffers) {
    events.emplace_back(b.first, static_cast<int64_t>(b.size));
    events.emplace_back(b.last + 1, -static_cast<int64_t>(b.size));
  }
  std::sort(events.begin(), events.end());  // at equal times the frees (negative) come first
  int64_t live = 0, best = 0;
  for (const auto& [time, delta] : events) {
    live += delta;
    best = std::max(best, live);
  }
  return static_cast<size_t>(best);
}

std::vector<int> MemoryPlan::live_at(int op) const {
  std::vector<int> live;
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i].first <= op && op <= buffers[i].last) live.push_back(static_cast<int>(i));
  return live;
}

int MemoryPlan::peak_op() const {
  int best_op = 0;
  size_t best_top = 0, best_live = 0;
  for (int op = 0; op < num_ops; ++op) {
    size_t top = 0, live = 0;
    for (int i : live_at(op)) {
      top = std::max(top, buffers[i].size ? offsets[i] + buffers[i].size : 0);
      live += buffers[i].size;
    }
    if (top > best_top || (top == best_top && live > best_live)) {
      best_op = op;
      best_top = top;
      best_live = live;
    }
  }
  return best_op;
}

std::string MemoryPlan::op_name(int op) const {
  if (op >= 0 && op < static_cast<int>(ops.size())) return "op " + std::to_string(op) + " '" + ops[op] + "'";
  return "op " + std::to_string(op);
}

void MemoryPlan::require_fits(size_t budget) const {
  if (fits(budget)) return;
  const int op = peak_op();
  std::vector<int> live = live_at(op);
  std::stable_sort(live.begin(), live.end(), [&](int a, int b) { return buffers[a].size > buffers[b].size; });
  std::ostringstream msg;
  msg << "memory plan needs " << format_bytes(peak) << " (" << peak << " bytes) but the budget is "
      << format_bytes(budget) << " (" << budget << " bytes): over by " << format_bytes(peak - budget) << " ("
      << peak - budget << " bytes). At the peak, " << op_name(op) << ", the largest live buffers are:";
  constexpr size_t kShown = 6;
  size_t rest = 0;
  for (size_t k = 0; k < live.size(); ++k) {
    const Buffer& b = buffers[live[k]];
    if (k < kShown) {
      msg << (k ? ";" : "") << " " << b.name << " " << format_bytes(b.size) << " ("
          << buffer_kind_name(b.kind) << ")";
    } else {
      rest += b.size;
    }
  }
  if (live.size() > kShown) msg << "; and " << live.size() - kShown << " more, " << format_bytes(rest);
  throw Error(msg.str());
}

size_t LayerMemory::total() const { return std::accumulate(std::begin(bytes), std::end(bytes), size_t{0}); }

std::vector<LayerMemory> memory_table(const MemoryPlan& plan) {
  std::vector<LayerMemory> rows;
  for (const Buffer& b : plan.buffers) {
    auto row =
        std::find_if(rows.begin(), rows.end(), [&](const LayerMemory& r) { return r.layer == b.layer; });
    if (row == rows.end()) {
      rows.push_back(LayerMemory{.layer = b.layer});
      row = rows.end() - 1;
    }
    row->bytes[static_cast<int>(b.kind)] += b.size;
  }
  return rows;
}

std::string format_memory_table(const MemoryPlan& plan) {
  const std::vector<LayerMemory> rows = memory_table(plan);
  static constexpr const char* kHeaders[kNumBufferKinds] = {"activation", "saved",   "relu mask", "gradient",
                                                            "optimizer",  "trained", "scratch"};
  size_t name_width = 5;
  for (const LayerMemory& r : rows) name_width = std::max(name_width, r.layer.size());
  std::ostringstream out;
  char cell[64];
  auto row_text = [&](const std::string& name, const size_t(&bytes)[kNumBufferKinds], size_t total) {
    std::snprintf(cell, sizeof cell, "%-*s", static_cast<int>(name_width), name.c_str());
    out << cell;
    for (int k = 0; k < kNumBufferKinds; ++k) {
      std::snprintf(cell, sizeof cell, " %11zu", bytes[k]);
      out << cell;
    }
    std::snprintf(cell, sizeof cell, " %11zu\n", total);
    out << cell;
  };
  std::snprintf(cell, sizeof cell, "%-*s", static_cast<int>(name_width), "layer");
  out << cell;
  for (const char* h : kHeaders) {
    std::snprintf(cell, sizeof cell, " %11s", h);
    out << cell;
  }
  out << "       total\n";
  size_t totals[kNumBufferKinds] = {};
  for (const LayerMemory& r : rows) {
    row_text(r.layer, r.bytes, r.total());
    for (int k = 0; k < kNumBufferKinds; ++k) totals[k] += r.bytes[k];
  }
  row_text("total", totals, std::accumulate(std::begin(totals), std::end(totals), size_t{0}));
  out << "(bytes; buffers that are never live together share arena bytes)\n"
      << "peak arena: " << format_bytes(plan.peak) << " (" << plan.peak
      << " bytes); most bytes live at once: " << format_bytes(live_bytes_lower_bound(plan.buffers)) << "\n";
  return out.str();
}

ArenaAllocator::ArenaAllocator(const MemoryPlan& plan, std::span<std::byte> memory)
    : plan_(&plan), memory_(memory), live_(plan.buffers.size(), 0) {
  live_list_.reserve(plan.buffers.size());
}

std::byte* ArenaAllocator::acquire(int index) {
  if (index < 0 || index >= static_cast<int>(live_.size()) || live_[index]) return nullptr;
  const size_t offset = plan_->offsets[index];
  const size_t size = plan_->buffers[index].size;
  if (offset > memory_.size() || size > memory_.size() - offset) return nullptr;
  for (int other : live_list_)
    if (bytes_overlap(offset, size, plan_->offsets[other], plan_->buffers[other].size)) return nullptr;
  live_[index] = 1;
  live_list_.push_back(index);
  live_bytes_ += size;
  peak_live_bytes_ = std::max(peak_live_bytes_, live_bytes_);
  if (size > 0) high_water_ = std::max(high_water_, offset + size);
  return memory_.data() + offset;
}

bool ArenaAllocator::release(int index) {
  if (index < 0 || index >= static_cast<int>(live_.size()) || !live_[index]) return false;
  live_[index] = 0;
  live_list_.erase(std::find(live_list_.begin(), live_list_.end(), index));
  live_bytes_ -= plan_->buffers[index].size;
  return true;
}

}  // namespace tern::ondevice
