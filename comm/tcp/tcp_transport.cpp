#include "comm/tcp/tcp_transport.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#include "comm/tcp/frame.h"
#include "comm/tcp/tcp_mesh.h"

namespace tern {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using ErrorCode = boost::system::error_code;
using MailboxKey = std::pair<uint64_t, uint64_t>;  // (context, tag)

namespace {

// A message that arrived before its recv.
struct Message {
  std::unique_ptr<uint8_t[]> bytes;
  size_t size = 0;
};

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

std::string where_text(uint64_t context, uint64_t tag, size_t bytes) {
  return std::to_string(bytes) + " bytes (context " + std::to_string(context) + ", tag " +
         std::to_string(tag) + ")";
}

// Waits until fd is ready for `events` or `deadline` passes; false on timeout.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd entry{fd, events, 0};
    const int ready = ::poll(&entry, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready > 0) return true;
  }
}

}  // namespace

// The recv that is waiting for a message; the reader fills its buffer directly when the next
// frame for its mailbox has its size.
struct TcpTransport::PostedRecv {
  enum class State { waiting, filling, filled, failed };
  void* data;
  size_t bytes;
  State state = State::waiting;
};

struct TcpTransport::Peer {
  int rank = 0;
  std::unique_ptr<net::Socket> socket;  // null for this rank itself
  int fd = -1;

  std::mutex write_mu;  // one frame at a time on the wire; guards next_sequence
  uint64_t next_sequence = 1;

  std::mutex mu;  // guards everything below
  std::condition_variable arrived;
  std::map<MailboxKey, std::deque<Message>> mailboxes;
  std::map<MailboxKey, PostedRecv*> posted;
  bool dead = false;
  std::string death;  // completes "peer rank S ...", e.g. "disconnected (EOF)"

  std::thread reader;
};

TcpTransport::TcpTransport(const TcpWorld& world, Store& store, const CommOptions& options)
    : rank_(world.rank), size_(world.size), job_hash_(net::job_hash(world.job_id)), options_(options) {
  TERN_CHECK(world.size >= 1 && world.rank >= 0 && world.rank < world.size, "tcp transport: rank ",
             world.rank, " is outside a world of size ", world.size);
  TERN_CHECK(world.job_id.size() <= net::kMaxJobIdBytes, "tcp transport: job id of ", world.job_id.size(),
             " bytes is longer than ", net::kMaxJobIdBytes);
  std::vector<std::unique_ptr<net::Socket>> sockets = net::connect_mesh(io_, world, store, options.timeout);
  for (int r = 0; r < size_; ++r) {
    auto peer = std::make_unique<Peer>();
    peer->rank = r;
    peer->socket = std::move(sockets[static_cast<size_t>(r)]);
    if (peer->socket) {
      // The data path uses the descriptor directly: blocking reads (one recv with MSG_WAITALL per
      // payload) on the reader thread, non-blocking writes with our own deadline on the sender's.
      peer->socket->native_non_blocking(false);
      peer->fd = peer->socket->native_handle();
    }
    peers_.push_back(std::move(peer));
  }
  try {
    for (auto& peer : peers_) {
      if (peer->socket) peer->reader = std::thread([this, p = peer.get()] { read_frames(*p); });
    }
  } catch (...) {
    stop_readers();  // the destructor will not run: join those already started
    throw;
  }
}

TcpTransport::~TcpTransport() { stop_readers(); }

void TcpTransport::stop_readers() {
  closing_ = true;
  for (auto& peer : peers_) {
    ErrorCode ignored;
    if (peer->socket) peer->socket->shutdown(asio::socket_base::shutdown_both, ignored);
  }
  for (auto& peer : peers_) {
    if (peer->reader.joinable()) peer->reader.join();
  }
}

void TcpTransport::check_peer(int peer, const char* operation) const {
  if (peer < 0 || peer >= size_) {
    throw CommError("rank " + std::to_string(rank_) + ": " + operation + " rank " + std::to_string(peer) +
                    ", outside the world of size " + std::to_string(size_));
  }
}

CommError TcpTransport::peer_error(const Peer& peer, const char* operation, uint64_t context, uint64_t tag,
                                   size_t bytes) const {
  return CommError("rank " + std::to_string(rank_) + ": peer rank " + std::to_string(peer.rank) + " " +
                   peer.death + " during " + operation + " of " + where_text(context, tag, bytes));
}

void TcpTransport::mark_dead(Peer& peer, const std::string& death) {
  {
    std::lock_guard lock(peer.mu);
    if (!peer.dead) {
      peer.dead = true;
      peer.death = death;
    }
  }
  peer.arrived.notify_all();
  // The peer learns it too, and our reader (if it is not the caller) stops.
  ErrorCode ignored;
  if (peer.socket) peer.socket->shutdown(asio::socket_base::shutdown_both, ignored);
}

void TcpTransport::send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  check_peer(dst, "send to");
  if (bytes > options_.max_message_bytes) {
    throw CommError("rank " + std::to_string(rank_) + ": send to rank " + std::to_string(dst) + " of " +
                    where_text(context, tag, bytes) + " exceeds max_message_bytes (" +
                    std::to_string(options_.max_message_bytes) + ")");
  }
  Peer& peer = *peers_[static_cast<size_t>(dst)];
  if (!peer.socket) {  // to ourselves: straight into the mailbox
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
  net::FrameHeader header;
  header.kind = static_cast<uint16_t>(net::FrameKind::data);
  header.job_hash = job_hash_;
  header.context = context;
  header.tag = tag;
  header.sequence = peer.next_sequence++;
  header.payload_bytes = bytes;
  const net::EncodedHeader encoded = net::encode_header(header);
  const std::string error = write_frame(peer, encoded.data(), data, bytes);
  if (!error.empty()) {
    mark_dead(peer, error);
    std::lock_guard lock(peer.mu);
    throw peer_error(peer, "send", context, tag, bytes);
  }
  bytes_sent_ += bytes;
}

// Header and payload in one gathered write per call, from the caller's memory. MSG_DONTWAIT makes
// only these writes non-blocking (the reader's recv on the same descriptor keeps blocking), so a
// peer that stops reading for options.timeout fails the send instead of hanging it.
std::string TcpTransport::write_frame(Peer& peer, const void* header, const void* data, size_t bytes) {
  const size_t total = net::kFrameHeaderBytes + bytes;
  const auto* header_bytes = static_cast<const uint8_t*>(header);
  const auto* payload = static_cast<const uint8_t*>(data);
  Clock::time_point deadline = Clock::now() + options_.timeout;  // moves on with every byte written
  size_t done = 0;
  while (done < total) {
    iovec parts[2];
    int count = 0;
    if (done < net::kFrameHeaderBytes) {
      parts[count++] = {const_cast<uint8_t*>(header_bytes + done), net::kFrameHeaderBytes - done};
      if (bytes) parts[count++] = {const_cast<uint8_t*>(payload), bytes};
    } else {
      parts[count++] = {const_cast<uint8_t*>(payload + (done - net::kFrameHeaderBytes)), total - done};
    }
    msghdr message{};
    message.msg_iov = parts;
    message.msg_iovlen = static_cast<size_t>(count);
    const ssize_t sent = ::sendmsg(peer.fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0) {
      done += static_cast<size_t>(sent);
      deadline = Clock::now() + options_.timeout;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_ready(peer.fd, POLLOUT, deadline)) {
        return "stopped reading for " + ms_text(options_.timeout) +
               " (a send could not complete) and was disconnected";
      }
      continue;
    }
    return "disconnected (" + std::system_category().message(errno) + ")";
  }
  return "";
}

// "" when all bytes arrived, else why not. Blocks without a deadline: recv has its own, and the
// destructor or mark_dead shut the socket down to end the wait.
std::string TcpTransport::read_exact(Peer& peer, void* data, size_t bytes) {
  auto* out = static_cast<uint8_t*>(data);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t got = ::recv(peer.fd, out + done, bytes - done, MSG_WAITALL);
    if (got > 0) {
      done += static_cast<size_t>(got);
      continue;
    }
    if (got == 0) return closing_ ? "closed by this rank" : "EOF";
    if (errno == EINTR) continue;
    return std::system_category().message(errno);
  }
  return "";
}

void TcpTransport::read_frames(Peer& peer) {
  uint64_t expected_sequence = 1;
  net::EncodedHeader raw;
  for (;;) {
    std::string error = read_exact(peer, raw.data(), raw.size());
    if (!error.empty()) return mark_dead(peer, "disconnected (" + error + ")");
    const net::FrameHeader header = net::decode_header(raw.data());
    const std::string problem = net::frame_problem(header, net::FrameKind::data, job_hash_, expected_sequence,
                                                   options_.max_message_bytes);
    if (!problem.empty()) {
      std::cerr << "tern tcp: rank " << rank_ << " dropped its connection to rank " << peer.rank
                << " after a bad frame: " << problem << "\n";
      return mark_dead(peer, "sent a bad frame (" + problem + ") and was disconnected");
    }
    ++expected_sequence;
    const MailboxKey key{header.context, header.tag};
    const size_t bytes = header.payload_bytes;

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
    if (target) {
      error = read_exact(peer, target->data, bytes);
      {
        std::lock_guard lock(peer.mu);
        target->state = error.empty() ? PostedRecv::State::filled : PostedRecv::State::failed;
        if (!error.empty() && !peer.dead) {
          peer.dead = true;
          peer.death = "disconnected (" + error + ")";
        }
      }
      peer.arrived.notify_all();
      if (!error.empty()) return mark_dead(peer, "");  // already dead: this shuts the socket down
    } else {
      Message message;
      message.size = bytes;
      try {
        if (bytes) message.bytes.reset(new uint8_t[bytes]);
      } catch (const std::bad_alloc&) {
        return mark_dead(peer, "sent a message of " + std::to_string(bytes) +
                                   " bytes, more than this rank could "
                                   "allocate, and was disconnected");
      }
      error = read_exact(peer, message.bytes.get(), bytes);
      if (!error.empty()) return mark_dead(peer, "disconnected (" + error + ")");
      {
        std::lock_guard lock(peer.mu);
        peer.mailboxes[key].push_back(std::move(message));
      }
      peer.arrived.notify_all();
    }
    bytes_received_ += bytes;
  }
}

void TcpTransport::recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
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
          // the connection goes: the reader then gives the buffer back at once.
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
        if (!posted && peer.socket && peer.posted.find(key) == peer.posted.end()) {
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
