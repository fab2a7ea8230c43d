#include "comm/tcp/tcp_transport.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

#include "comm/tcp/frame.h"
#include "comm/tcp/inbox.h"
#include "comm/tcp/tcp_mesh.h"
#include "comm/thread_name.h"

namespace tern {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using ErrorCode = boost::system::error_code;

namespace {

// Bytes the socket holds for reading now (0 when none or on error).
size_t readable_bytes(int fd) {
  int n = 0;
  return ::ioctl(fd, FIONREAD, &n) == 0 && n > 0 ? static_cast<size_t>(n) : 0;
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

// What of `parts` (count of them, in order) is left after its first `done` bytes, into `left`;
// returns how many parts that is. Empty parts are dropped.
int parts_after(const iovec* parts, int count, size_t done, iovec* left) {
  int n = 0;
  for (int i = 0; i < count; done -= std::min(done, parts[i].iov_len), ++i) {
    if (done >= parts[i].iov_len) continue;
    left[n++] = {static_cast<uint8_t*>(parts[i].iov_base) + done, parts[i].iov_len - done};
  }
  return n;
}

}  // namespace

struct TcpTransport::Peer {
  Peer(int this_rank, int peer_rank, std::unique_ptr<net::Socket> peer_socket)
      : rank(peer_rank),
        socket(std::move(peer_socket)),
        fd(socket ? socket->native_handle() : -1),
        // On death the peer learns it too, and our reader (if it is not the caller) stops.
        inbox(this_rank, peer_rank, "", [this] { shutdown(); }) {}

  void shutdown() {
    ErrorCode ignored;
    if (socket) socket->shutdown(asio::socket_base::shutdown_both, ignored);
  }

  int rank;
  std::unique_ptr<net::Socket> socket;  // null for this rank itself
  int fd;

  std::mutex write_mu;  // one frame at a time on the wire; guards next_sequence
  uint64_t next_sequence = 1;

  // Whoever reads the socket (the reader thread, or a polling recv) holds read_mu and takes whole
  // frames; it guards expected_sequence.
  std::mutex read_mu;
  uint64_t expected_sequence = 1;
  // Recvs waiting on the socket now (polling it or sleeping in poll() on it). While there are any
  // the reader thread waits on park_cv instead of the socket: the waiting recvs read the frames.
  std::atomic<int> pollers{0};
  // Recvs that wait for the reader thread to fill them (all of them when polling is off, any
  // other only if its deadline passes). While there are none, the reader stays parked for a grace period
  // after the last poller got its message (TcpTransport::kReaderGrace), so that a recv posted soon
  // after finds the next frame in the socket instead of a reader thread woken by it.
  std::atomic<int> sleepers{0};
  // Recvs posted on this socket that will read it themselves in wait() (PeerRecv::watches_), not
  // yet waiting. The reader parks while there are any, as for pollers: their owner is sending or
  // waiting on an earlier recv and comes for the frames soon, and a reader woken for them would
  // take the core from that thread (ranks are bound to a core each) to read what it reads anyway.
  std::atomic<int> posted{0};
  std::atomic<int64_t> last_poll_end_ns{0};  // steady_clock, when a poller last got its message
  std::mutex park_mu;
  std::condition_variable park_cv;

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
    if (peer->socket && options.socket_buffer_bytes > 0) {
      // Best effort: the kernel caps the sizes at net.core.{w,r}mem_max and doubles them.
      const int bytes = static_cast<int>(std::min<size_t>(options.socket_buffer_bytes, INT32_MAX / 2));
      ::setsockopt(peer->socket->native_handle(), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
      ::setsockopt(peer->socket->native_handle(), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
    }
    peers_.push_back(std::move(peer));
  }
  try {
    for (auto& peer : peers_) {
      if (peer->socket) {
        peer->reader = std::thread([this, p = peer.get()] { read_frames(*p); });
        name_thread(peer->reader, "tern-sock-r" + std::to_string(peer->rank));
      }
    }
  } catch (...) {
    stop_readers();  // the destructor will not run: join those already started
    throw;
  }
}

TcpTransport::~TcpTransport() { stop_readers(); }

std::pair<int, int> TcpTransport::socket_buffers(int peer) const {
  check_peer_rank(rank_, size_, peer, "socket buffers of");
  const Peer& p = *peers_[static_cast<size_t>(peer)];
  if (!p.socket) return {0, 0};
  int send = 0, receive = 0;
  socklen_t length = sizeof(int);
  ::getsockopt(p.fd, SOL_SOCKET, SO_SNDBUF, &send, &length);
  length = sizeof(int);
  ::getsockopt(p.fd, SOL_SOCKET, SO_RCVBUF, &receive, &length);
  return {send, receive};
}

void TcpTransport::stop_readers() {
  closing_ = true;
  for (auto& peer : peers_) peer->shutdown();
  for (auto& peer : peers_) {
    std::lock_guard park(peer->park_mu);
    peer->park_cv.notify_all();
  }
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
  {
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
  // What came in meanwhile, read now by this thread: the peers' sockets stay drained, so their
  // large sends flow while ours do, without a reader thread taking this rank's core.
  if (options_.read_after_send_bytes != 0 && bytes >= options_.read_after_send_bytes) {
    while (take_any_frame()) {
    }
  }
}

// Header, payload and padding in one gathered write per call, from the caller's memory. MSG_DONTWAIT
// makes only these writes non-blocking (the reader's recv on the same descriptor keeps blocking), so a
// peer that stops reading for options.timeout fails the send instead of hanging it.
std::string TcpTransport::write_frame(Peer& peer, const void* header, const void* data, size_t bytes) {
  const iovec frame[3] = {{const_cast<void*>(header), net::kFrameHeaderBytes},
                          {const_cast<void*>(data), bytes},
                          {const_cast<uint8_t*>(net::kFramePadding), net::frame_padding(bytes)}};
  const size_t total = net::kFrameHeaderBytes + bytes + net::frame_padding(bytes);
  Clock::time_point deadline = Clock::now() + options_.timeout;  // moves on with every byte written
  size_t done = 0;
  // Once the socket is full, every reader thread reads (none waits out its grace period): the
  // peer may be stuck sending to us the same way.
  struct Stalled {
    TcpTransport& transport;
    explicit Stalled(TcpTransport& t) : transport(t) {
      transport.stalled_sends_.fetch_add(1, std::memory_order_acq_rel);
      for (auto& peer : transport.peers_) {
        std::lock_guard park(peer->park_mu);
        peer->park_cv.notify_all();
      }
    }
    ~Stalled() { transport.stalled_sends_.fetch_sub(1, std::memory_order_acq_rel); }
  };
  std::optional<Stalled> stalled;
  while (done < total) {
    iovec parts[3];
    msghdr message{};
    message.msg_iov = parts;
    message.msg_iovlen = static_cast<size_t>(parts_after(frame, 3, done, parts));
    const ssize_t sent = ::sendmsg(peer.fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0) {
      done += static_cast<size_t>(sent);
      deadline = Clock::now() + options_.timeout;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (take_any_frame()) continue;
      if (!stalled) stalled.emplace(*this);
      if (Clock::now() >= deadline) {
        return "stopped reading for " + duration_text(options_.timeout) +
               " (a send could not complete) and was disconnected";
      }
      wait_writable_or_readable(peer);
      continue;
    }
    return "disconnected (" + std::system_category().message(errno) + ")";
  }
  return "";
}

// A send that cannot write takes a frame some peer sent this rank, once one's header has come (as
// the shared-memory transport does): when every rank sends at once, each waits for the next to
// read, and the one that reads breaks the cycle without waiting on a reader thread.
bool TcpTransport::take_any_frame() {
  for (auto& peer : peers_) {
    if (!peer->socket || readable_bytes(peer->fd) < net::kFrameHeaderBytes) continue;
    std::unique_lock lock(peer->read_mu, std::try_to_lock);
    if (!lock.owns_lock() || peer->inbox.dead() || !whole_frame_readable(*peer)) continue;
    take_frame(*peer, Clock::now() + options_.timeout);
    return true;
  }
  return false;
}

// Whether the next frame is all in the socket (or is bad: take_frame rejects it without reading
// on). A send that cannot write takes only such frames: waiting in the middle of one for bytes its
// sender cannot write — because that sender is stuck the same way, reading ours — would deadlock.
bool TcpTransport::whole_frame_readable(Peer& peer) {
  net::EncodedHeader raw;
  const ssize_t got = ::recv(peer.fd, raw.data(), raw.size(), MSG_PEEK | MSG_DONTWAIT);
  if (got != static_cast<ssize_t>(raw.size())) return false;
  const net::FrameHeader header = net::decode_header(raw.data());
  if (!net::frame_problem(header, net::FrameKind::data, job_hash_, peer.expected_sequence,
                          options_.max_message_bytes).empty())
    return true;
  return readable_bytes(peer.fd) >=
         net::kFrameHeaderBytes + header.payload_bytes + net::frame_padding(header.payload_bytes);
}

// Sleeps until `to` can take more bytes or any peer's socket has bytes to read, for at most a
// millisecond (a frame may be read by another thread of ours meanwhile: then look again soon).
void TcpTransport::wait_writable_or_readable(Peer& to) {
  thread_local std::vector<pollfd> entries;  // reused: a large send waits here many times
  entries.assign(1, pollfd{to.fd, POLLOUT, 0});
  for (auto& peer : peers_) {
    if (peer->socket) entries.push_back({peer->fd, POLLIN, 0});
  }
  if (::poll(entries.data(), entries.size(), 1) > 0 && (entries[0].revents & POLLOUT) == 0) std::this_thread::yield();
}

// "" when all bytes arrived (and the `padding` bytes after them, read in the same calls and
// dropped), else why not. The reader thread passes no deadline and blocks in
// recv (the destructor or mark_dead shut the socket down to end the wait); a polling recv passes
// its own, so a sender stalled in the middle of a frame fails it instead of hanging it.
//
// A polling recv that has emptied the socket in the middle of a frame looks again, yielding the
// core, for options.poll after the last bytes came before it sleeps in poll(): the rest is on its
// way, and a sleeping recv is woken for every packet that lands (and, on a shared core, only once
// the sender is descheduled). Measured against sleeping at once (bench/allreduce over sockets,
// medians of 7-15 alternated runs): 4 ranks on 2 cores, 4 MB allgather 3274 -> 3088, 3148 -> 3059
// and 3479 -> 3299 us in three sets; 2 ranks unchanged (allgather 4 / 16 MB 792 -> 733 /
// 5083 -> 5049 us, allreduce 16 MB 10.8 -> 10.8 ms).
std::string TcpTransport::read_exact(Peer& peer, void* data, size_t bytes, size_t padding,
                                     Clock::time_point deadline) {
  const bool blocking = deadline == Clock::time_point::max();
  uint8_t dropped[net::kFrameAlign];  // the padding lands here (frame_padding is below kFrameAlign)
  const iovec whole[2] = {{data, bytes}, {dropped, std::min(padding, sizeof(dropped))}};
  const size_t total = bytes + whole[1].iov_len;
  size_t done = 0;
  Clock::time_point look_until = blocking ? Clock::time_point() : Clock::now() + options_.poll;
  while (done < total) {
    iovec parts[2];
    msghdr message{};
    message.msg_iov = parts;
    message.msg_iovlen = static_cast<size_t>(parts_after(whole, 2, done, parts));
    const ssize_t got = ::recvmsg(peer.fd, &message, blocking ? MSG_WAITALL : MSG_DONTWAIT);
    if (got > 0) {
      done += static_cast<size_t>(got);
      if (!blocking) look_until = Clock::now() + options_.poll;
      continue;
    }
    if (got == 0) return closing_ ? "closed by this rank" : "EOF";
    if (errno == EINTR) continue;
    if (!blocking && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (Clock::now() < look_until) {
        std::this_thread::yield();
        continue;
      }
      if (!wait_ready(peer.fd, POLLIN, deadline)) return "stalled in the middle of a message until a recv timed out";
      continue;
    }
    return std::system_category().message(errno);
  }
  return "";
}

// With read_mu held and a frame's first byte readable: the frame's header, checked, then its
// payload into the inbox. False when the peer is now dead.
bool TcpTransport::take_frame(Peer& peer, Clock::time_point deadline) {
  const auto read = [&](void* data, size_t bytes, size_t padding) {
    const std::string error = read_exact(peer, data, bytes, padding, deadline);
    return error.empty() || error.rfind("stalled", 0) == 0 ? error : "disconnected (" + error + ")";
  };
  net::EncodedHeader raw;
  const std::string error = read(raw.data(), raw.size(), 0);
  if (!error.empty()) {
    peer.inbox.mark_dead(error);
    return false;
  }
  const net::FrameHeader header = net::decode_header(raw.data());
  const std::string problem = net::frame_problem(header, net::FrameKind::data, job_hash_, peer.expected_sequence,
                                                 options_.max_message_bytes);
  if (!problem.empty()) {
    std::cerr << "tern tcp: rank " << rank_ << " dropped its connection to rank " << peer.rank
              << " after a bad frame: " << problem << "\n";
    peer.inbox.mark_dead("sent a bad frame (" + problem + ") and was disconnected");
    return false;
  }
  ++peer.expected_sequence;
  const size_t bytes = header.payload_bytes;
  // The inbox may read the payload in pieces (a reducing recv); the last one takes the zeros after
  // it in the same calls (one recvmsg for a small message, not two).
  size_t left = bytes;
  const Inbox::PayloadReader read_payload = [&](void* data, size_t n) {
    left -= std::min(n, left);
    return read(data, n, left == 0 ? net::frame_padding(bytes) : 0);
  };
  if (!peer.inbox.receive(header.context, header.tag, bytes, read_payload)) return false;  // the peer is dead
  bytes_received_ += bytes;
  return true;
}

// The reader thread: reads every frame while no recv polls the socket (so senders never wait on a
// recv that is not posted yet), and notices EOF, errors and shutdown.
void TcpTransport::read_frames(Peer& peer) {
  constexpr int kSliceMs = 20;  // how often a parked or idle reader looks at shutdown again
  // Parked while a recv waits on the socket. Else it reads at once while a recv waits for the reader
  // or a send of ours for socket space, and otherwise stays parked while recvs that will read the
  // socket themselves are posted on it (Peer::posted), and for a grace period after one got its
  // message.
  auto parked_until = [&]() -> Clock::time_point {
    if (peer.pollers.load(std::memory_order_acquire) > 0) return Clock::now() + std::chrono::milliseconds(kSliceMs);
    if (peer.sleepers.load(std::memory_order_acquire) > 0 || stalled_sends_.load(std::memory_order_acquire) > 0)
      return Clock::time_point::min();
    if (peer.posted.load(std::memory_order_acquire) > 0)
      return Clock::now() + std::chrono::milliseconds(kSliceMs);
    return Clock::time_point(Clock::duration(peer.last_poll_end_ns.load(std::memory_order_acquire))) + kReaderGrace;
  };
  for (;;) {
    for (Clock::time_point until = parked_until(); !closing_ && Clock::now() < until; until = parked_until()) {
      std::unique_lock park(peer.park_mu);
      peer.park_cv.wait_until(park, until, [&] { return closing_ || parked_until() <= Clock::now(); });
    }
    pollfd entry{peer.fd, POLLIN, 0};
    if (::poll(&entry, 1, kSliceMs) == 0) continue;
    if (peer.pollers.load(std::memory_order_acquire) > 0 || Clock::now() < parked_until())
      continue;  // a recv will read it
    std::lock_guard lock(peer.read_mu);
    if (peer.inbox.dead()) return;
    // A poller may have taken what woke us. EOF or an error still reads (and reports) at once.
    if (readable_bytes(peer.fd) == 0 && (entry.revents & (POLLHUP | POLLERR)) == 0 && !closing_) {
      char probe;
      const ssize_t got = ::recv(peer.fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    }
    if (!take_frame(peer, Clock::time_point::max())) return;
  }
}

// One look at the socket by a polling recv: takes the next frame there once its header has come
// (which may be its own: it lands in its buffer), or gives the core away for a moment when there is
// none. One frame per look, as the shared-memory transport does: the frames behind this recv's own
// wait in the socket for the recvs that will be posted for them.
void TcpTransport::poll_frames(Peer& peer, Clock::time_point deadline, bool sleep) {
  {
    std::unique_lock lock(peer.read_mu, std::try_to_lock);
    if (!lock.owns_lock()) sleep = false;  // another thread of ours is reading: look again soon
    if (lock.owns_lock() && !peer.inbox.dead()) {
      if (readable_bytes(peer.fd) >= net::kFrameHeaderBytes) {
        take_frame(peer, deadline);
        return;
      }
      // EOF or a reset: report it now (the reader thread stands aside while we poll)
      char probe;
      const ssize_t got = ::recv(peer.fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);
      if (got == 0) return peer.inbox.mark_dead(closing_ ? "disconnected (closed by this rank)" : "disconnected (EOF)");
      if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return peer.inbox.mark_dead("disconnected (" + std::system_category().message(errno) + ")");
    }
  }
  if (!sleep) return std::this_thread::yield();
  // Bounded: a frame may be taken by another thread of ours (a send that cannot write), and then
  // the socket never becomes readable for us.
  pollfd entry{peer.fd, POLLIN, 0};
  ::poll(&entry, 1, 1);
}

// A recv on one peer's inbox. Its wait() reads the socket itself (the reader thread stands aside
// meanwhile), polling first if it is small, then sleeping in poll() on the socket; the reader
// thread fills it only between its post and its wait, or when polling is off (options.poll = 0).
class TcpTransport::PeerRecv final : public PostedRecv {
 public:
  PeerRecv(TcpTransport& transport, Peer& peer, uint64_t context, uint64_t tag, void* data, size_t bytes,
           std::optional<RecvReduction> reduce = {})
      : PostedRecv(bytes),
        transport_(transport),
        peer_(peer),
        post_(context, tag, data, bytes, reduce),
        watches_(peer.socket && transport.options_.poll.count() > 0),
        yields_(bytes <= transport.options_.poll_max_bytes) {
    peer_.inbox.post(post_);
    if (peer_.socket && !watches_) sleeping_.start();  // the reader fills it, from now on
    if (watches_) posted_.start();
  }
  ~PeerRecv() override {
    posted_.stop();
    peer_.inbox.cancel(post_, transport_.options_.timeout);  // then sleeping_ uncounts this recv
  }

  void wait(std::chrono::milliseconds timeout) override {
    posted_.stop();  // counted among the pollers (or sleepers) from here on
    if (!watches_) return peer_.inbox.wait(post_, timeout);
    const Clock::time_point deadline = Clock::now() + timeout;
    struct Polling {  // counted from the first look until the recv sleeps or returns
      PeerRecv& recv;
      bool counted = true;
      explicit Polling(PeerRecv& r) : recv(r) { recv.peer_.pollers.fetch_add(1, std::memory_order_acq_rel); }
      void stop(bool to_sleep) {
        if (!std::exchange(counted, false)) return;
        Peer& peer = recv.peer_;
        if (!to_sleep) peer.last_poll_end_ns.store(Clock::now().time_since_epoch().count(), std::memory_order_release);
        peer.pollers.fetch_sub(1, std::memory_order_acq_rel);
        if (to_sleep) recv.sleeping_.start();  // wakes the reader thread, which reads the socket for us now
      }
      ~Polling() { stop(false); }
    } polling{*this};
    // Looks, yielding the core between looks, for options.poll (recvs up to poll_max_bytes), then
    // sleeps in poll() on the socket and reads what wakes it: never a hand-off to the reader thread.
    const Clock::time_point yield_until =
        Clock::now() + (yields_ ? transport_.options_.poll : std::chrono::microseconds(0));
    Inbox::Poller poller{[&] { transport_.poll_frames(peer_, deadline, Clock::now() >= yield_until); }, deadline,
                         [&] { polling.stop(true); }};
    peer_.inbox.wait(post_, timeout, &poller);
  }

 private:
  TcpTransport& transport_;
  Peer& peer_;
  Inbox::Post post_;
  const bool watches_;  // reads the socket itself in wait() (else the reader thread fills it)
  const bool yields_;   // looks at the socket in a loop before sleeping on it
  // Counted among the peer's posted recvs until its wait starts: the reader leaves the socket to
  // it. Nothing to wake: a parked reader looks again within its parking slice.
  ReaderWaiter posted_{peer_.posted, [] {}};
  // Counted among the peer's sleepers: the reader thread, woken from its park, reads for us.
  ReaderWaiter sleeping_{peer_.sleepers, [this] {
    std::lock_guard park(peer_.park_mu);
    peer_.park_cv.notify_all();
  }};
};

std::unique_ptr<PostedRecv> TcpTransport::post_recv(int src, uint64_t context, uint64_t tag, void* data,
                                                    size_t bytes) {
  check_peer_rank(rank_, size_, src, "recv from");
  return std::make_unique<PeerRecv>(*this, *peers_[static_cast<size_t>(src)], context, tag, data, bytes);
}

std::unique_ptr<PostedRecv> TcpTransport::post_recv_reduce(int src, uint64_t context, uint64_t tag, void* data,
                                                           size_t bytes, RecvReduction how) {
  check_peer_rank(rank_, size_, src, "recv from");
  check_reducing_recv(bytes, how);
  return std::make_unique<PeerRecv>(*this, *peers_[static_cast<size_t>(src)], context, tag, data, bytes, how);
}

void TcpTransport::recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                        std::chrono::milliseconds timeout) {
  check_peer_rank(rank_, size_, src, "recv from");
  PeerRecv(*this, *peers_[static_cast<size_t>(src)], context, tag, data, bytes).wait(timeout);
}

}  // namespace tern
