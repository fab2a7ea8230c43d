#include "comm/tcp/shm_transport.h"

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <mutex>
#include <thread>
#include <utility>

#include "comm/reduce.h"
#include "comm/tcp/inbox.h"
#include "comm/tcp/shm_collectives.h"
#include "comm/tcp/shm_ring.h"
#include "comm/tcp/shm_segment.h"
#include "comm/thread_name.h"
#include "runtime/io/byte_sizes.h"

namespace tern {

using Clock = std::chrono::steady_clock;

namespace {

// How long one wait on a ring sleeps before its caller looks again at deadlines, liveness and
// shutdown; and how often a waiting receiver asks whether the peer's process still exists.
constexpr std::chrono::milliseconds kWaitSlice{20};
constexpr std::chrono::milliseconds kLivenessPeriod{100};
// How long a ring stays half full with nobody reading it before the receiver thread takes over
// (see receive_messages).
constexpr std::chrono::milliseconds kTakeOverDelay{1};

constexpr uint32_t kRecordMagic = 0x4D485354;  // "TSHM"

// What precedes each message in a ring. The magic and sequence catch a stream that lost its
// framing (which would be our bug: both ends are Tern processes of one job).
struct RecordHeader {
  uint32_t magic = kRecordMagic;
  uint32_t reserved = 0;
  uint64_t sequence = 0;
  uint64_t context = 0;
  uint64_t tag = 0;
  uint64_t bytes = 0;
  // To a cache line, so that payloads of whole cache lines (ring chunks) start aligned in the ring,
  // where reducing recvs read them in place (no difference measured on this machine).
  uint64_t padding[3] = {};
};
static_assert(sizeof(RecordHeader) == 64);

// Each payload is followed by zeros up to a multiple of this, so that every record, and with it
// every payload, starts at an offset of the ring that any element type divides: a reducing recv
// reads the payload in place as an array of its elements, which must be aligned (a 2-byte
// message used to leave every later f32 record 2 bytes off).
constexpr size_t kRecordAlign = 8;
constexpr uint8_t kRecordPadding[kRecordAlign] = {};
size_t padding_after(size_t payload_bytes) { return (kRecordAlign - payload_bytes % kRecordAlign) % kRecordAlign; }

std::string host_identity() {
  char hostname[256] = {};
  ::gethostname(hostname, sizeof(hostname) - 1);
  char ipc_namespace[128] = {};
  const ssize_t n = ::readlink("/proc/self/ns/ipc", ipc_namespace, sizeof(ipc_namespace) - 1);
  if (n < 0) ipc_namespace[0] = '\0';
  return std::string(hostname) + "|" + shm::first_line("/proc/sys/kernel/random/boot_id") + "|" + ipc_namespace;
}

std::string setup_key(const TcpWorld& world, int64_t generation, const char* what, int rank) {
  return "tern/" + world.job_id + "/shm/" + std::to_string(generation) + "/" + what + "/" +
         std::to_string(rank);
}

}  // namespace

namespace {
// A pause between two looks at a ring. sched_yield returns at once when nothing else waits for
// this core, and otherwise lets it run: the rank we wait for may be the one waiting (more ranks
// than cores, or other work on the machine). A pure spin measured 3x slower than no polling at all
// on 2 busy cores; yielding costs ~1 us of latency on idle ones.
void relax() { std::this_thread::yield(); }

}  // namespace

size_t shm_bytes_needed(int world_size, ShmSizes sizes) {
  const auto ranks = static_cast<size_t>(std::max(world_size, 1));
  constexpr size_t kPage = 4096;  // each ring's control block, the segment's header: a page at most
  const size_t rings = ranks * (ranks - 1) * (sizes.ring_bytes + kPage);
  return rings + (sizes.slot_bytes == 0 ? 0 : (ranks + 1) * sizes.slot_bytes + kPage);
}

std::optional<ShmSizes> shm_sizes_for_space(size_t free_bytes, int world_size, ShmSizes wanted) {
  ShmSizes sizes = wanted;
  while (shm_bytes_needed(world_size, sizes) > free_bytes / 2) {
    if (sizes.ring_bytes <= ShmTransport::kMinRingBytes) return std::nullopt;
    sizes.ring_bytes = std::max(sizes.ring_bytes / 2, ShmTransport::kMinRingBytes);
    if (sizes.slot_bytes != 0) sizes.slot_bytes = std::max(sizes.slot_bytes / 2, ShmTransport::kMinSlotBytes);
  }
  return sizes;
}

int ranks_on_this_host(const TcpWorld& world, Store& store, std::chrono::milliseconds timeout) {
  if (world.size == 1) return 1;
  const int64_t generation =
      store.add("tern/" + world.job_id + "/shm/host_checks_by/" + std::to_string(world.rank), 1);
  const std::string mine = host_identity();
  store.set(setup_key(world, generation, "host", world.rank), mine);
  const Clock::time_point deadline = Clock::now() + timeout;
  int here = 0;
  for (int r = 0; r < world.size; ++r) {
    const auto left =
        std::max(std::chrono::milliseconds(0),
                 std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    if (store.get(setup_key(world, generation, "host", r), left) == mine) ++here;
  }
  return here;
}

struct ShmTransport::Peer {
  // Every peer but this rank itself gets rings and a receiver thread (setup maps them all or
  // throws).
  Peer(int this_rank, int peer_rank)
      : rank(peer_rank),
        // On death both rings close, so the peer learns it too (its sends to us fail, its
        // receiver sees our end closed).
        inbox(this_rank, peer_rank, " (shared memory)", [this] { close_rings(); }) {}

  void close_rings() {
    if (out.mapped()) out.close_producer();
    if (in.mapped()) in.close_consumer();
  }

  int rank;
  pid_t pid = 0;
  shm::ShmRing out;  // this rank -> peer (we produce)
  shm::ShmRing in;   // peer -> this rank (we consume)
  std::string out_name, in_name;

  std::mutex write_mu;  // one message at a time in `out`; guards next_sequence
  uint64_t next_sequence = 1;

  // Whoever consumes `in` (the receiver thread, or a recv polling it) holds read_mu and takes whole
  // records; it guards expected_sequence.
  std::mutex read_mu;
  uint64_t expected_sequence = 1;
  // Recvs from this peer that sleep until the receiver thread hands them their message. While
  // there are none the receiver thread is not woken by the peer's writes: messages wait in the
  // ring for the recv that polls it (a full ring still wakes it, so senders never block for good).
  std::atomic<int> sleepers{0};

  Inbox inbox;
  std::thread receiver;
};

ShmTransport::ShmTransport(const TcpWorld& world, Store& store, const CommOptions& options, size_t ring_bytes)
    : rank_(world.rank), size_(world.size), options_(options) {
  TERN_CHECK(world.size >= 1 && world.rank >= 0 && world.rank < world.size, "shm transport: rank ",
             world.rank, " is outside a world of size ", world.size);
  TERN_CHECK(ring_bytes >= sizeof(RecordHeader), "shm transport: a ring of ", ring_bytes,
             " bytes is too small");
  TERN_CHECK(ring_bytes % kRecordAlign == 0, "shm transport: a ring of ", ring_bytes,
             " bytes (a multiple of ", kRecordAlign, " is needed: records stay aligned across its end)");
  for (int r = 0; r < size_; ++r) {
    peers_.push_back(std::make_unique<Peer>(rank_, r));
  }
  setup(world, store, ring_bytes);
  try {
    for (auto& peer : peers_) {
      if (peer->in.mapped()) {
        peer->receiver = std::thread([this, p = peer.get()] { receive_messages(*p); });
        name_thread(peer->receiver, "tern-shm-r" + std::to_string(peer->rank));
      }
    }
  } catch (...) {
    stop_receivers();
    throw;
  }
}

// Two rounds through the store, each publishing a status ("ok" or why not) that every rank reads:
// so either all ranks go on, or all throw ShmUnavailable together and can fall back to TCP.
void ShmTransport::setup(const TcpWorld& world, Store& store, size_t ring_bytes) {
  if (size_ == 1) return;
  const int64_t generation =
      store.add("tern/" + world.job_id + "/shm/worlds_created_by/" + std::to_string(rank_), 1);
  const Clock::time_point deadline = Clock::now() + options_.timeout;
  // The world's collectives segment: rank 0 creates it with its rings, the others map it with theirs.
  // No ring joins a rank to itself, so "ring" 0 -> 0 names it.
  auto world_name = [&](long creator_pid) { return shm::ring_name(world.job_id, generation, 0, 0, creator_pid); };
  auto unlink_incoming = [&] {
    for (auto& peer : peers_) {
      if (!peer->in_name.empty()) shm::ShmRing::unlink(peer->in_name);
    }
    if (rank_ == 0 && world_collectives_) shm::Segment::unlink(world_name(::getpid()));
  };
  auto round = [&](const char* what, const std::string& status) {
    store.set(setup_key(world, generation, what, rank_), status);
    std::string failure;
    for (int r = 0; r < size_; ++r) {
      const auto left =
          std::max(std::chrono::milliseconds(0),
                   std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
      std::string value;
      try {
        value = store.get(setup_key(world, generation, what, r), left);
      } catch (const CommError& e) {
        unlink_incoming();
        throw CommError("rank " + std::to_string(rank_) + ": shared-memory setup: rank " + std::to_string(r) +
                        " did not arrive within " + duration_text(options_.timeout) + " (" + e.what() + ")");
      }
      if (value.rfind("ok ", 0) != 0 && failure.empty()) failure = "rank " + std::to_string(r) + ": " + value;
      if (what == std::string("created") && value.rfind("ok ", 0) == 0) {
        peers_[static_cast<size_t>(r)]->pid = static_cast<pid_t>(std::stoll(value.substr(3)));
      }
    }
    if (!failure.empty()) {
      unlink_incoming();
      throw ShmUnavailable("shared-memory transport unavailable: " + failure);
    }
  };

  const bool world_segment = size_ <= kMaxWorldCollectivesRanks && options_.shm_collectives_max_bytes > 0;
  std::string status = "ok " + std::to_string(::getpid());
  try {
    const ShmSizes wanted{ring_bytes, world_segment ? ShmCollectives::kDefaultSlotBytes : 0};
    const size_t free = shm::free_bytes();
    const std::optional<ShmSizes> sizes = shm_sizes_for_space(free, size_, wanted);
    if (!sizes) {
      const ShmSizes least{std::min(ring_bytes, kMinRingBytes), wanted.slot_bytes == 0 ? 0 : kMinSlotBytes};
      throw CommError(std::string(shm::kDirectory) + " has " + format_bytes(free) + " free; " +
                      std::to_string(size_) + " ranks need at least " +
                      format_bytes(2 * shm_bytes_needed(size_, least)) +
                      " there for shared memory (a container's --shm-size sets it)");
    }
    if (rank_ == 0 && sizes->ring_bytes < ring_bytes) {
      std::cerr << "tern tcp: " << shm::kDirectory << " has " << format_bytes(free) << " free: shared-memory rings of "
                << format_bytes(sizes->ring_bytes) << " instead of " << format_bytes(ring_bytes)
                << ", which may slow large messages (a container's --shm-size sets it)\n";
    }
    if (world_segment && rank_ == 0) {
      world_collectives_ = std::make_unique<ShmCollectives>(
          ShmCollectives::create(world_name(::getpid()), size_, sizes->slot_bytes, options_.poll));
    }
    for (auto& peer : peers_) {
      if (peer->rank == rank_) continue;
      peer->in_name =
          shm::ring_name(world.job_id, generation, peer->rank, rank_, static_cast<long>(::getpid()));
      peer->in = shm::ShmRing::create(peer->in_name, sizes->ring_bytes);
    }
  } catch (const CommError& e) {
    status = e.what();
  }
  round("created", status);

  try {
    if (world_segment && rank_ != 0) {
      world_collectives_ = std::make_unique<ShmCollectives>(
          ShmCollectives::open(world_name(static_cast<long>(peers_[0]->pid)), rank_, size_, options_.poll));
    }
    for (auto& peer : peers_) {
      if (peer->rank == rank_) continue;
      // The creator's pid (from its "created" status) is in the name: two jobs on one host that
      // share a job id (tests, or a reused --job-id) must never open each other's rings.
      peer->out_name = shm::ring_name(world.job_id, generation, rank_, peer->rank, static_cast<long>(peer->pid));
      peer->out = shm::ShmRing::open(peer->out_name);
    }
  } catch (const CommError& e) {
    status = e.what();
  }
  round("mapped", status);
  unlink_incoming();  // both ends have it mapped: nothing is left in /dev/shm from here on
}

ShmTransport::~ShmTransport() { stop_receivers(); }

void ShmTransport::stop_receivers() {
  closing_ = true;
  for (auto& peer : peers_) peer->close_rings();
  for (auto& peer : peers_) {
    if (peer->receiver.joinable()) peer->receiver.join();
  }
}

void ShmTransport::send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  check_peer_rank(rank_, size_, dst, "send to");
  check_send_size(rank_, dst, context, tag, bytes, options_.max_message_bytes);
  Peer& peer = *peers_[static_cast<size_t>(dst)];
  if (!peer.out.mapped()) {  // to ourselves: straight into the mailbox
    peer.inbox.deliver(context, tag, data, bytes);
    bytes_sent_ += bytes;
    bytes_received_ += bytes;
    return;
  }
  std::lock_guard write_lock(peer.write_mu);
  // A peer that closed its end of our ring has left, even if our receiver thread has not yet seen
  // its other ring close (a small send would otherwise fit in the ring and vanish).
  if (!peer.inbox.dead() && peer.out.consumer_closed())
    peer.inbox.mark_dead(peer.inbox.death_or("closed its transport"));
  if (peer.inbox.dead()) throw peer.inbox.peer_error("send", context, tag, bytes);
  RecordHeader header;
  header.sequence = peer.next_sequence++;
  header.context = context;
  header.tag = tag;
  header.bytes = bytes;

  // Header then payload; the deadline moves on with every byte the peer takes.
  Clock::time_point deadline = Clock::now() + options_.timeout;
  Clock::time_point next_liveness = Clock::now() + kLivenessPeriod;
  auto write_all = [&](const void* from, size_t count) {
    const auto* at = static_cast<const uint8_t*>(from);
    size_t done = 0;
    while (done < count) {
      const size_t n = peer.out.write_some(at + done, count - done);
      if (n > 0) {
        done += n;
        deadline = Clock::now() + options_.timeout;
        continue;
      }
      if (take_any_record()) continue;
      std::string death;
      if (peer.out.consumer_closed() || peer.out.producer_closed()) {
        death = peer.inbox.death_or("closed its transport");
      } else if (Clock::now() >= deadline) {
        death = "stopped reading for " + duration_text(options_.timeout) + " (a send could not complete)";
      } else if (Clock::now() >= next_liveness) {
        if (!shm::process_alive(peer.pid)) death = "(process " + std::to_string(peer.pid) + ") exited";
        next_liveness = Clock::now() + kLivenessPeriod;
      }
      if (!death.empty()) {
        peer.inbox.mark_dead(death);  // a half-written message: the ring cannot be used any more
        throw peer.inbox.peer_error("send", context, tag, bytes);
      }
      peer.out.wait_writable(kWaitSlice);
    }
  };
  write_all(&header, sizeof(header));
  if (bytes) write_all(data, bytes);
  if (const size_t pad = padding_after(bytes)) write_all(kRecordPadding, pad);
  bytes_sent_ += bytes;
}

// A send that finds its ring full takes a record some peer sent this rank, if one is there. When
// every rank sends at once (a ring pass, both halves of a pairwise exchange) each waits for the
// next to read; the one that reads breaks the cycle, with no reader thread to wake.
bool ShmTransport::take_any_record() {
  for (auto& peer : peers_) {
    if (!peer->in.mapped() || peer->in.readable() < sizeof(RecordHeader)) continue;
    std::unique_lock lock(peer->read_mu, std::try_to_lock);
    if (!lock.owns_lock() || peer->inbox.dead()) continue;
    // Only a record that is all in the ring: waiting in the middle of one for bytes its sender
    // cannot write — because that sender is stuck the same way, reading ours — would deadlock.
    RecordHeader header;
    if (peer->in.copy_out(&header, sizeof(header)) < sizeof(header)) continue;
    const bool bad = header.magic != kRecordMagic || header.sequence != peer->expected_sequence;
    if (!bad && peer->in.readable() < sizeof(header) + header.bytes + padding_after(header.bytes)) continue;
    take_record(*peer, Clock::now() + options_.timeout);
    return true;
  }
  return false;
}

// Why the ring can give nothing more: "" while it may, else the peer's death. Asks whether the
// peer's process exists once per kLivenessPeriod when next_liveness is given.
std::string ShmTransport::ring_death(Peer& peer, Clock::time_point* next_liveness) {
  if (closing_) return "closed by this rank";
  if (peer.in.consumer_closed()) return peer.inbox.death_or("closed by this rank");
  if (peer.in.producer_closed() && peer.in.readable() == 0) return "closed its transport";
  if (next_liveness != nullptr && Clock::now() >= *next_liveness) {
    *next_liveness = Clock::now() + kLivenessPeriod;
    if (!shm::process_alive(peer.pid)) return "(process " + std::to_string(peer.pid) + ") exited";
  }
  return "";
}

// "" when `bytes` of a message have been taken from the ring, else why not: take(done) takes what
// it can of the rest (after the first `done`) and returns how much. A recv's deadline passing in
// the middle of the bytes ends it (the peer is then dead: the stream cannot be resynchronised).
// A template, not a std::function: it runs once per message, and the copying and reducing takers
// capture more than a std::function holds without allocating.
template <typename Take>
std::string ShmTransport::read_payload(Peer& peer, size_t bytes, Clock::time_point deadline, Take&& take) {
  size_t done = 0;
  Clock::time_point next_liveness = Clock::now() + kLivenessPeriod;
  // The rest of a message is usually being written right now: wait for it as a polling recv
  // does before sleeping on the ring (a futex wake-up per published piece costs more than the copy).
  Clock::time_point spin_until = Clock::now() + options_.poll;
  while (done < bytes) {
    const size_t n = take(done);
    if (n > 0) {
      done += n;
      spin_until = Clock::now() + options_.poll;
      continue;
    }
    if (Clock::now() < spin_until && !peer.in.producer_closed() && !peer.in.consumer_closed()) {
      relax();
      continue;
    }
    std::string death = ring_death(peer, &next_liveness);
    if (!death.empty()) {
      if (done > 0 && death == "closed its transport") death += " in the middle of a message";
      return death;
    }
    if (Clock::now() >= deadline) return "stalled in the middle of a message until a recv timed out";
    peer.in.wait_readable(kWaitSlice);
  }
  return "";
}

std::string ShmTransport::read_exact(Peer& peer, void* data, size_t bytes, Clock::time_point deadline) {
  auto* out = static_cast<uint8_t*>(data);
  return read_payload(peer, bytes, deadline, [&](size_t done) { return peer.in.read_some(out + done, bytes - done); });
}

// Reduces the payload into `data` from where it lies in the ring. An element split by the ring's
// end (or by a piece the sender has not published yet) is gathered in `split` first.
std::string ShmTransport::read_reducing(Peer& peer, void* data, size_t bytes, const RecvReduction& how,
                                        Clock::time_point deadline) {
  auto* out = static_cast<uint8_t*>(data);
  const size_t elem = dtype_size(how.dtype);
  uint8_t split[sizeof(uint64_t)];
  size_t split_bytes = 0;
  return read_payload(peer, bytes, deadline, [&](size_t done) -> size_t {
    const uint8_t* at = nullptr;
    const size_t n = std::min(peer.in.peek(&at), bytes - done);
    if (n == 0) return 0;
    if (split_bytes > 0 || n < elem) {
      const size_t k = std::min(n, elem - split_bytes);
      std::memcpy(split + split_bytes, at, k);
      peer.in.consume(k);
      split_bytes += k;
      if (split_bytes == elem) {
        reduce_into(out + done + k - elem, split, 1, how.dtype, how.op);
        split_bytes = 0;
      }
      return k;
    }
    const size_t whole = n - n % elem;
    reduce_into(out + done, at, static_cast<int64_t>(whole / elem), how.dtype, how.op);
    peer.in.consume(whole);
    return whole;
  });
}

// With read_mu held and a record's first byte in the ring: its header, checked, then its message
// into the inbox. False when the peer is now dead.
bool ShmTransport::take_record(Peer& peer, Clock::time_point deadline) {
  RecordHeader header;
  const std::string error = read_exact(peer, &header, sizeof(header), deadline);
  if (!error.empty()) {
    peer.inbox.mark_dead(error);
    return false;
  }
  if (header.magic != kRecordMagic || header.sequence != peer.expected_sequence ||
      header.bytes > options_.max_message_bytes) {
    peer.inbox.mark_dead("sent a bad record (magic " + std::to_string(header.magic) + ", sequence " +
                         std::to_string(header.sequence) + " where " + std::to_string(peer.expected_sequence) +
                         " was expected, " + std::to_string(header.bytes) + " bytes)");
    return false;
  }
  ++peer.expected_sequence;
  const size_t bytes = header.bytes;
  const Inbox::PayloadReader read = [&](void* data, size_t n) { return read_exact(peer, data, n, deadline); };
  const Inbox::PayloadReducer reduce = [&](void* data, size_t n, const RecvReduction& how) {
    return read_reducing(peer, data, n, how, deadline);
  };
  if (!peer.inbox.receive(header.context, header.tag, bytes, read, &reduce)) return false;
  if (const size_t pad = padding_after(bytes)) {
    uint8_t skipped[kRecordAlign];
    const std::string pad_error = read_exact(peer, skipped, pad, deadline);
    if (!pad_error.empty()) {
      peer.inbox.mark_dead(pad_error);
      return false;
    }
  }
  bytes_received_ += bytes;
  return true;
}

// The receiver thread: reads the ring for recvs that sleep, when the ring stays half full with
// nobody reading it (its sender waits for space while this rank computes, or sends a message of its
// own that is larger than the ring), and every kWaitSlice, when it also notices a peer that closed
// or died.
void ShmTransport::receive_messages(Peer& peer) {
  Clock::time_point next_liveness = Clock::now() + kLivenessPeriod;
  // A half-full ring that this rank's own thread is reading — a recv polling it, a send taking
  // records while it waits for space — is left to that thread for kTakeOverDelay: taking records
  // from under it moved the copy onto a second thread of the rank, and with the rank bound to one
  // core the two time-share it (2 ranks bound, 64 MB allgather over the rings, medians of 11
  // alternated runs: 13.5 ms when it took records at once, 11.6 with the delay).
  uint64_t seen_consumed = peer.in.consumed();
  Clock::time_point unmoved_since = Clock::now();
  bool taking_over = false;
  for (;;) {
    const uint32_t epoch = peer.in.consumer_epoch();
    std::chrono::milliseconds slice = kWaitSlice;
    {
      std::unique_lock lock(peer.read_mu, std::try_to_lock);  // else a polling recv is reading
      if (lock.owns_lock()) {
        if (peer.inbox.dead()) return;
        // Records are taken while a recv sleeps on this peer (its message may be behind them), or
        // while the ring stays half full (its sender may be waiting for space). Otherwise they stay
        // in the ring for the recvs that will be posted for them: taken now they would go through
        // the mailbox (an allocation and a second copy).
        auto half_full_and_left = [&] {
          if (peer.in.readable() < peer.in.capacity() / 2) return taking_over = false;
          if (taking_over) return true;
          const Clock::time_point now = Clock::now();
          if (const uint64_t consumed = peer.in.consumed(); consumed != seen_consumed) {
            seen_consumed = consumed;
            unmoved_since = now;
          }
          if (now - unmoved_since >= kTakeOverDelay) return taking_over = true;
          slice = kTakeOverDelay;  // look again then
          return false;
        };
        auto needed = [&] {
          return peer.sleepers.load(std::memory_order_seq_cst) > 0 || peer.in.producer_closed() ||
                 half_full_and_left();
        };
        bool took = false;
        while (peer.in.readable() > 0 && needed()) {
          if (!take_record(peer, Clock::time_point::max())) return;
          took = true;
        }
        seen_consumed = peer.in.consumed();  // what this thread read is not someone else reading
        if (took) {
          next_liveness = Clock::now() + kLivenessPeriod;
          continue;
        }
        const std::string death = ring_death(peer, &next_liveness);
        if (!death.empty()) return peer.inbox.mark_dead(death);
      }
    }
    peer.in.wait_consumer(epoch, slice, peer.sleepers.load(std::memory_order_seq_cst) > 0);
  }
}

// One look at the ring by a polling recv: takes the next whole record there (which may be its own:
// it lands in its buffer), or gives the core away for a moment when there is none. One record per
// look, so that a recv that has its message leaves the records behind it in the ring for the recvs
// that will be posted for them (a record taken before its recv is posted goes to the mailbox: an
// allocation and a second copy).
void ShmTransport::poll_messages(Peer& peer, Clock::time_point deadline) {
  {
    std::unique_lock lock(peer.read_mu, std::try_to_lock);
    if (lock.owns_lock() && !peer.inbox.dead()) {
      if (peer.in.readable() >= sizeof(RecordHeader)) {
        take_record(peer, deadline);
        return;
      }
      const std::string death = ring_death(peer, nullptr);
      if (!death.empty()) return peer.inbox.mark_dead(death);
    }
  }
  relax();
}

// A recv on one peer's inbox. Until it ends, it is either polling the ring in wait() (recvs of up to
// options.poll_max_bytes, every size by default) or counted among the peer's sleepers, so that the
// receiver thread reads the ring for it.
class ShmTransport::PeerRecv final : public PostedRecv {
 public:
  PeerRecv(ShmTransport& transport, Peer& peer, uint64_t context, uint64_t tag, void* data, size_t bytes,
           std::optional<RecvReduction> reduce = {})
      : PostedRecv(bytes),
        transport_(transport),
        peer_(peer),
        post_(context, tag, data, bytes, reduce),
        polls_(peer.in.mapped() && transport.options_.poll.count() > 0 &&
               bytes <= transport.options_.poll_max_bytes) {
    peer_.inbox.post(post_);
    if (peer_.in.mapped() && !polls_) sleeping_.start();
  }
  ~PeerRecv() override {
    peer_.inbox.cancel(post_, transport_.options_.timeout);  // then sleeping_ uncounts this recv
  }

  void wait(std::chrono::milliseconds timeout) override {
    struct Stop {  // the receiver thread need not wake for this recv once it has its message
      PeerRecv& recv;
      ~Stop() { recv.sleeping_.stop(); }
    } stop{*this};
    if (!polls_) return peer_.inbox.wait(post_, timeout);
    const Clock::time_point deadline = Clock::now() + timeout;
    Inbox::Poller poller{[&] { transport_.poll_messages(peer_, deadline); },
                         Clock::now() + transport_.options_.poll, [&] { sleeping_.start(); }};
    peer_.inbox.wait(post_, timeout, &poller);
  }

 private:
  ShmTransport& transport_;
  Peer& peer_;
  Inbox::Post post_;
  const bool polls_;
  // Counted among the peer's sleepers: the receiver thread, nudged, reads the ring for us.
  ReaderWaiter sleeping_{peer_.sleepers, [this] { peer_.in.nudge_consumer(); }};
};

std::unique_ptr<PostedRecv> ShmTransport::post_recv(int src, uint64_t context, uint64_t tag, void* data,
                                                    size_t bytes) {
  check_peer_rank(rank_, size_, src, "recv from");
  return std::make_unique<PeerRecv>(*this, *peers_[static_cast<size_t>(src)], context, tag, data, bytes);
}

std::unique_ptr<PostedRecv> ShmTransport::post_recv_reduce(int src, uint64_t context, uint64_t tag, void* data,
                                                           size_t bytes, RecvReduction how) {
  check_peer_rank(rank_, size_, src, "recv from");
  check_reducing_recv(bytes, how);
  return std::make_unique<PeerRecv>(*this, *peers_[static_cast<size_t>(src)], context, tag, data, bytes, how);
}

void ShmTransport::recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                        std::chrono::milliseconds timeout) {
  check_peer_rank(rank_, size_, src, "recv from");
  PeerRecv(*this, *peers_[static_cast<size_t>(src)], context, tag, data, bytes).wait(timeout);
}

}  // namespace tern
