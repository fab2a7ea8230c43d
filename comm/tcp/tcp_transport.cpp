#include "comm/tcp/tcp_transport.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <iostream>
#include <mutex>
#include <system_error>
#include <thread>

#include "comm/tcp/frame.h"
#include "comm/tcp/inbox.h"
#include "comm/tcp/tcp_mesh.h"

namespace tern {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using ErrorCode = boost::system::error_code;

namespace {

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

struct TcpTransport::Peer {
  Peer(int this_rank, int peer_rank, std::unique_ptr<net::Socket> peer_socket)
      : rank(peer_rank),
        socket(std::move(peer_socket)),
        fd(socket ? socket->native_handle() : -1),
        // On death the peer learns it too, and our reader (if it is not the caller) stops.
        inbox(this_rank, peer_rank, "", socket != nullptr, [this] { shutdown(); }) {}

  void shutdown() {
    ErrorCode ignored;
    if (socket) socket->shutdown(asio::socket_base::shutdown_both, ignored);
  }

  int rank;
  std::unique_ptr<net::Socket> socket;  // null for this rank itself
  int fd;

  std::mutex write_mu;  // one frame at a time on the wire; guards next_sequence
  uint64_t next_sequence = 1;

  Inbox inbox;
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
    auto peer = std::make_unique<Peer>(rank_, r, std::move(sockets[static_cast<size_t>(r)]));
    // The data path uses the descriptor directly: blocking reads (one recv with MSG_WAITALL per
    // payload) on the reader thread, non-blocking writes with our own deadline on the sender's.
    if (peer->socket) peer->socket->native_non_blocking(false);
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
  for (auto& peer : peers_) peer->shutdown();
  for (auto& peer : peers_) {
    if (peer->reader.joinable()) peer->reader.join();
  }
}

void TcpTransport::send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  check_peer_rank(rank_, size_, dst, "send to");
  check_send_size(rank_, dst, context, tag, bytes, options_.max_message_bytes);
  Peer& peer = *peers_[static_cast<size_t>(dst)];
  if (!peer.socket) {  // to ourselves: straight into the mailbox
    peer.inbox.deliver(context, tag, data, bytes);
    bytes_sent_ += bytes;
    bytes_received_ += bytes;
    return;
  }
  std::lock_guard write_lock(peer.write_mu);
  if (peer.inbox.dead()) throw peer.inbox.peer_error("send", context, tag, bytes);
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
    peer.inbox.mark_dead(error);
    throw peer.inbox.peer_error("send", context, tag, bytes);
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
        return "stopped reading for " + duration_text(options_.timeout) +
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
  const Inbox::PayloadReader read_payload = [this, &peer](void* data, size_t bytes) {
    const std::string error = read_exact(peer, data, bytes);
    return error.empty() ? error : "disconnected (" + error + ")";
  };
  uint64_t expected_sequence = 1;
  net::EncodedHeader raw;
  for (;;) {
    const std::string error = read_payload(raw.data(), raw.size());
    if (!error.empty()) return peer.inbox.mark_dead(error);
    const net::FrameHeader header = net::decode_header(raw.data());
    const std::string problem = net::frame_problem(header, net::FrameKind::data, job_hash_, expected_sequence,
                                                   options_.max_message_bytes);
    if (!problem.empty()) {
      std::cerr << "tern tcp: rank " << rank_ << " dropped its connection to rank " << peer.rank
                << " after a bad frame: " << problem << "\n";
      return peer.inbox.mark_dead("sent a bad frame (" + problem + ") and was disconnected");
    }
    ++expected_sequence;
    const size_t bytes = header.payload_bytes;
    if (!peer.inbox.receive(header.context, header.tag, bytes, read_payload)) return;  // the peer is dead
    bytes_received_ += bytes;
  }
}

void TcpTransport::recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                        std::chrono::milliseconds timeout) {
  check_peer_rank(rank_, size_, src, "recv from");
  peers_[static_cast<size_t>(src)]->inbox.recv(context, tag, data, bytes, timeout);
}

}  // namespace tern
