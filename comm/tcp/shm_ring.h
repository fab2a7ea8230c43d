// ShmRing: a single-producer/single-consumer byte ring in a POSIX shared-memory segment, the link
// between two ranks of one host in the tcp backend's shared-memory path (shm_transport.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "comm/tcp/shm_segment.h"

namespace tern::shm {

// Lives at the start of the mapping. Counters only grow (bytes ever written / read), so
// head - tail is the fill level and no slot is ambiguous. The two *_seq words are futex words:
// bumped after the counter they guard moves, so a sleeper can wait for "anything changed".
struct RingControl {
  uint64_t magic = 0;
  uint64_t capacity = 0;
  alignas(64) std::atomic<uint64_t> head{0};  // written by the producer
  std::atomic<uint32_t> head_seq{0};
  std::atomic<uint32_t> consumer_sleeping{0};
  alignas(64) std::atomic<uint64_t> tail{0};  // written by the consumer
  std::atomic<uint32_t> tail_seq{0};
  std::atomic<uint32_t> producer_sleeping{0};
  alignas(64) std::atomic<uint32_t> producer_closed{0};
  std::atomic<uint32_t> consumer_closed{0};
};
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "the shared-memory ring needs lock-free atomics to work across processes");

// The segment name for the ring src -> dst of one shared-memory world of a job, created by the
// receiving process creator_pid (so concurrent jobs with the same id get distinct names).
std::string ring_name(const std::string& job_id, int64_t generation, int src, int dst, long creator_pid);

// One end's mapping of a ring. Move-only; unmaps on destruction (the name is unlinked separately,
// as soon as both ends have mapped it, so a crash later leaves nothing behind in /dev/shm).
class ShmRing {
 public:
  ShmRing() = default;
  ShmRing(ShmRing&& other) noexcept;
  ShmRing& operator=(ShmRing&& other) noexcept;
  ShmRing(const ShmRing&) = delete;
  ShmRing& operator=(const ShmRing&) = delete;

  // Creates and maps a fresh segment (a stale one of the same name, left by a crash, is replaced).
  // Throws CommError naming the segment and the system's reason.
  static ShmRing create(const std::string& name, size_t capacity);
  // Maps a segment another rank created; throws CommError if it is missing or not a ring.
  static ShmRing open(const std::string& name);
  static void unlink(const std::string& name);

  bool mapped() const { return control_ != nullptr; }

  // Producer: copies up to `bytes` (at most what is free) and publishes them; returns how many.
  size_t write_some(const void* data, size_t bytes);
  // Consumer: copies up to `bytes` (at most what is filled) out and frees the space.
  size_t read_some(void* data, size_t bytes);
  // Consumer, in place: points `at` to the filled bytes that follow each other in the mapping (up
  // to the ring's end) and returns how many; consume() then frees the first `bytes` of them.
  size_t peek(const uint8_t** at) const;
  void consume(size_t bytes);
  size_t readable() const;
  // Bytes ever freed by the consumer: moves whenever anyone on this end reads.
  uint64_t consumed() const;
  // Copies up to `bytes` of the filled bytes out without freeing them; returns how many.
  size_t copy_out(void* data, size_t bytes) const;
  size_t capacity() const { return static_cast<size_t>(control_->capacity); }

  // Wait until the ring may have changed for this end (data to read / space to write, or a close),
  // or `slice` passed. Spins briefly, then sleeps on a futex: idle ranks use no CPU. A producer
  // that finds the ring full nudges the consumer (below) before it sleeps.
  void wait_readable(std::chrono::milliseconds slice);
  void wait_writable(std::chrono::milliseconds slice);

  // The consumer's futex word: it moves on every write, close and nudge. A consumer thread that
  // reads the epoch, looks at the ring, then calls wait_consumer(epoch, ...) misses nothing that
  // happened in between. With wake_on_data the producer's writes wake it (a syscall per write);
  // without, only closes, nudges and the slice do, so writes cost the producer nothing while
  // someone else (a polling recv) reads the ring.
  uint32_t consumer_epoch() const;
  void wait_consumer(uint32_t epoch, std::chrono::milliseconds slice, bool wake_on_data);
  // Moves the epoch and wakes every consumer thread waiting on it (a full ring, or a recv in this
  // process that is about to sleep and needs the ring read for it).
  void nudge_consumer();

  void close_producer();  // the consumer sees it once it has drained the ring
  void close_consumer();  // the producer's next write fails
  bool producer_closed() const;
  bool consumer_closed() const;

 private:
  Segment segment_;
  RingControl* control_ = nullptr;
  uint8_t* data_ = nullptr;
};

}  // namespace tern::shm
