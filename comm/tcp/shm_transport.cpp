#include "comm/tcp/shm_transport.h"

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "comm/tcp/shm_ring.h"

namespace tern {

using Clock = std::chrono::steady_clock;
using MailboxKey = std::pair<uint64_t, uint64_t>;  // (context, tag)

namespace {

// How long one wait on a ring sleeps before its caller looks again at deadlines, liveness and
// shutdown; and how often a waiting receiver asks whether the peer's process still exists.
constexpr std::chrono::milliseconds kWaitSlice{20};
constexpr std::chrono::milliseconds kLivenessPeriod{100};

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
};

struct Message {
  std::unique_ptr<uint8_t[]> bytes;
  size_t size = 0;
};

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

std::string where_text(uint64_t context, uint64_t tag, size_t bytes) {
  return std::to_string(bytes) + " bytes (context " + std::to_string(context) + ", tag " +
         std::to_string(tag) + ")";
}

std::string first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string host_identity() {
  char hostname[256] = {};
  ::gethostname(hostname, sizeof(hostname) - 1);
  char ipc_namespace[128] = {};
  const ssize_t n = ::readlink("/proc/self/ns/ipc", ipc_namespace, sizeof(ipc_namespace) - 1);
  if (n < 0) ipc_namespace[0] = '\0';
  return std::string(hostname) + "|" + first_line("/proc/sys/kernel/random/boot_id") + "|" + ipc_namespace;
}

// False once the process is gone (or a zombie: it died and its parent has not reaped it yet).
bool process_alive(pid_t pid) {
  if (pid == ::getpid()) return true;  // ranks as threads of this process
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  const std::string stat = first_line(("/proc/" + std::to_string(pid) + "/stat").c_str());
  const size_t paren = stat.rfind(')');
  if (stat.empty()) return true;  // no /proc to ask: kill() said it exists
  return !(paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z');
}

std::string setup_key(const TcpWorld& world, int64_t generation, const char* what, int rank) {
  return "tern/" + world.job_id + "/shm/" + std::to_string(generation) + "/" + what + "/" +
         std::to_string(rank);
}

}  // namespace

bool world_shares_host(const TcpWorld& world, Store& store, std::chrono::milliseconds timeout) {
  if (world.size == 1) return true;
  const int64_t generation =
      store.add("tern/" + world.job_id + "/shm/host_checks_by/" + std::to_string(world.rank), 1);
  const std::string mine = host_identity();
  store.set(setup_key(world, generation, "host", world.rank), mine);
  const Clock::time_point deadline = Clock::now() + timeout;
  bool same = true;
  for (int r = 0; r < world.size; ++r) {  // read all, so every rank waits for the same keys
    const auto left =
        std::max(std::chrono::milliseconds(0),
                 std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    if (store.get(setup_key(world, generation, "host", r), left) != mine) same = false;
  }
  return same;
}

struct ShmTransport::PostedRecv {
  enum class State { waiting, filling, filled, failed };
  void* data;
  size_t bytes;
  State state = State::waiting;
};

struct ShmTransport::Peer {
  int rank = 0;
  pid_t pid = 0;
  shm::ShmRing out;  // this rank -> peer (we produce)
  shm::ShmRing in;   // peer -> this rank (we consume)
  std::string out_name, in_name;

  std::mutex write_mu;  // one message at a time in `out`; guards next_sequence
  uint64_t next_sequence = 1;

  std::mutex mu;  // guards everything below
  std::condition_variable arrived;
  std::map<MailboxKey, std::deque<Message>> mailboxes;
  std::map<MailboxKey, PostedRecv*> posted;
  bool dead = false;
  std::string death;  // completes "peer rank S ...", e.g. "closed its transport"

  std::thread receiver;
};

ShmTransport::ShmTransport(const TcpWorld& world, Store& store, const CommOptions& options, size_t ring_bytes)
    : rank_(world.rank), size_(world.size), options_(options) {
  TERN_CHECK(world.size >= 1 && world.rank >= 0 && world.rank < world.size, "shm transport: rank ",
             world.rank, " is outside a world of size ", world.size);
  TERN_CHECK(ring_bytes >= sizeof(RecordHeader), "shm transport: a ring of ", ring_bytes,
             " bytes is too small");
  for (int r = 0; r < size_; ++r) {
    peers_.push_back(std::make_unique<Peer>());
    peers_.back()->rank = r;
  }
  setup(world, store, ring_bytes);
  try {
    for (auto& peer : peers_) {
      if (peer->in.mapped()) peer->receiver = std::thread([this, p = peer.get()] { receive_messages(*p); });
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
  auto unlink_incoming = [&] {
    for (auto& peer : peers_) {
      if (!peer->in_name.empty()) shm::ShmRing::unlink(peer->in_name);
    }
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
                        " did not arrive within " + ms_text(options_.timeout) + " (" + e.what() + ")");
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

  std::string status = "ok " + std::to_string(::getpid());
  try {
    for (auto& peer : peers_) {
      if (peer->rank == rank_) continue;
      peer->in_name = shm::ring_name(world.job_id, generation, peer->rank, rank_);
      peer->in = shm::ShmRing::create(peer->in_name, ring_bytes);
    }
  } catch (const CommError& e) {
    status = e.what();
  }
  round("created", status);

  try {
    for (auto& peer : peers_) {
      if (peer->rank == rank_) continue;
      peer->out_name = shm::ring_name(world.job_id, generation, rank_, peer->rank);
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
  for (auto& peer : peers_) {
    if (peer->out.mapped()) peer->out.close_producer();
    if (peer->in.mapped()) peer->in.close_consumer();
  }
  for (auto& peer : peers_) {
    if (peer->receiver.joinable()) peer->receiver.join();
  }
}

void ShmTransport::check_peer(int peer, const char* operation) const {
  if (peer < 0 || peer >= size_) {
    throw CommError("rank " + std::to_string(rank_) + ": " + operation + " rank " + std::to_string(peer) +
                    ", outside the world of size " + std::to_string(size_));
  }
}

CommError ShmTransport::peer_error(Peer& peer, const char* operation, uint64_t context, uint64_t tag,
                                   size_t bytes) {
  return CommError("rank " + std::to_string(rank_) + ": peer rank " + std::to_string(peer.rank) + " " +
                   peer.death + " during " + operation + " of " + where_text(context, tag, bytes) +
                   " (shared memory)");
}

// Records the first reason a peer is unusable, wakes its waiters, and closes both rings so the
// peer learns it too (its sends to us fail, its receiver sees our end closed).
void ShmTransport::mark_dead(Peer& peer, const std::string& death) {
  {
    std::lock_guard lock(peer.mu);
    if (!peer.dead) {
      peer.dead = true;
      peer.death = death;
    }
  }
  peer.arrived.notify_all();
  if (peer.out.mapped()) peer.out.close_producer();
  if (peer.in.mapped()) peer.in.close_consumer();
}

void ShmTransport::send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  check_peer(dst, "send to");
  if (bytes > options_.max_message_bytes) {
    throw CommError("rank " + std::to_string(rank_) + ": send to rank " + std::to_string(dst) + " of " +
                    where_text(context, tag, bytes) + " exceeds max_message_bytes (" +
                    std::to_string(options_.max_message_bytes) + ")");
  }
  Peer& peer = *peers_[static_cast<size_t>(dst)];
  if (!peer.out.mapped()) {  // to ourselves: straight into the mailbox
    Message message{bytes ? std::make_unique<uint8_t[]>(bytes) : nullptr, bytes};
    if (bytes) std::memcpy(message.bytes.get(), data, bytes);
    {
      std::lock_guard lock(peer.mu);
      peer.mailboxes[{context, tag}].push_back(std::move(message));
    }
    peer.arrived.notify_all();
    bytes_sent_ += bytes;
    bytes_received_ += bytes;
    return;
  }
  std::lock_guard write_lock(peer.write_mu);
  {
    std::lock_guard lock(peer.mu);
    if (peer.dead) throw peer_error(peer, "send", context, tag, bytes);
  }
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
      std::string death;
      if (peer.out.consumer_closed() || peer.out.producer_closed()) {
        std::lock_guard lock(peer.mu);
        death = peer.dead ? peer.death : "closed its transport";
      } else if (Clock::now() >= deadline) {
        death = "stopped reading for " + ms_text(options_.timeout) + " (a send could not complete)";
      } else if (Clock::now() >= next_liveness) {
        if (!process_alive(peer.pid)) death = "(process " + std::to_string(peer.pid) + ") exited";
        next_liveness = Clock::now() + kLivenessPeriod;
      }
      if (!death.empty()) {
        mark_dead(peer, death);  // a half-written message: the ring cannot be used any more
        throw peer_error(peer, "send", context, tag, bytes);
      }
      peer.out.wait_writable(kWaitSlice);
    }
  };
  write_all(&header, sizeof(header));
  if (bytes) write_all(data, bytes);
  bytes_sent_ += bytes;
}

// "" when all bytes arrived, else why not. No deadline of its own: recv has one, and marks the
// peer dead (which ends this wait) when it passes in the middle of a message.
std::string ShmTransport::read_exact(Peer& peer, void* data, size_t bytes) {
  auto* out = static_cast<uint8_t*>(data);
  size_t done = 0;
  Clock::time_point next_liveness = Clock::now() + kLivenessPeriod;
  while (done < bytes) {
    const size_t n = peer.in.read_some(out + done, bytes - done);
    if (n > 0) {
      done += n;
      continue;
    }
    if (closing_) return "closed by this rank";
    if (peer.in.consumer_closed()) {
      std::lock_guard lock(peer.mu);
      return peer.dead ? peer.death : "closed by this rank";
    }
    if (peer.in.producer_closed() && peer.in.readable() == 0) {
      return done == 0 ? "closed its transport" : "closed its transport in the middle of a message";
    }
    if (Clock::now() >= next_liveness) {
      if (!process_alive(peer.pid)) return "(process " + std::to_string(peer.pid) + ") exited";
      next_liveness = Clock::now() + kLivenessPeriod;
    }
    peer.in.wait_readable(kWaitSlice);
  }
  return "";
}

void ShmTransport::receive_messages(Peer& peer) {
  uint64_t expected_sequence = 1;
  for (;;) {
    RecordHeader header;
    std::string error = read_exact(peer, &header, sizeof(header));
    if (!error.empty()) return mark_dead(peer, error);
    if (header.magic != kRecordMagic || header.sequence != expected_sequence ||
        header.bytes > options_.max_message_bytes) {
      return mark_dead(peer, "sent a bad record (magic " + std::to_string(header.magic) + ", sequence " +
                                 std::to_string(header.sequence) + " where " +
                                 std::to_string(expected_sequence) + " was expected, " +
                                 std::to_string(header.bytes) + " bytes)");
    }
    ++expected_sequence;
    const MailboxKey key{header.context, header.tag};
    const size_t bytes = header.bytes;

    PostedRecv* target = nullptr;
    {
      std::lock_guard lock(peer.mu);
      const auto posted = peer.posted.find(key);
      const auto queued = peer.mailboxes.find(key);
      if (posted != peer.posted.end() && posted->second->bytes == bytes &&
          (queued == peer.mailboxes.end() || queued->second.empty())) {
        target = posted->second;
        target->state = PostedRecv::State::filling;
        peer.posted.erase(posted);
      }
    }
    if (target) {  // straight into the waiting recv's buffer: one copy in all
      error = read_exact(peer, target->data, bytes);
      {
        std::lock_guard lock(peer.mu);
        target->state = error.empty() ? PostedRecv::State::filled : PostedRecv::State::failed;
        if (!error.empty() && !peer.dead) {
          peer.dead = true;
          peer.death = error;
        }
      }
      peer.arrived.notify_all();
      if (!error.empty()) return mark_dead(peer, error);
    } else {
      Message message;
      message.size = bytes;
      try {
        if (bytes) message.bytes.reset(new uint8_t[bytes]);
      } catch (const std::bad_alloc&) {
        return mark_dead(peer, "sent a message of " + std::to_string(bytes) +
                                   " bytes, more than this rank could allocate");
      }
      error = read_exact(peer, message.bytes.get(), bytes);
      if (!error.empty()) return mark_dead(peer, error);
      {
        std::lock_guard lock(peer.mu);
        peer.mailboxes[key].push_back(std::move(message));
      }
      peer.arrived.notify_all();
    }
    bytes_received_ += bytes;
  }
}

void ShmTransport::recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                        std::chrono::milliseconds timeout) {
  check_peer(src, "recv from");
  Peer& peer = *peers_[static_cast<size_t>(src)];
  const MailboxKey key{context, tag};
  const Clock::time_point deadline = Clock::now() + timeout;
  PostedRecv post{data, bytes};
  bool posted = false;
  std::unique_lock lock(peer.mu);
  auto unpost = [&] {
    if (!posted) return;
    const auto it = peer.posted.find(key);
    if (it != peer.posted.end() && it->second == &post) peer.posted.erase(it);
    posted = false;
  };
  for (;;) {
    switch (post.state) {
      case PostedRecv::State::filled:
        return;
      case PostedRecv::State::failed:
        throw peer_error(peer, "recv", context, tag, bytes);
      case PostedRecv::State::filling:
        if (Clock::now() >= deadline) {
          // The sender stalled mid-message. Our buffer must be ours again before we return, so
          // the link goes: the receiver thread then gives the buffer back at once.
          lock.unlock();
          mark_dead(peer,
                    "stalled in the middle of a message for " + ms_text(timeout) + " and was disconnected");
          lock.lock();
          peer.arrived.wait(lock, [&] { return post.state != PostedRecv::State::filling; });
          continue;
        }
        break;
      case PostedRecv::State::waiting: {
        const auto queued = peer.mailboxes.find(key);
        if (queued != peer.mailboxes.end() && !queued->second.empty()) {
          Message message = std::move(queued->second.front());
          queued->second.pop_front();
          if (queued->second.empty()) peer.mailboxes.erase(queued);
          unpost();
          lock.unlock();
          if (message.size != bytes) {
            throw CommError("rank " + std::to_string(rank_) + ": recv from rank " + std::to_string(src) +
                            " (context " + std::to_string(context) + ", tag " + std::to_string(tag) +
                            ") expected " + std::to_string(bytes) + " bytes but the message has " +
                            std::to_string(message.size));
          }
          if (bytes) std::memcpy(data, message.bytes.get(), bytes);
          return;
        }
        if (peer.dead) {
          unpost();
          throw peer_error(peer, "recv", context, tag, bytes);
        }
        if (Clock::now() >= deadline) {
          unpost();
          throw CommError("rank " + std::to_string(rank_) + ": recv of " + where_text(context, tag, bytes) +
                          " from rank " + std::to_string(src) + " timed out after " + ms_text(timeout));
        }
        if (!posted && peer.in.mapped() && peer.posted.find(key) == peer.posted.end()) {
          peer.posted.emplace(key, &post);
          posted = true;
        }
        break;
      }
    }
    peer.arrived.wait_until(lock, deadline);
  }
}

}  // namespace tern
