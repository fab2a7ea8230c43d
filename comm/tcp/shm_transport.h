// ShmTransport: the tcp backend's byte layer when every rank runs on one host — a ring buffer in
// POSIX shared memory per ordered pair of ranks instead of a socket (what Open MPI's vader and
// NCCL's SHM transport do). make_tcp_communicator chooses it; TERN_SHM=0 turns it off.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/store.h"
#include "comm/tcp/tcp_communicator.h"
#include "comm/transport.h"

namespace tern {

// Thrown by every rank of a world, together, when the segments could not be created or mapped on
// some rank (no /dev/shm, out of space): the caller can fall back to TCP. Other setup failures (a
// rank that never arrives) are plain CommErrors.
class ShmUnavailable : public CommError {
 public:
  using CommError::CommError;
};

// Every rank publishes its host identity (boot id, hostname, IPC namespace) in the store and reads
// everyone's: how many ranks of the world (this one included) run on this host. The world can use
// shared memory when that is all of them, which every rank then learns alike. A rank that does not
// publish within `timeout` is a CommError.
int ranks_on_this_host(const TcpWorld& world, Store& store, std::chrono::milliseconds timeout);

// The sizes of the shared-memory segments a rank creates: its incoming rings, and (rank 0) the
// world collectives segment's per-rank slots (0: no such segment).
struct ShmSizes {
  size_t ring_bytes = 0;
  size_t slot_bytes = 0;
};
// What a whole world of `world_size` ranks reserves in /dev/shm with `sizes`: P(P-1) rings and the
// collectives segment.
size_t shm_bytes_needed(int world_size, ShmSizes sizes);
// The sizes a rank uses when /dev/shm has `free_bytes` left: `wanted` when the world's need fits in
// half of it (the host's other users share /dev/shm, and each rank measures at its own moment), else
// rings and slots halved together until it does; nullopt when rings of kMinRingBytes still do not.
std::optional<ShmSizes> shm_sizes_for_space(size_t free_bytes, int world_size, ShmSizes wanted);

class ShmTransport final : public Transport {
 public:
  static constexpr size_t kDefaultRingBytes = size_t{4} << 20;
  // The smallest rings and slots a short /dev/shm shrinks them to; below that the world uses TCP.
  static constexpr size_t kMinRingBytes = size_t{64} << 10;
  static constexpr size_t kMinSlotBytes = size_t{64} << 10;

  // Creates this rank's incoming rings, maps its outgoing ones through the store, and unlinks the
  // names once every rank has mapped them. All ranks of `world` must share this host. Rings (and
  // the collectives segment) shrink to fit /dev/shm (shm_sizes_for_space); ShmUnavailable on every
  // rank when some rank's do not fit even so.
  ShmTransport(const TcpWorld& world, Store& store, const CommOptions& options,
               size_t ring_bytes = kDefaultRingBytes);
  // Closes every ring: the peers' recvs from this rank fail once they have drained what was sent.
  ~ShmTransport() override;
  ShmTransport(const ShmTransport&) = delete;
  ShmTransport& operator=(const ShmTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Copies the message into the ring to dst in pieces; waits only for ring space, which the
  // peer's receiver thread frees whether or not a recv is posted (so rings of sends cannot
  // deadlock). A peer that frees no space for options.timeout fails the send.
  void send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) override;
  // Reads the ring itself while it waits, for up to options.poll (the message lands
  // in `data` with no thread hand-off), then leaves the ring to the receiver thread and sleeps.
  void recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
            std::chrono::milliseconds timeout) override;
  // A posted recv of more than options.poll_max_bytes (or with polling off) has the receiver
  // thread read the ring for it from the post on, so its message lands in its buffer while the
  // caller is busy sending; a smaller one polls the ring in wait(), as recv does.
  std::unique_ptr<PostedRecv> post_recv(int src, uint64_t context, uint64_t tag, void* data,
                                        size_t bytes) override;
  // The same, reducing straight out of the ring into `data` (no copy of the message is made).
  std::unique_ptr<PostedRecv> post_recv_reduce(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                                               RecvReduction how) override;
  // Allreduce and allgather through one segment all ranks map (shm_collectives.h); null when off
  // (CommOptions::shm_collectives_max_bytes = 0) or the world has more than kMaxWorldCollectivesRanks.
  WorldCollectives* world_collectives() override { return world_collectives_.get(); }
  static constexpr int kMaxWorldCollectivesRanks = 64;
  uint64_t bytes_sent() const override { return bytes_sent_; }
  uint64_t bytes_received() const override { return bytes_received_; }

 private:
  struct Peer;
  class PeerRecv;

  void setup(const TcpWorld& world, Store& store, size_t ring_bytes);
  void stop_receivers();
  void receive_messages(Peer& peer);
  void poll_messages(Peer& peer, std::chrono::steady_clock::time_point deadline);
  bool take_any_record();
  bool take_record(Peer& peer, std::chrono::steady_clock::time_point deadline);
  std::string ring_death(Peer& peer, std::chrono::steady_clock::time_point* next_liveness);
  template <typename Take>  // size_t take(size_t done); defined and used in shm_transport.cpp only
  std::string read_payload(Peer& peer, size_t bytes, std::chrono::steady_clock::time_point deadline, Take&& take);
  std::string read_exact(Peer& peer, void* data, size_t bytes, std::chrono::steady_clock::time_point deadline);
  std::string read_reducing(Peer& peer, void* data, size_t bytes, const RecvReduction& how,
                            std::chrono::steady_clock::time_point deadline);

  int rank_;
  int size_;
  CommOptions options_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::unique_ptr<WorldCollectives> world_collectives_;
  std::atomic<bool> closing_{false};
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};
};

}  // namespace tern
