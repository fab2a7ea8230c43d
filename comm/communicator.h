// Communicator: the one interface data and pipeline parallelism use to move tensors between
// ranks; backends (local threads, Open MPI, TCP, later NCCL) differ only behind it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/tensor/tensor.h"

namespace tern {

enum class ReduceOp { sum, avg, max };
const char* reduce_op_name(ReduceOp op);

// A communication failure: a peer died or never arrived, a timeout, a rejected frame. The message
// names the operation and the peer rank where one is known.
class CommError : public Error {
 public:
  using Error::Error;
};

// Handle to an operation queued on the communicator's communication thread. wait() blocks until it
// finished and rethrows its error, if any; test() says whether it finished, without blocking.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;
};
using WorkPtr = std::shared_ptr<Work>;

struct CommOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // every blocking operation
  size_t max_message_bytes = size_t{1} << 32;                  // larger frames are rejected
  // Tuning of Tern's own algorithms (local and tcp backends); 0 keeps comm/algorithms.h's default.
  size_t small_message_bytes = 0;  // allreduce below this: recursive doubling; from it: ring
  // Power-of-two worlds of 4+ ranks: allgather(v) outputs below this use recursive doubling, from
  // it the ring. -1: comm/algorithms.h's default; 0: never.
  int64_t small_gather_bytes = -1;
  size_t ring_chunk_bytes = 0;     // ring pipelining granularity
  // The ring's chunks grow with its blocks up to this (comm/algorithms.h ring_chunk_for_blocks).
  // -1: the tcp backend's rule (ring_chunk_max_for_host in comm/tcp/tcp_communicator.h), fixed
  // chunks elsewhere and whenever ring_chunk_bytes is set; 0: fixed chunks.
  int64_t ring_chunk_max_bytes = -1;
  // Power-of-two worlds of 4+ ranks: allreduces from small_message_bytes up to this use recursive
  // halving/doubling instead of the ring. -1: the tcp backend's rule (halving_doubling_for_host in
  // comm/tcp/tcp_communicator.h: up to 4 MB on a host with more ranks than cores, else never).
  int64_t halving_doubling_max_bytes = -1;
  // tcp backend (sockets and shared memory): how long a waiting recv reads the link itself
  // (yielding the core between looks) before it sleeps — over shared memory leaving the ring to
  // the reader thread, over sockets in poll() on the socket, still reading it itself (no hand-off:
  // 4 ranks on 2 cores, 1 MB 1550 -> 1293 us, 4 MB 7759 -> 6614; 2 ranks 16 MB 12.7 -> 9.9 ms,
  // medians of 5 alternated runs). Over sockets it is also how long a recv that has emptied the
  // socket in the middle of a message looks again after its last bytes before it sleeps.
  // Longer: lower latency for replies that take a while; shorter: less CPU spent waiting. 0: no
  // recv reads the link, the reader threads fill them all.
  std::chrono::microseconds poll{200};
  // Which recvs poll (the others sleep at once, as above): those of at most poll_max_bytes, and,
  // with poll_every_size, every size, over shared memory and sockets alike. A send that cannot
  // write meanwhile reads incoming messages itself, so no one waits on a reader thread. Measured
  // (bench/allreduce, medians of 3-7 alternated runs, 64 KB limit vs every size polling): 2 ranks
  // on 2 cores, shared memory 1 MB 0.23 -> 0.09 ms, 4 MB 0.94 -> 0.37, 16 MB 5.2 -> 3.3; sockets
  // 1 MB 0.33 -> 0.25, 4 MB 2.3 -> 1.5, 16 MB 11.3 -> 8.1. 4 ranks on 2 cores: shared memory
  // 256 KB 0.32 -> 0.19 ms, 1 MB 0.77-0.87 -> 0.56, 4 MB 4.9-6.3 -> 4.7-6.4, 16 MB 19.2 -> 17.8
  // (3 ranks, 1 MB: 0.54 -> 0.28); sockets (7 runs) allgather 1 MB 753 -> 658 us, 4 MB 4069 ->
  // 3500, allreduce 1 MB 1713 -> 1352, 4 MB 8958 -> 8505, and (5 runs) 256 KB 251 -> 224 and
  // 491 -> 418, 16 MB 18.3 -> 17.9 and 34.8 -> 32.6 ms; 3 and 8 ranks on 2 cores alike or better
  // from 1 MB. (Sockets with more ranks than cores once read 1 MB 1.34 -> 2.65 ms, a polling recv
  // taking the core its sender needed; since recvs read their sockets themselves, with no reader
  // thread between, that is gone.)
  size_t poll_max_bytes = size_t{64} << 10;
  bool poll_every_size = true;
  // tcp backend on shared memory: allreduces and allgather(v)s of the world communicator up to this
  // size go through one segment every rank maps (comm/tcp/shm_collectives.h: two synchronisations
  // per piece instead of the ring's 2(P-1) messages for an allreduce, one instead of P-1 for an
  // allgather); larger ones, and splits, pass messages. 0 turns it off. The allreduce won at every size measured (bench/allreduce --shm-collectives-max-bytes 0 vs
  // 1G, medians of 5 alternated runs, us): 4 ranks on 2 cores 4 KB 56 -> 16, 256 KB 289 -> 106,
  // 1 MB 1330 -> 395, 4 MB 5559 -> 3013, 16 MB 16398 -> 8489; 2 ranks 4 KB 12.7 -> 4.4, 1 MB
  // 167 -> 163, 16 MB 4062 -> 2269. Hence every size by default.
  size_t shm_collectives_max_bytes = SIZE_MAX;
  // tcp backend on sockets: each connection's send and receive buffer (SO_SNDBUF/SO_RCVBUF), so a
  // ring chunk or two fit in flight; 0 leaves the kernel's default and autotuning. Measured
  // (bench/allreduce --socket-buffer-bytes, TERN_SHM=0, medians of alternated runs on 2 busy cores):
  // at real-time priority 1-2 MB take 2-rank 256 KB allreduces from 148 to 104 us and 1 MB ones from
  // 422 to 240 us, no change from 4 MB up; at normal priority, where scheduling dominates, no
  // difference at 2 or 4 ranks.
  size_t socket_buffer_bytes = size_t{2} << 20;
  // tcp backend on sockets, while this host has a core for each of the world's ranks on it: a send
  // of at least this many bytes then reads every whole message already in from any peer, on the
  // sender's own thread (0: never). A peer's large send then finds room as soon as ours is written,
  // instead of waiting on a reader thread that must take this rank's core to drain the socket.
  // Measured (bench/allreduce over sockets, this rule on and off alternated iteration by iteration
  // in one run, 2 ranks): allgather 16 MB 1.01-1.08x faster, 64 MB 1.19-1.21x. From 256 KB on it
  // cost 6-9 % on 1-4 MB allgathers (a look at every socket after every send), and with 4 ranks on
  // 2 cores 5-8 % at 16 MB: hence 1 MB, and only with a core per rank (read_after_send_limit).
  size_t read_after_send_bytes = size_t{1} << 20;
};

// Counts of elements per rank for reduce_scatter and the default split of n elements: rank r gets
// n / size elements, plus one when r < n % size (contiguous, in rank order).
std::vector<int64_t> even_counts(int64_t n, int size);

namespace detail {
// Set on a thread while it starts an operation it will wait for at once (Communicator's blocking
// forms): a backend's CommThread then does not wake its thread for it, since the caller runs it
// itself when it is next, and a woken thread would only find it gone (a wasted wake-up, measured
// to cost sockets 4 KB allreduces 27 -> 15 us at 2 ranks, medians of 9 alternated runs).
bool& starting_blocking_call();
struct BlockingCall {
  BlockingCall() { starting_blocking_call() = true; }
  ~BlockingCall() { starting_blocking_call() = false; }
  BlockingCall(const BlockingCall&) = delete;
  BlockingCall& operator=(const BlockingCall&) = delete;
};
}  // namespace detail

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "local", "mpi", "tcp", "single"

  // Every operation below exists in two forms: *_async queues it on this communicator's
  // communication thread (operations run one at a time, in the order queued on this rank, and
  // all ranks must queue collectives in the same order), and the blocking form, which is the
  // async one followed by wait(). Tensors must stay alive and untouched until the Work finishes.
  // Supported dtypes: f32, f16, bf16, i32, i64 for reductions (f16/bf16 are summed in f32 and
  // rounded once per step; integer avg truncates toward zero), any dtype for data movement.
  // Errors are CommError.

  // In place: t becomes op over every rank's t. Same dtype and numel on every rank.
  virtual WorkPtr allreduce_async(Tensor t, ReduceOp op) = 0;
  // in has the same numel on every rank; out receives this rank's part of op(in), laid out as
  // even_counts(in.numel(), size()) says.
  virtual WorkPtr reduce_scatter_async(Tensor in, Tensor out, ReduceOp op) = 0;
  // out (size() * in.numel() elements) = every rank's in, in rank order.
  virtual WorkPtr allgather_async(Tensor in, Tensor out) = 0;
  // out (sum of counts) = every rank's in (counts[rank] elements), in rank order. Every rank
  // passes the same counts; counts may differ between ranks and may be zero.
  virtual WorkPtr allgatherv_async(Tensor in, Tensor out, std::vector<int64_t> counts) = 0;
  // t on every rank becomes root's t.
  virtual WorkPtr broadcast_async(Tensor t, int root) = 0;
  // Point to point, matched by (peer, tag) in order. tag >= 0.
  virtual WorkPtr send_async(Tensor t, int dst, int tag) = 0;
  virtual WorkPtr recv_async(Tensor t, int src, int tag) = 0;
  virtual WorkPtr barrier_async() = 0;

  // Blocking forms: the caller waits at once, so it runs the operation itself when it is next in
  // line (CommThread), without waking the communication thread.
  void allreduce(Tensor& t, ReduceOp op) {
    blocking([&] { return allreduce_async(t, op); });
  }
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
    blocking([&] { return reduce_scatter_async(in, out, op); });
  }
  void allgather(const Tensor& in, Tensor& out) {
    blocking([&] { return allgather_async(in, out); });
  }
  void allgatherv(const Tensor& in, Tensor& out, const std::vector<int64_t>& counts) {
    blocking([&] { return allgatherv_async(in, out, counts); });
  }
  void broadcast(Tensor& t, int root) {
    blocking([&] { return broadcast_async(t, root); });
  }
  void send(const Tensor& t, int dst, int tag) {
    blocking([&] { return send_async(t, dst, tag); });
  }
  void recv(Tensor& t, int src, int tag) {
    blocking([&] { return recv_async(t, src, tag); });
  }
  void barrier() {
    blocking([&] { return barrier_async(); });
  }

  // Collective over this communicator: ranks with the same color form a new communicator, ranked
  // by (key, old rank). color < 0 means "not in any group" and returns nullptr.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // Bytes this rank has sent and received through this communicator (for metrics).
  virtual uint64_t bytes_sent() const = 0;
  virtual uint64_t bytes_received() const = 0;
 private:
  template <typename Start>
  static void blocking(Start&& start) {
    WorkPtr work;
    {
      detail::BlockingCall call;
      work = start();
    }
    work->wait();
  }
};

}  // namespace tern
