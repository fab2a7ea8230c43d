// ShmCollectives: the shared-memory transport's allreduce and allgather(v) over the whole world,
// through one segment every rank maps — a slot per rank for its input and one for a result. For
// an allreduce each rank copies its piece in, reduces its share of all ranks' pieces (in rank order,
// so a float sum has the same bits in every run), and copies every share out; for an allgather each
// copies its piece in and every other piece out. Two (one) synchronisations per piece where the ring
// needs 2(P-1) (P-1) messages in a row, which is what costs on a host with fewer cores than ranks
// (every step waits for a peer to be scheduled).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/tcp/shm_segment.h"
#include "comm/transport.h"

namespace tern {

class ShmCollectives final : public WorldCollectives {
 public:
  // Input bytes per rank handled at once; larger operations go piece by piece.
  static constexpr size_t kDefaultSlotBytes = size_t{1} << 20;

  static size_t segment_bytes(int ranks, size_t slot_bytes);
  // Rank 0 creates the segment (the name carries its pid, as the rings' do), the others open it
  // once it has; the creator unlinks the name when all have mapped it. `poll`: how long a wait
  // looks at the flags (yielding the core between looks) before it sleeps on a futex.
  static ShmCollectives create(const std::string& name, int ranks, size_t slot_bytes,
                                  std::chrono::microseconds poll);
  static ShmCollectives open(const std::string& name, int rank, int ranks, std::chrono::microseconds poll);
  // Tells the other ranks this one is gone: their waits for it fail at once instead of at timeout.
  ~ShmCollectives() override;
  ShmCollectives(ShmCollectives&&) = default;

  Moved allreduce(void* data, int64_t n, DType dtype, ReduceOp op, std::chrono::milliseconds timeout) override;
  Moved allgatherv(const void* in, void* out, const std::vector<int64_t>& counts, size_t elem_size,
                   std::chrono::milliseconds timeout) override;

 private:
  struct Header;
  struct RankLine;
  ShmCollectives(shm::Segment segment, int rank, std::chrono::microseconds poll);

  Header& header() const;
  RankLine& line(int rank) const;
  uint8_t* slot(int rank) const;  // rank == size_: the result slot
  void ring_bell() const;
  void publish(std::atomic<uint32_t>& flag, uint32_t q) const;  // flag = q, then ring the bell
  // Whether rank r's in_ready / out_ready has reached q.
  auto in_ready(uint32_t q) const;
  auto out_ready(uint32_t q) const;
  // Runs body(k) for every other rank k, each as soon as ready(k) holds.
  template <typename Ready, typename Body>
  void for_each_other_when(Ready&& ready, const char* stage, std::chrono::milliseconds timeout, Body&& body);
  // Waits until ready(k) holds for some k still pending in `pending` (a bit per rank), returns it.
  template <typename Ready>
  int wait_any(uint64_t pending, Ready&& ready, const char* stage, std::chrono::milliseconds timeout);
  // Starts piece q: fails at once after an earlier error, then waits until every rank has finished
  // reading piece q-1 (so this rank's slot may be overwritten).
  void begin_piece(uint32_t q, std::chrono::milliseconds timeout);
  // Publishes piece q's input: this rank's call (what it is and how large, set by the caller in
  // call_) and in_ready = q.
  void publish_input(uint32_t q);
  // Fails every rank whose call differs (another collective, dtype, op or size): each reads the
  // others' inputs by its own sizes, so a mismatch would otherwise corrupt results or read past
  // what was written, silently.
  void check_same_call(int k);

  shm::Segment segment_;
  int rank_ = 0;
  int size_ = 1;
  size_t slot_bytes_ = 0;
  uint64_t others_ = 0;  // a bit per rank but this one
  std::chrono::microseconds poll_{0};
  uint32_t sequence_ = 0;  // pieces done, the same on every rank
  bool broken_ = false;
  const char* operation_ = "allreduce";  // the one running, for errors
  // The call running, as every rank publishes it with its input (RankLine::call, count).
  struct Call {
    uint64_t what = 0;   // collective, dtype, op; for allgatherv a hash of the counts
    uint64_t count = 0;  // elements (allreduce), bytes of the output (allgatherv)
  } call_;
  std::string describe(const Call& call) const;
};

}  // namespace tern
