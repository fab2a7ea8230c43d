// Transport: byte messages between the processes (or threads) of one job, the layer under the
// collective algorithms of the local and tcp backends (gloo's Pair, in spirit).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "comm/communicator.h"
#include "runtime/tensor/dtype.h"

namespace tern {

// What a reducing recv (Transport::post_recv_reduce) does with its message: folds it into the
// buffer element by element, data[i] = data[i] op message[i] (avg sums, as reduce_into does).
struct RecvReduction {
  DType dtype = DType::f32;
  ReduceOp op = ReduceOp::sum;
};
// Throws (TERN_CHECK) unless `how` is a supported reduction and `bytes` whole elements of it.
void check_reducing_recv(size_t bytes, RecvReduction how);
// What completing a recv does with its message: copies it into data, or reduces it in with `how`.
void land_message(void* data, const void* message, size_t bytes, const std::optional<RecvReduction>& how);

// A receive posted ahead of time (Transport::post_recv): the transport may put the message
// straight into the buffer as it arrives, instead of parking it in a mailbox and copying it again
// when the recv comes. The buffer belongs to the transport from the post until wait() returns or
// throws, or the handle is destroyed, whichever comes first. A handle must die before its
// transport.
class PostedRecv {
 public:
  explicit PostedRecv(size_t bytes) : bytes_(bytes) {}
  // Destroying a handle before wait() un-posts it, and returns once the transport no longer
  // touches the buffer (a message half-copied into it is finished, or its link cut). A message
  // that had already reached the handle is discarded; one that had not goes to the next recv.
  // Meant for abandoning an operation that failed, not for normal use.
  virtual ~PostedRecv() = default;
  PostedRecv(const PostedRecv&) = delete;
  PostedRecv& operator=(const PostedRecv&) = delete;

  // Blocks until the message is in the buffer, with Transport::recv's errors (length mismatch,
  // timeout, dead peer). Call it at most once.
  virtual void wait(std::chrono::milliseconds timeout) = 0;
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_;
};

// Collectives a transport runs itself over its whole world, through memory every rank maps (the
// shared-memory transport's segment): a couple of synchronisations per piece instead of messages.
// Each is collective over all the transport's ranks, called in the same order everywhere from one
// thread at a time. A rank that dies or does not come within `timeout` is a CommError naming it;
// after any error every later call fails at once (the ranks no longer agree where they are).
class WorldCollectives {
 public:
  virtual ~WorldCollectives() = default;
  // The bytes this rank's data gave the others and took from theirs, for the communicator's byte
  // counters (what the ring would count: 2(P-1)/P of the buffer each way for an allreduce).
  struct Moved {
    uint64_t sent = 0;
    uint64_t received = 0;
  };
  // data (n elements of dtype; sum or max — avg sums, the caller divides) becomes op over every
  // rank's data.
  virtual Moved allreduce(void* data, int64_t n, DType dtype, ReduceOp op, std::chrono::milliseconds timeout) = 0;
  // out = every rank's in (counts[r] elements of elem_size bytes, counts the same on every rank)
  // in rank order; in may be out's own slot.
  virtual Moved allgatherv(const void* in, void* out, const std::vector<int64_t>& counts, size_t elem_size,
                           std::chrono::milliseconds timeout) = 0;
};

// Messages are matched by (source rank, context, tag) and delivered in order for each such
// triple: the k-th message goes to the k-th recv of that triple, counting posted recvs from their
// post_recv and plain recvs from their call. `context` separates communicators (the world and
// each split share one transport); `tag` separates operations within one (algorithms derive it
// from an operation counter, user send/recv tags live in their own range). Ranks here are the
// transport's (the world's) ranks.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Hands the message to the transport and returns; it never waits for the receiver to post a
  // recv (messages that arrive early are buffered), so send-then-recv rings cannot deadlock.
  // Throws CommError if the peer is known dead or the link fails.
  virtual void send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) = 0;
  // Blocks until the next message from (src, context, tag) arrives and copies it into data. A
  // message whose length is not `bytes` is a CommError naming both lengths; so is a timeout or a
  // peer that died (naming the peer).
  virtual void recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                    std::chrono::milliseconds timeout) = 0;
  // Takes this recv's place in the order of (src, context, tag) now and returns at once; the
  // handle's wait() completes it. The default is a plain recv run by wait(): it takes its place
  // only then, so with it handles must be waited in the order they were posted, with no plain
  // recv of the same triple in between (what the algorithms do). The tcp, shared-memory and local
  // transports post for real.
  virtual std::unique_ptr<PostedRecv> post_recv(int src, uint64_t context, uint64_t tag, void* data,
                                                size_t bytes);
  // A posted recv whose message is reduced into `data` (which holds this rank's operand) instead
  // of replacing it; `bytes` is a whole number of elements. Ordered and completed as post_recv's.
  // The shared-memory and tcp transports reduce straight from the link as the message arrives (no
  // copy of it is kept); the default receives into scratch of its own and reduces in wait().
  virtual std::unique_ptr<PostedRecv> post_recv_reduce(int src, uint64_t context, uint64_t tag, void* data,
                                                       size_t bytes, RecvReduction how);

  // The transport's own collectives over its whole world, or null when it has none (the default).
  virtual WorldCollectives* world_collectives() { return nullptr; }

  virtual uint64_t bytes_sent() const = 0;
  virtual uint64_t bytes_received() const = 0;
};

// Transport::post_recv's default: a recv deferred to wait().
class DeferredRecv final : public PostedRecv {
 public:
  DeferredRecv(Transport& transport, int src, uint64_t context, uint64_t tag, void* data, size_t bytes)
      : PostedRecv(bytes), transport_(transport), src_(src), context_(context), tag_(tag), data_(data) {}
  void wait(std::chrono::milliseconds timeout) override {
    transport_.recv(src_, context_, tag_, data_, bytes(), timeout);
  }

 private:
  Transport& transport_;
  int src_;
  uint64_t context_;
  uint64_t tag_;
  void* data_;
};

inline std::unique_ptr<PostedRecv> Transport::post_recv(int src, uint64_t context, uint64_t tag, void* data,
                                                        size_t bytes) {
  return std::make_unique<DeferredRecv>(*this, src, context, tag, data, bytes);
}

}  // namespace tern
