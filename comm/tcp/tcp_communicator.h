// The tcp backend: ranks started by ternrun (or anything that sets the same environment) connect
// to each other over TCP (Boost.Asio) after a rendezvous through the store.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/store.h"

namespace tern {

struct TcpWorld {
  int rank = 0;
  int size = 1;
  std::string job_id;         // frames from another job are rejected
  std::string listen_host = "127.0.0.1";
};

// From TERN_RANK, TERN_WORLD_SIZE, TERN_STORE_ADDR, TERN_JOB_ID; a missing or malformed variable
// is an Error naming it.
std::unique_ptr<Communicator> make_tcp_communicator_from_env(const CommOptions& options = {});
// The largest recv that polls the link (shared memory or sockets): every size when
// options.poll_every_size, else options.poll_max_bytes.
size_t polled_recv_limit(const CommOptions& options);
// The smallest send over sockets after which the sender reads what came in: options.
// read_after_send_bytes while the host runs at most `cores` of the world's ranks, else 0 (never):
// with ranks sharing a core the reading held up a peer waiting for it (4 ranks on 2 cores, 16 MB
// allgather and allreduce 5-8 % slower).
size_t read_after_send_limit(const CommOptions& options, int ranks_here, int cores);
// The ring's chunk on a host with `cores` cores running `ranks_here` of the world's ranks:
// options.ring_chunk_bytes when set (0 keeps comm/algorithms.h's 256 KB), else 256 KB with a core
// per rank and kOversubscribedRingChunkBytes with more ranks than cores, where every chunk costs a
// context switch (its sender and its receiver take turns on a core) and fewer, larger ones win; with a core per rank the
// smaller ones pipeline better. Measured (bench/allreduce --ring-chunk-bytes, medians of 5-7
// alternated runs): 4 ranks on 2 cores, sockets 4 MB 7.7-8.0 -> 5.8-6.3 ms, 16 MB 34.5 -> 33.3 ms,
// shared memory 4 MB 4.6 -> 4.1 ms, 16 MB 15.2 -> 14.6 ms; 2 ranks, sockets 16 MB 8.2 -> 13.1 ms
// (measured when this rule went in; the chunks that grow with the blocks are 1 MB at 16 MB too,
// and against 256 KB they now win there: ring_chunk_max_for_host).
constexpr size_t kOversubscribedRingChunkBytes = size_t{1} << 20;
size_t ring_chunk_for_host(const CommOptions& options, int ranks_here, int cores);
// Up to which size the ring's chunks grow with its blocks (a quarter of a block, from the chunk
// above): options.ring_chunk_max_bytes when set (>= 0), else fixed chunks when
// options.ring_chunk_bytes is set or with more ranks than cores, and kRingChunkMaxBytes with a core
// per rank, where the ranks run side by side and each message's own cost (a header, a syscall or
// a ring record, a posted recv) is what larger chunks save. Measured (bench/allreduce
// --ring-chunk-max-bytes 0 against the rule, 2 ranks under ternrun, sockets, medians of 11
// alternated runs over 1-64 MB, fixed -> growing): allreduce 4 MB 2184 -> 1835 us, 16 MB 12.4 ->
// 11.4 ms, 64 MB 50.1 -> 41.1 ms; allgather 4 MB 1358 -> 1236 us, 16 MB 8.2 -> 7.5 ms, 64 MB 32.0
// -> 29.1 ms; with the ranks bound to a core each (ternrun --bind-to auto) allreduce 4 MB 1882 ->
// 1407 us, 64 MB 37.9 -> 32.1 ms; shared-memory allgather 4 MB 300 -> 278 us. A 1 MB allreduce
// keeps 256 KB chunks: in one chunk per block it took 315 against 233 us.
constexpr size_t kRingChunkMaxBytes = size_t{1} << 20;
int64_t ring_chunk_max_for_host(const CommOptions& options, int ranks_here, int cores);
// Up to which size allreduce uses recursive halving/doubling (power-of-two worlds of 4+ ranks):
// options.halving_doubling_max_bytes when set (>= 0), else kOversubscribedHalvingDoublingBytes
// with more ranks than cores — 2 log2 P exchanges instead of the ring's 2(P-1) steps, each a
// context switch there — and 0 (the ring) with a core per rank. Measured (bench/allreduce, 4 ranks
// on 2 cores, sockets, medians of 5-9 alternated runs, ring -> halving-doubling, us): 1 MB 1413 ->
// 1088, 2 MB 3149 -> 2599, 4 MB in four runs 8605 -> 8617, 7148 -> 7505, 6570 -> 6003, 7681 ->
// 6625; 8 MB 17926 -> 18315, 16 MB 26176 -> 30121.
constexpr int64_t kOversubscribedHalvingDoublingBytes = int64_t{4} << 20;
int64_t halving_doubling_for_host(const CommOptions& options, int ranks_here, int cores);
// Explicit form (tests run ranks as threads against one store).
std::unique_ptr<Communicator> make_tcp_communicator(const TcpWorld& world, std::shared_ptr<Store> store,
                                                    const CommOptions& options = {});

}  // namespace tern
