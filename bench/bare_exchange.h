// A bare exchange between two ranks over one loopback TCP connection: each sends n bytes while it
// receives n, with no framing and no collective around it — what bench/allreduce's `--comm bare`
// times, to set the 2-rank allgather over sockets against what the kernel's copies alone cost.
#pragma once

#include <cstddef>

#include "comm/communicator.h"

namespace tern {

class BareExchange {
 public:
  // Collective over `comm`, which must have 2 ranks on this host: rank 0 listens on an ephemeral
  // loopback port it broadcasts, rank 1 connects. Both sockets get SO_SNDBUF/SO_RCVBUF of
  // socket_buffer_bytes (0: the kernel's autotuning), as the tcp backend's do, and TCP_NODELAY.
  BareExchange(Communicator& comm, size_t socket_buffer_bytes);
  ~BareExchange();
  BareExchange(const BareExchange&) = delete;
  BareExchange& operator=(const BareExchange&) = delete;

  // Writes `bytes` from `send` while reading as many into `recv`: one thread alternating
  // non-blocking writes and reads, sleeping in poll() only when neither can go on. Throws
  // tern::Error on a failed or closed connection, or after a minute with no progress.
  void exchange(const void* send, void* recv, size_t bytes);

 private:
  int fd_ = -1;
};

}  // namespace tern
