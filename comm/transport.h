// Transport: byte messages between the processes (or threads) of one job, the layer under the
// collective algorithms of the local and tcp backends (gloo's Pair, in spirit).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace tern {

// Messages are matched by (source rank, context, tag) and delivered in order for each such
// triple. `context` separates communicators (the world and each split share one transport);
// `tag` separates operations within one (algorithms derive it from an operation counter, user
// send/recv tags live in their own range). Ranks here are the transport's (the world's) ranks.
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

  virtual uint64_t bytes_sent() const = 0;
  virtual uint64_t bytes_received() const = 0;
};

}  // namespace tern
