// Tern's collective algorithms over a Transport: ring and recursive-doubling allreduce, ring
// reduce-scatter and allgather(v), tree/chain broadcast, dissemination barrier. The local and tcp
// backends run these through TransportCommunicator; bench/ calls them directly to tune them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "comm/transport.h"

namespace tern {

// Below this many bytes allreduce uses recursive doubling (log2 P steps, whole buffer each step)
// and broadcast a binomial tree; from it up, the bandwidth-optimal ring / pipelined chain.
// Measured on the tcp backend (shared memory, one host; bench/allreduce --small-message-bytes 1
// vs 1G, us per f32 allreduce, ring / recursive doubling): 2 ranks: 64 KB 110/75, 256 KB 134/120,
// 1 MB 526/297; 4 ranks: 64 KB 298/240, 256 KB 430/381, 1 MB 1166/1393, 4 MB 7691/8703. The
// crossover lies between 256 KB and 1 MB (later at 2 ranks), hence 512 KB.
constexpr size_t kDefaultSmallMessageBytes = size_t{512} << 10;
// Allgather's switch from recursive doubling to the ring (power-of-two groups of 4+; the whole
// output). Measured at 4 ranks on 2 cores (bench/allreduce --op allgather --small-gather-bytes 0 vs
// 4M, medians of 7 / 5 alternated runs, us, ring / recursive doubling): sockets 4 KB 88 / 62, 64 KB
// 111 / 76, 1 MB 469 / 423 and 550 / 512, 2 MB 1490 / 1063, 4 MB 3232 / 3313; local (threads) 4 KB
// 53 / 28, 1 MB 244 / 171, 4 MB 1260 / 1447. Hence below 4 MB.
constexpr size_t kDefaultSmallGatherBytes = size_t{4} << 20;
// The ring cuts each block into chunks of this size so that one chunk is on the wire (or being
// copied) while the previous one is reduced.
constexpr size_t kDefaultRingChunkBytes = size_t{256} << 10;

// A ring pass (and the broadcast chain) posts the recvs of the chunks to come ahead of need
// (Transport::post_recv), so that chunks arriving while this rank is still sending land where they
// are needed instead of in the transport's mailbox (an allocation and a copy more per chunk). A
// reducing pass may receive into scratch, a chunk per posted recv (Transport::post_recv_reduce's
// default; the shared-memory, tcp and local transports reduce in place and need none), and keeps at
// most this much posted: at 256 KB chunks 256 recvs, all of a 2-rank 64 MB allreduce's first block.
// Copying passes keep at most kMaxPostedRecvs. Measured (bench/tern_allreduce_bench, 2 ranks, 64
// MB, medians of 5 alternated runs, 8 MB / 64 recvs -> 64 MB / 256 recvs): sockets allreduce 59.7
// -> 48.5 ms, allgather 32.1 -> 27.3 ms, shared-memory allgather 19.2 -> 13.9 ms (4 ranks, sockets,
// allgather 68.9 -> 60.9 ms, 3 runs); from 16 MB down every recv fit either way.
constexpr size_t kDefaultRingWindowBytes = size_t{64} << 20;
constexpr size_t kMaxPostedRecvs = 256;

struct AlgorithmOptions {
  // The transport's own collectives over its whole world (Transport::world_collectives), for
  // groups that are that world, and the size up to which allreduce and allgather(v) use them
  // (the buffer; allgatherv's whole output); null: message passing only.
  WorldCollectives* world_collectives = nullptr;
  size_t world_max_bytes = 0;
  size_t small_message_bytes = kDefaultSmallMessageBytes;
  // Power-of-two groups of 4 or more: allgather(v) outputs below this use recursive doubling
  // (log2 P exchanges) instead of the ring (P - 1 steps); 0: never.
  size_t small_gather_bytes = kDefaultSmallGatherBytes;
  size_t ring_chunk_bytes = kDefaultRingChunkBytes;  // 0 means one chunk per block
  // When larger than ring_chunk_bytes: a ring pass's chunks grow with its blocks, a quarter of the
  // largest block, from ring_chunk_bytes up to this (ring_chunk_for_blocks). 0: fixed chunks.
  size_t ring_chunk_max_bytes = 0;
  size_t ring_window_bytes = kDefaultRingWindowBytes;  // at least one chunk is always posted
  // Power-of-two groups of 4 or more: allreduce from small_message_bytes up to this uses recursive
  // halving and doubling (2 log2 P exchanges) instead of the ring (2(P-1) steps); 0: never.
  size_t halving_doubling_max_bytes = 0;
};

// Transport tags of collective operations have the top bit set; user send/recv tags (>= 0) map to
// tags without it, so the two can never meet in one mailbox.
constexpr uint64_t kAlgorithmTagBit = uint64_t{1} << 63;
inline uint64_t algorithm_tag(uint64_t operation_index) { return kAlgorithmTagBit | operation_index; }
inline uint64_t user_tag(int tag) { return static_cast<uint64_t>(static_cast<uint32_t>(tag)); }

// The members of one communicator on a shared transport: maps group ranks to transport ranks,
// applies the timeout, and counts this group's bytes. Not copyable (the counters are shared with
// readers on other threads).
class Group {
 public:
  // members: transport ranks in group-rank order; rank: this process's index in members.
  Group(Transport& transport, std::vector<int> members, int rank, uint64_t context,
        std::chrono::milliseconds timeout);
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const { return rank_; }
  int size() const { return static_cast<int>(members_.size()); }
  const std::vector<int>& members() const { return members_; }
  uint64_t context() const { return context_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // peer is a group rank. Transport errors propagate as CommError.
  void send(int peer, uint64_t tag, const void* data, size_t bytes);
  void recv(int peer, uint64_t tag, void* data, size_t bytes);
  // A recv posted ahead of the sends that make its message come (Transport::post_recv), and its
  // completion with the group's timeout. The buffer is the transport's until wait returns or the
  // handle dies.
  std::unique_ptr<PostedRecv> post_recv(int peer, uint64_t tag, void* data, size_t bytes);
  // The same, reducing the message into data (Transport::post_recv_reduce).
  std::unique_ptr<PostedRecv> post_recv_reduce(int peer, uint64_t tag, void* data, size_t bytes, RecvReduction how);
  void wait(PostedRecv& recv);
  // Adds bytes moved by other means than send and recv (a transport's world allreduce).
  void count(uint64_t sent, uint64_t received);

  uint64_t bytes_sent() const { return sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const { return received_.load(std::memory_order_relaxed); }

 private:
  Transport& transport_;
  std::vector<int> members_;
  int rank_;
  uint64_t context_;
  std::chrono::milliseconds timeout_;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> received_{0};
};

// The chunk of a ring pass whose largest block holds block_bytes: options.ring_chunk_bytes, or with
// options.ring_chunk_max_bytes above it, block_bytes / 4 clamped between the two — a few chunks per
// block keep sending and reducing overlapped, and large blocks go in fewer, larger messages.
size_t ring_chunk_for_blocks(const AlgorithmOptions& options, size_t block_bytes);

// Every function below is collective over the group: all members call it with the same tag, n,
// dtype, op and counts. One tag per call is enough, because messages between one pair of ranks are
// delivered in order and each algorithm sends them in an order both sides know.

// data (n elements) becomes op over all members' data; avg divides once at the end. Picks the
// transport's world collectives up to options.world_max_bytes when the options carry them,
// else recursive doubling below options.small_message_bytes, halving-doubling from it up to
// options.halving_doubling_max_bytes (power-of-two groups of 4 or more), and the ring above.
void allreduce(Group& group, uint64_t tag, void* data, int64_t n, DType dtype, ReduceOp op,
               const AlgorithmOptions& options = {});
// The allreduce algorithms, for tests and benchmarks. None divides for avg (they sum).
void allreduce_ring(Group& group, uint64_t tag, void* data, int64_t n, DType dtype, ReduceOp op,
                    const AlgorithmOptions& options = {});
void allreduce_recursive_doubling(Group& group, uint64_t tag, void* data, int64_t n, DType dtype,
                                  ReduceOp op);
// Rabenseifner's: reduce-scatter by recursive halving, allgather by recursive doubling; the
// ring's bytes in log2 P steps each way. Groups whose size is a power of two only.
void allreduce_halving_doubling(Group& group, uint64_t tag, void* data, int64_t n, DType dtype, ReduceOp op);

// out (even_counts(n, P)[rank] elements) = this rank's block of op over all members' in (n elements).
void reduce_scatter(Group& group, uint64_t tag, const void* in, void* out, int64_t n, DType dtype,
                    ReduceOp op, const AlgorithmOptions& options = {});
// out (P * bytes) = every member's in (bytes), in group-rank order. in may not overlap out
// except as out's own slot.
void allgather(Group& group, uint64_t tag, const void* in, void* out, size_t bytes,
               const AlgorithmOptions& options = {});
// out = every member's in (counts[r] elements of elem_size bytes) in group-rank order; counts may
// be zero. The transport's world collectives up to options.world_max_bytes from 3 ranks up, else
// recursive doubling below options.small_gather_bytes (power-of-two groups of 4+), else the ring.
void allgatherv(Group& group, uint64_t tag, const void* in, void* out, const std::vector<int64_t>& counts,
                size_t elem_size, const AlgorithmOptions& options = {});
// The recursive-doubling allgatherv alone, on an `out` that already holds this rank's block
// (power-of-two groups only), for tests.
void allgatherv_recursive_doubling(Group& group, uint64_t tag, void* out, const std::vector<int64_t>& counts,
                                   size_t elem_size);
// data (bytes) on every member becomes root's data: binomial tree below small_message_bytes, a
// chunked chain (root, root+1, ...) from it up.
void broadcast(Group& group, uint64_t tag, void* data, size_t bytes, int root,
               const AlgorithmOptions& options = {});
// Returns once every member has entered it (dissemination: ceil(log2 P) rounds).
void barrier(Group& group, uint64_t tag);

}  // namespace tern
