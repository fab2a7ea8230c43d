#include "comm/tcp/shm_ring.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
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

ShmRing::ShmRing(ShmRing&& other) noexcept
    : segment_(std::move(other.segment_)),
      control_(std::exchange(other.control_, nullptr)),
      data_(std::exchange(other.data_, nullptr)) {}

ShmRing& ShmRing::operator=(ShmRing&& other) noexcept {
  if (this != &other) {
    segment_ = std::move(other.segment_);
    control_ = std::exchange(other.control_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
  }
  return *this;
}

ShmRing ShmRing::create(const std::string& name, size_t capacity) {
  ShmRing ring;
  ring.segment_ = Segment::create(name, kControlBytes + capacity);
  ring.control_ = new (ring.segment_.base()) RingControl();
  ring.control_->capacity = capacity;
  ring.data_ = ring.segment_.base() + kControlBytes;
  // Published last: the opener checks it before trusting capacity.
  std::atomic_ref<uint64_t>(ring.control_->magic).store(kRingMagic, std::memory_order_release);
  return ring;
}

ShmRing ShmRing::open(const std::string& name) {
  ShmRing ring;
  ring.segment_ = Segment::open(name, kControlBytes + 1);
  ring.control_ = reinterpret_cast<RingControl*>(ring.segment_.base());
  ring.data_ = ring.segment_.base() + kControlBytes;
  const uint64_t magic = std::atomic_ref<uint64_t>(ring.control_->magic).load(std::memory_order_acquire);
  if (magic != kRingMagic || ring.control_->capacity + kControlBytes != ring.segment_.bytes()) {
    throw CommError("shared memory: segment " + name + " is not a ring of this version");
  }
  return ring;
}

void ShmRing::unlink(const std::string& name) { Segment::unlink(name); }

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
  const size_t n = copy_out(data, bytes);
  if (n > 0) consume(n);
  return n;
}

size_t ShmRing::copy_out(void* data, size_t bytes) const {
  const uint64_t capacity = control_->capacity;
  const uint64_t tail = control_->tail.load(std::memory_order_relaxed);
  const uint64_t head = control_->head.load(std::memory_order_acquire);
  const size_t n = std::min(bytes, static_cast<size_t>(head - tail));
  const size_t at = static_cast<size_t>(tail % capacity);
  const size_t first = std::min(n, static_cast<size_t>(capacity) - at);
  std::memcpy(data, data_ + at, first);
  if (first < n) std::memcpy(static_cast<uint8_t*>(data) + first, data_, n - first);
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

uint64_t ShmRing::consumed() const { return control_->tail.load(std::memory_order_relaxed); }

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
