// shm::Segment: a named POSIX shared-memory mapping that ranks of one host create, open and unlink
// by name — what the shared-memory rings and the world's allreduce segment are made of — and the
// futex and liveness helpers their waiters share.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tern::shm {

// Where POSIX shared memory lives (shm_open's files) on Linux.
inline constexpr const char* kDirectory = "/dev/shm";

// Bytes kDirectory can still give this process (SIZE_MAX when it cannot be asked).
size_t free_bytes();
// "12.0 MB free there" (or that it is unknown): for messages about kDirectory.
std::string free_text();

// One process's mapping of a segment. Move-only; unmaps on destruction. The name is unlinked
// separately, as soon as every process that needs it has mapped it, so a crash later leaves
// nothing behind in /dev/shm.
class Segment {
 public:
  Segment() = default;
  ~Segment();
  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // Creates and maps a fresh zeroed segment of `bytes`, reserved in kDirectory up front (a stale
  // one of the same name, left by a crash, is replaced). Throws CommError naming the segment and
  // the system's reason — also when kDirectory has no room for it.
  static Segment create(const std::string& name, size_t bytes);
  // Maps a segment another process created; throws CommError if it is missing or smaller than
  // `min_bytes`.
  static Segment open(const std::string& name, size_t min_bytes);
  static void unlink(const std::string& name);

  uint8_t* base() const { return base_; }
  size_t bytes() const { return bytes_; }
  bool mapped() const { return base_ != nullptr; }

 private:
  void release();

  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
};

// Sleeps while `word` holds `expected`, for at most `slice`. Shared futexes (not
// FUTEX_PRIVATE): the word lives in memory other processes map.
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected, std::chrono::milliseconds slice);
void futex_wake_all(std::atomic<uint32_t>& word);

// The first line of a text file, "" when it cannot be read (for /proc and /sys entries).
std::string first_line(const std::string& path);

// False once the process is gone (or a zombie: it died and its parent has not reaped it yet).
bool process_alive(pid_t pid);

}  // namespace tern::shm
