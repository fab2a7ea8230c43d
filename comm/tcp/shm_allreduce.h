// ShmWorldAllreduce: the shared-memory transport's allreduce over the whole world, through one
// segment every rank maps — a slot per rank for its input and one for the result. Each rank
// copies its piece in, reduces its share of all ranks' pieces, and copies every share out: two
// synchronisations per piece where the ring needs 2(P-1) messages, which is what costs on a host
// with fewer cores than ranks (every step waits for a peer to be scheduled).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "comm/tcp/shm_segment.h"
#include "comm/transport.h"

namespace tern {

class ShmWorldAllreduce final : public WorldAllreduce {
 public:
  // Input bytes per rank handled at once; larger allreduces go piece by piece.
  static constexpr size_t kDefaultSlotBytes = size_t{1} << 20;

  static size_t segment_bytes(int ranks, size_t slot_bytes);
  // Rank 0 creates the segment (the name carries its pid, as the rings' do), the others open it
  // once it has; the creator unlinks the name when all have mapped it. `poll`: how long a wait
  // looks at the flags (yielding the core between looks) before it sleeps on a futex.
  static ShmWorldAllreduce create(const std::string& name, int ranks, size_t slot_bytes,
                                  std::chrono::microseconds poll);
  static ShmWorldAllreduce open(const std::string& name, int rank, int ranks, std::chrono::microseconds poll);
  // Tells the other ranks this one is gone: their waits for it fail at once instead of at timeout.
  ~ShmWorldAllreduce() override;
  ShmWorldAllreduce(ShmWorldAllreduce&&) = default;

  Moved allreduce(void* data, int64_t n, DType dtype, ReduceOp op, std::chrono::milliseconds timeout) override;
  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  struct Header;
  struct RankLine;
  ShmWorldAllreduce(shm::Segment segment, int rank, std::chrono::microseconds poll);

  Header& header() const;
  RankLine& line(int rank) const;
  uint8_t* slot(int rank) const;  // rank == size_: the result slot
  void ring_bell() const;
  // Waits until ready(k) holds for some k still pending in `pending` (a bit per rank), returns it.
  template <typename Ready>
  int wait_any(uint64_t pending, Ready&& ready, const char* stage, std::chrono::milliseconds timeout);

  shm::Segment segment_;
  int rank_ = 0;
  int size_ = 1;
  size_t slot_bytes_ = 0;
  std::chrono::microseconds poll_{0};
  uint32_t sequence_ = 0;  // pieces done, the same on every rank
  bool broken_ = false;
};

}  // namespace tern
