#include "comm/tcp/shm_ring.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <system_error>
#include <utility>

#include "comm/communicator.h"
#include "comm/tcp/frame.h"

namespace tern::shm {
namespace {

constexpr uint64_t kRingMagic = 0x474E4952'4E524554;  // "TERNRING"
constexpr size_t kControlBytes = 256;                 // RingControl, padded to keep data aligned
static_assert(sizeof(RingControl) <= kControlBytes);
// A producer publishes at most this much at a time so the consumer can copy out the first piece
// while the producer copies in the next one.
constexpr size_t kPublishBytes = size_t{128} << 10;
constexpr int kSpinRounds = 200;

std::string system_reason() { return std::system_category().message(errno); }

void futex_wait(std::atomic<uint32_t>& word, uint32_t expected, std::chrono::milliseconds slice) {
  timespec relative{};
  relative.tv_sec = static_cast<time_t>(slice.count() / 1000);
  relative.tv_nsec = static_cast<long>((slice.count() % 1000) * 1000000);
  // Shared (not FUTEX_PRIVATE): the word lives in memory mapped by another process.
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, expected, &relative, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

// Bumps the futex word after the state it guards changed, and wakes a sleeper if there is one.
// Both sides use seq_cst on (sleeping, seq) so a sleeper either sees the change or is woken.
void signal(std::atomic<uint32_t>& seq, std::atomic<uint32_t>& sleeping) {
  seq.fetch_add(1, std::memory_order_seq_cst);
  if (sleeping.load(std::memory_order_seq_cst) != 0) futex_wake_all(seq);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

template <typename Ready>
void wait_until(Ready&& ready, std::atomic<uint32_t>& seq, std::atomic<uint32_t>& sleeping,
                std::chrono::milliseconds slice) {
  for (int i = 0; i < kSpinRounds; ++i) {
    if (ready()) return;
    cpu_relax();
  }
  sleeping.fetch_add(1, std::memory_order_seq_cst);
  const uint32_t seen = seq.load(std::memory_order_seq_cst);
  if (!ready()) futex_wait(seq, seen, slice);
  sleeping.fetch_sub(1, std::memory_order_seq_cst);
}

}  // namespace

std::string ring_name(const std::string& job_id, int64_t generation, int src, int dst, long creator_pid) {
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(net::job_hash(job_id)));
  return "/tern-" + std::string(hash) + "-" + std::to_string(generation) + "-" + std::to_string(src) + "-" +
         std::to_string(dst) + "-" + std::to_string(creator_pid);
}

ShmRing::~ShmRing() { release(); }

ShmRing::ShmRing(ShmRing&& other) noexcept
    : control_(std::exchange(other.control_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      mapping_bytes_(std::exchange(other.mapping_bytes_, 0)) {}

ShmRing& ShmRing::operator=(ShmRing&& other) noexcept {
  if (this != &other) {
    release();
    control_ = std::exchange(other.control_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
  }
  return *this;
}

void ShmRing::release() {
  if (control_ != nullptr) ::munmap(control_, mapping_bytes_);
  control_ = nullptr;
  data_ = nullptr;
  mapping_bytes_ = 0;
}

ShmRing ShmRing::create(const std::string& name, size_t capacity) {
  int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0 && errno == EEXIST) {  // left by a crashed job that had the same id
    ::shm_unlink(name.c_str());
    fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  }
  if (fd < 0) throw CommError("shared memory: cannot create segment " + name + ": " + system_reason());
  ShmRing ring;
  ring.mapping_bytes_ = kControlBytes + capacity;
  if (::ftruncate(fd, static_cast<off_t>(ring.mapping_bytes_)) != 0) {
    const std::string reason = system_reason();
    ::close(fd);
    ::shm_unlink(name.c_str());
    throw CommError("shared memory: cannot size segment " + name + " to " +
                    std::to_string(ring.mapping_bytes_) + " bytes: " + reason);
  }
  void* base = ::mmap(nullptr, ring.mapping_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const std::string reason = system_reason();
  ::close(fd);
  if (base == MAP_FAILED) {
    ::shm_unlink(name.c_str());
    throw CommError("shared memory: cannot map segment " + name + ": " + reason);
  }
  ring.control_ = new (base) RingControl();
  ring.control_->capacity = capacity;
  ring.data_ = static_cast<uint8_t*>(base) + kControlBytes;
  // Published last: the opener checks it before trusting capacity.
  std::atomic_ref<uint64_t>(ring.control_->magic).store(kRingMagic, std::memory_order_release);
  return ring;
}

ShmRing ShmRing::open(const std::string& name) {
  const int fd = ::shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) throw CommError("shared memory: cannot open segment " + name + ": " + system_reason());
  struct stat info {};
  if (::fstat(fd, &info) != 0 || static_cast<size_t>(info.st_size) <= kControlBytes) {
    ::close(fd);
    throw CommError("shared memory: segment " + name + " is not a ring (too small)");
  }
  ShmRing ring;
  ring.mapping_bytes_ = static_cast<size_t>(info.st_size);
  void* base = ::mmap(nullptr, ring.mapping_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const std::string reason = system_reason();
  ::close(fd);
  if (base == MAP_FAILED) throw CommError("shared memory: cannot map segment " + name + ": " + reason);
  ring.control_ = static_cast<RingControl*>(base);
  ring.data_ = static_cast<uint8_t*>(base) + kControlBytes;
  const uint64_t magic = std::atomic_ref<uint64_t>(ring.control_->magic).load(std::memory_order_acquire);
  if (magic != kRingMagic || ring.control_->capacity + kControlBytes != ring.mapping_bytes_) {
    throw CommError("shared memory: segment " + name + " is not a ring of this version");
  }
  return ring;
}

void ShmRing::unlink(const std::string& name) { ::shm_unlink(name.c_str()); }

size_t ShmRing::write_some(const void* data, size_t bytes) {
  const uint64_t capacity = control_->capacity;
  const uint64_t head = control_->head.load(std::memory_order_relaxed);
  const uint64_t tail = control_->tail.load(std::memory_order_acquire);
  const size_t n = std::min({bytes, static_cast<size_t>(capacity - (head - tail)), kPublishBytes});
  if (n == 0) return 0;
  const size_t at = static_cast<size_t>(head % capacity);
  const size_t first = std::min(n, static_cast<size_t>(capacity) - at);
  std::memcpy(data_ + at, data, first);
  if (first < n) std::memcpy(data_, static_cast<const uint8_t*>(data) + first, n - first);
  control_->head.store(head + n, std::memory_order_release);
  signal(control_->head_seq, control_->consumer_sleeping);
  return n;
}

size_t ShmRing::read_some(void* data, size_t bytes) {
  const uint64_t capacity = control_->capacity;
  const uint64_t tail = control_->tail.load(std::memory_order_relaxed);
  const uint64_t head = control_->head.load(std::memory_order_acquire);
  const size_t n = std::min(bytes, static_cast<size_t>(head - tail));
  if (n == 0) return 0;
  const size_t at = static_cast<size_t>(tail % capacity);
  const size_t first = std::min(n, static_cast<size_t>(capacity) - at);
  std::memcpy(data, data_ + at, first);
  if (first < n) std::memcpy(static_cast<uint8_t*>(data) + first, data_, n - first);
  control_->tail.store(tail + n, std::memory_order_release);
  signal(control_->tail_seq, control_->producer_sleeping);
  return n;
}

size_t ShmRing::peek(const uint8_t** at) const {
  const uint64_t capacity = control_->capacity;
  const uint64_t tail = control_->tail.load(std::memory_order_relaxed);
  const uint64_t head = control_->head.load(std::memory_order_acquire);
  const size_t offset = static_cast<size_t>(tail % capacity);
  *at = data_ + offset;
  return std::min(static_cast<size_t>(head - tail), static_cast<size_t>(capacity) - offset);
}

void ShmRing::consume(size_t bytes) {
  control_->tail.store(control_->tail.load(std::memory_order_relaxed) + bytes, std::memory_order_release);
  signal(control_->tail_seq, control_->producer_sleeping);
}

size_t ShmRing::readable() const {
  return static_cast<size_t>(control_->head.load(std::memory_order_acquire) -
                             control_->tail.load(std::memory_order_relaxed));
}

void ShmRing::wait_readable(std::chrono::milliseconds slice) {
  RingControl& c = *control_;
  wait_until(
      [&] {
        return c.head.load(std::memory_order_acquire) != c.tail.load(std::memory_order_relaxed) ||
               c.producer_closed.load(std::memory_order_acquire) != 0 ||
               c.consumer_closed.load(std::memory_order_acquire) != 0;
      },
      c.head_seq, c.consumer_sleeping, slice);
}

void ShmRing::wait_writable(std::chrono::milliseconds slice) {
  RingControl& c = *control_;
  auto writable = [&] {
    return c.head.load(std::memory_order_relaxed) - c.tail.load(std::memory_order_acquire) < c.capacity ||
           c.consumer_closed.load(std::memory_order_acquire) != 0 ||
           c.producer_closed.load(std::memory_order_acquire) != 0;
  };
  for (int i = 0; i < kSpinRounds; ++i) {
    if (writable()) return;
    cpu_relax();
  }
  nudge_consumer();  // its reader may be waiting without wake_on_data: the ring must drain now
  wait_until(writable, c.tail_seq, c.producer_sleeping, slice);
}

uint32_t ShmRing::consumer_epoch() const { return control_->head_seq.load(std::memory_order_seq_cst); }

void ShmRing::wait_consumer(uint32_t epoch, std::chrono::milliseconds slice, bool wake_on_data) {
  RingControl& c = *control_;
  if (wake_on_data) c.consumer_sleeping.fetch_add(1, std::memory_order_seq_cst);
  futex_wait(c.head_seq, epoch, slice);  // returns at once if the epoch moved since it was read
  if (wake_on_data) c.consumer_sleeping.fetch_sub(1, std::memory_order_seq_cst);
}

void ShmRing::nudge_consumer() {
  control_->head_seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(control_->head_seq);
}

// A close wakes both ends: the other rank's waiter and, within this process, a thread of ours
// that may be sleeping on the same ring (the destructor stopping its receiver thread).
// Closes wake every waiter, including a consumer waiting without wake_on_data.
void ShmRing::close_producer() {
  control_->producer_closed.store(1, std::memory_order_release);
  nudge_consumer();
  signal(control_->tail_seq, control_->producer_sleeping);
}

void ShmRing::close_consumer() {
  control_->consumer_closed.store(1, std::memory_order_release);
  signal(control_->tail_seq, control_->producer_sleeping);
  nudge_consumer();
}

bool ShmRing::producer_closed() const {
  return control_->producer_closed.load(std::memory_order_acquire) != 0;
}
bool ShmRing::consumer_closed() const {
  return control_->consumer_closed.load(std::memory_order_acquire) != 0;
}

}  // namespace tern::shm
