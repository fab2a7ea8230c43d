#include "comm/tcp/shm_collectives.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <thread>
#include <utility>

#include "comm/reduce.h"
#include "comm/tcp/inbox.h"

namespace tern {

using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kWorldMagic = 0x4C52574E'52455431;  // "1TERNWRL"
constexpr size_t kLineBytes = 64;
constexpr size_t kPageBytes = 4096;
// How long one futex sleep lasts before the waiter looks at its deadline and the peers' liveness.
constexpr std::chrono::milliseconds kWaitSlice{20};
constexpr std::chrono::milliseconds kLivenessPeriod{100};

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

// The segment starts with this, then a RankLine per rank, then (page-aligned) size+1 slots.
struct ShmCollectives::Header {
  uint64_t magic = 0;
  uint64_t ranks = 0;
  uint64_t slot_bytes = 0;
  // Bumped after any rank's flags move; waiters sleep on it (a futex word) once polling is over.
  alignas(kLineBytes) std::atomic<uint32_t> bell{0};
  std::atomic<uint32_t> sleepers{0};
};

// One rank's flags, in a cache line of its own. Sequence numbers of pieces, counted alike on every
// rank: in_ready = q once its input for piece q is in its slot; out_ready = q once it is done with
// the others' slots for piece q (an allreduce: its share of the result is published; an allgather:
// it has copied every other piece out).
struct ShmCollectives::RankLine {
  alignas(kLineBytes) std::atomic<uint32_t> in_ready{0};
  std::atomic<uint32_t> out_ready{0};
  std::atomic<uint32_t> closed{0};
  std::atomic<int32_t> pid{0};
  // The call this rank's current input belongs to (ShmCollectives::Call), written before in_ready.
  std::atomic<uint64_t> call{0};
  std::atomic<uint64_t> count{0};
};

namespace {
constexpr size_t kHeaderBytes = 2 * kLineBytes;
size_t slots_offset(int ranks) {
  return round_up(kHeaderBytes + kLineBytes * static_cast<size_t>(ranks), kPageBytes);
}
// q is at or past `target` (sequence numbers wrap: compare by difference).
bool reached(uint32_t q, uint32_t target) { return static_cast<int32_t>(q - target) >= 0; }
}  // namespace

size_t ShmCollectives::segment_bytes(int ranks, size_t slot_bytes) {
  return slots_offset(ranks) + (static_cast<size_t>(ranks) + 1) * slot_bytes;
}

ShmCollectives::ShmCollectives(shm::Segment segment, int rank, std::chrono::microseconds poll)
    : segment_(std::move(segment)), rank_(rank), poll_(poll) {
  static_assert(sizeof(Header) <= kHeaderBytes && sizeof(RankLine) == kLineBytes);
  size_ = static_cast<int>(header().ranks);
  slot_bytes_ = static_cast<size_t>(header().slot_bytes);
  const uint64_t everyone = size_ == 64 ? ~uint64_t{0} : (uint64_t{1} << size_) - 1;
  others_ = everyone & ~(uint64_t{1} << rank_);
  line(rank_).pid.store(static_cast<int32_t>(::getpid()), std::memory_order_release);
}

ShmCollectives ShmCollectives::create(const std::string& name, int ranks, size_t slot_bytes,
                                            std::chrono::microseconds poll) {
  TERN_CHECK(ranks >= 1 && ranks <= 64, "shared-memory collectives: ", ranks, " ranks (at most 64)");
  slot_bytes = round_up(std::max<size_t>(slot_bytes, kPageBytes), kPageBytes);
  shm::Segment segment = shm::Segment::create(name, segment_bytes(ranks, slot_bytes));
  auto* header = new (segment.base()) Header();
  header->ranks = static_cast<uint64_t>(ranks);
  header->slot_bytes = slot_bytes;
  for (int r = 0; r < ranks; ++r) new (segment.base() + kHeaderBytes + kLineBytes * static_cast<size_t>(r)) RankLine();
  // Published last: an opener checks it before trusting the rest.
  std::atomic_ref<uint64_t>(header->magic).store(kWorldMagic, std::memory_order_release);
  return ShmCollectives(std::move(segment), 0, poll);
}

ShmCollectives ShmCollectives::open(const std::string& name, int rank, int ranks,
                                          std::chrono::microseconds poll) {
  shm::Segment segment = shm::Segment::open(name, slots_offset(ranks));
  const auto* header = reinterpret_cast<const Header*>(segment.base());
  const uint64_t magic = std::atomic_ref<const uint64_t>(header->magic).load(std::memory_order_acquire);
  if (magic != kWorldMagic || header->ranks != static_cast<uint64_t>(ranks) ||
      segment.bytes() != segment_bytes(ranks, static_cast<size_t>(header->slot_bytes))) {
    throw CommError("shared memory: segment " + name + " is not an allreduce segment of this version for " +
                    std::to_string(ranks) + " ranks");
  }
  TERN_CHECK(rank > 0 && rank < ranks, "shared-memory collectives: rank ", rank, " opens a world of ", ranks);
  return ShmCollectives(std::move(segment), rank, poll);
}

ShmCollectives::~ShmCollectives() {
  if (!segment_.mapped()) return;  // moved from
  line(rank_).closed.store(1, std::memory_order_release);
  ring_bell();
}

ShmCollectives::Header& ShmCollectives::header() const {
  return *reinterpret_cast<Header*>(segment_.base());
}
ShmCollectives::RankLine& ShmCollectives::line(int rank) const {
  return *reinterpret_cast<RankLine*>(segment_.base() + kHeaderBytes + kLineBytes * static_cast<size_t>(rank));
}
uint8_t* ShmCollectives::slot(int rank) const {
  return segment_.base() + slots_offset(size_) + static_cast<size_t>(rank) * slot_bytes_;
}

auto ShmCollectives::in_ready(uint32_t q) const {
  return [this, q](int r) { return reached(line(r).in_ready.load(std::memory_order_acquire), q); };
}
auto ShmCollectives::out_ready(uint32_t q) const {
  return [this, q](int r) { return reached(line(r).out_ready.load(std::memory_order_acquire), q); };
}

void ShmCollectives::publish(std::atomic<uint32_t>& flag, uint32_t q) const {
  flag.store(q, std::memory_order_release);
  ring_bell();
}

void ShmCollectives::ring_bell() const {
  Header& h = header();
  h.bell.fetch_add(1, std::memory_order_seq_cst);
  if (h.sleepers.load(std::memory_order_seq_cst) != 0) shm::futex_wake_all(h.bell);
}

template <typename Ready, typename Body>
void ShmCollectives::for_each_other_when(Ready&& ready, const char* stage, std::chrono::milliseconds timeout,
                                         Body&& body) {
  uint64_t pending = others_;
  while (pending != 0) {
    const int k = wait_any(pending, ready, stage, timeout);
    pending &= ~(uint64_t{1} << k);
    body(k);
  }
}

// Polls (yielding the core: on a host with fewer cores than ranks the rank we wait for needs it)
// for poll_, then sleeps on the bell in slices, checking the deadline and that the ranks it waits
// for still exist.
template <typename Ready>
int ShmCollectives::wait_any(uint64_t pending, Ready&& ready, const char* stage, std::chrono::milliseconds timeout) {
  auto find = [&]() -> int {
    for (int k = 0; k < size_; ++k) {
      if ((pending >> k & 1) != 0 && ready(k)) return k;
    }
    return -1;
  };
  const Clock::time_point start = Clock::now();
  const Clock::time_point poll_until = start + poll_;
  const Clock::time_point deadline = start + timeout;
  Clock::time_point next_liveness = start + kLivenessPeriod;
  Header& h = header();
  for (;;) {
    const int k = find();
    if (k >= 0) return k;
    const Clock::time_point now = Clock::now();
    if (now < poll_until) {
      std::this_thread::yield();
      continue;
    }
    for (int r = 0; r < size_; ++r) {
      if ((pending >> r & 1) == 0) continue;
      std::string problem;
      if (line(r).closed.load(std::memory_order_acquire) != 0) {
        problem = detail::concat(": rank ", r, " closed its transport");
      } else if (now >= next_liveness && !shm::process_alive(line(r).pid.load(std::memory_order_acquire))) {
        problem = detail::concat(": rank ", r, " (process ", line(r).pid.load(), ") exited");
      } else if (now >= deadline) {
        problem = detail::concat(" timed out after ", duration_text(timeout), " waiting for rank ", r, "'s ", stage);
      }
      if (!problem.empty()) {
        broken_ = true;
        throw CommError(detail::concat("rank ", rank_, ": shared-memory ", operation_, problem));
      }
    }
    if (now >= next_liveness) next_liveness = now + kLivenessPeriod;
    h.sleepers.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t seen = h.bell.load(std::memory_order_seq_cst);
    if (find() < 0) shm::futex_wait(h.bell, seen, kWaitSlice);
    h.sleepers.fetch_sub(1, std::memory_order_seq_cst);
  }
}

void ShmCollectives::begin_piece(uint32_t q, std::chrono::milliseconds timeout) {
  if (broken_) {
    throw CommError(detail::concat("rank ", rank_, ": shared-memory ", operation_, ": an earlier collective failed, so the ",
                                   "ranks no longer agree where they are"));
  }
  for_each_other_when(out_ready(q - 1), "previous piece", timeout, [](int) {});
}

namespace {
constexpr uint64_t kAllreduce = 1, kAllgather = 2;
uint64_t pack_call(uint64_t kind, uint64_t dtype, uint64_t op, uint64_t hash) {
  return kind | dtype << 8 | op << 16 | hash << 32;
}
}  // namespace

void ShmCollectives::publish_input(uint32_t q) {
  RankLine& mine = line(rank_);
  mine.call.store(call_.what, std::memory_order_relaxed);
  mine.count.store(call_.count, std::memory_order_relaxed);
  publish(mine.in_ready, q);  // release: a rank that sees in_ready sees the call
}

// Rank k's in_ready for this piece has been seen. k cannot have moved on to a later piece (that
// waits for this rank's out_ready), so its call is the one this piece belongs to.
void ShmCollectives::check_same_call(int k) {
  const Call theirs{line(k).call.load(std::memory_order_relaxed), line(k).count.load(std::memory_order_relaxed)};
  if (theirs.what == call_.what && theirs.count == call_.count) return;
  broken_ = true;
  throw CommError(detail::concat("rank ", rank_, ": shared-memory ", operation_, ": rank ", k, " called ",
                                 describe(theirs), " where this rank called ", describe(call_),
                                 " (every rank must call the same collectives, with the same sizes, in the same order)"));
}

std::string ShmCollectives::describe(const Call& call) const {
  const uint64_t kind = call.what & 0xff;
  if (kind == kAllreduce) {
    const auto dtype = static_cast<DType>(call.what >> 8 & 0xff);
    const auto op = static_cast<ReduceOp>(call.what >> 16 & 0xff);
    return detail::concat("allreduce(", reduce_op_name(op), ") of ", dtype_name(dtype), "[", call.count, "]");
  }
  if (kind == kAllgather) return detail::concat("allgather of ", call.count, " bytes in all");
  return "an unknown collective";
}

WorldCollectives::Moved ShmCollectives::allgatherv(const void* in, void* out, const std::vector<int64_t>& counts,
                                                   size_t elem_size, std::chrono::milliseconds timeout) {
  TERN_CHECK(static_cast<int>(counts.size()) == size_, "shared-memory allgatherv: ", counts.size(),
             " counts for ", size_, " ranks");
  operation_ = "allgather";
  Moved moved;
  std::vector<size_t> offset(counts.size() + 1, 0);
  size_t largest = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    const size_t bytes = static_cast<size_t>(counts[r]) * elem_size;
    offset[r + 1] = offset[r] + bytes;
    largest = std::max(largest, bytes);
  }
  // The counts' own hash (FNV-1a), so ranks that disagree on who gives how much are caught too.
  uint64_t hash = 1469598103934665603ull;
  for (int64_t c : counts) hash = (hash ^ static_cast<uint64_t>(c)) * 1099511628211ull;
  call_ = {pack_call(kAllgather, elem_size, 0, hash >> 32), offset.back()};
  auto* result = static_cast<uint8_t*>(out);
  const auto* mine = static_cast<const uint8_t*>(in);
  const size_t my_bytes = offset[static_cast<size_t>(rank_) + 1] - offset[static_cast<size_t>(rank_)];
  if (my_bytes > 0 && result + offset[static_cast<size_t>(rank_)] != mine)  // (in may be null when it is empty)
    std::memmove(result + offset[static_cast<size_t>(rank_)], mine, my_bytes);
  if (size_ == 1) return moved;
  // Every rank takes part in every piece, up to the largest contribution's last one.
  for (size_t at = 0; at < largest; at += slot_bytes_) {
    const uint32_t q = ++sequence_;
    begin_piece(q, timeout);
    if (at < my_bytes) std::memcpy(slot(rank_), mine + at, std::min(slot_bytes_, my_bytes - at));
    publish_input(q);
    for_each_other_when(in_ready(q), "input", timeout, [&](int k) {
      check_same_call(k);
      const size_t bytes = offset[static_cast<size_t>(k) + 1] - offset[static_cast<size_t>(k)];
      if (at >= bytes) return;
      const size_t n = std::min(slot_bytes_, bytes - at);
      std::memcpy(result + offset[static_cast<size_t>(k)] + at, slot(k), n);
      moved.received += n;
    });
    publish(line(rank_).out_ready, q);
    if (at < my_bytes) moved.sent += std::min(slot_bytes_, my_bytes - at) * static_cast<uint64_t>(size_ - 1);
  }
  return moved;
}

WorldCollectives::Moved ShmCollectives::allreduce(void* data, int64_t n, DType dtype, ReduceOp op, std::chrono::milliseconds timeout) {
  operation_ = "allreduce";
  Moved moved;
  if (broken_) begin_piece(sequence_ + 1, timeout);  // throws
  if (size_ == 1 || n <= 0) return moved;
  const size_t elem = dtype_size(dtype);
  call_ = {pack_call(kAllreduce, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op), 0), static_cast<uint64_t>(n)};
  auto* bytes = static_cast<uint8_t*>(data);
  const auto piece = static_cast<int64_t>(slot_bytes_ / elem);
  // Shares start on cache lines, so no two ranks write one line of the result slot.
  const auto align = static_cast<int64_t>(kLineBytes / elem);
  for (int64_t offset = 0; offset < n; offset += piece) {
    const int64_t m = std::min(piece, n - offset);
    uint8_t* mine = bytes + static_cast<size_t>(offset) * elem;
    const uint32_t q = ++sequence_;
    begin_piece(q, timeout);  // after an allreduce's piece a no-op: its last wait saw every rank done
    const int64_t share = (m + size_ - 1) / size_ + align - 1;
    const int64_t per = share - share % align;
    auto lo = [&](int r) { return std::min<int64_t>(m, per * r); };
    auto hi = [&](int r) { return std::min<int64_t>(m, per * (r + 1)); };

    std::memcpy(slot(rank_), mine, static_cast<size_t>(m) * elem);
    publish_input(q);

    // Our share: every rank's input summed in rank order, rank 0's first, whatever order they come
    // in — a float sum's bits depend on its order, and arrival order would make them differ from
    // run to run (a resumed training run would not continue bit for bit). Our own input is in our
    // slot too.
    const size_t share_at = static_cast<size_t>(lo(rank_)) * elem;
    const int64_t share_n = hi(rank_) - lo(rank_);
    for (int k = 0; k < size_; ++k) {
      if (k != rank_) {
        wait_any(uint64_t{1} << k, in_ready(q), "input", timeout);
        check_same_call(k);
      }
      if (share_n == 0) continue;
      if (k == 0) {
        if (rank_ != 0) std::memcpy(mine + share_at, slot(0) + share_at, static_cast<size_t>(share_n) * elem);
      } else {
        reduce_into(mine + share_at, slot(k) + share_at, share_n, dtype, op);
      }
    }
    // Every rank wrote piece q's input, so every rank finished copying piece q-1's result out:
    // the result slot is ours to write.
    std::memcpy(slot(size_) + share_at, mine + share_at, static_cast<size_t>(share_n) * elem);
    publish(line(rank_).out_ready, q);
    // Others read our input but our share, and our share of the result; we read theirs alike.
    moved.sent += static_cast<uint64_t>((m - share_n) + (size_ - 1) * share_n) * elem;
    moved.received += static_cast<uint64_t>((size_ - 1) * share_n + (m - share_n)) * elem;

    // Every other share, as each is ready.
    for_each_other_when(out_ready(q), "share of the result", timeout, [&](int k) {
      const size_t at = static_cast<size_t>(lo(k)) * elem;
      std::memcpy(mine + at, slot(size_) + at, static_cast<size_t>(hi(k) - lo(k)) * elem);
    });
  }
  return moved;
}

}  // namespace tern
