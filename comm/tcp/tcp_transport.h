// TcpTransport: the tcp backend's byte layer, a full mesh of TCP connections between the ranks of
// one job. A reader thread per connection checks every frame and files its payload in a mailbox
// per (source, context, tag), or straight into the buffer of a recv already waiting for it.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "comm/store.h"
#include "comm/tcp/asio.h"
#include "comm/tcp/tcp_communicator.h"
#include "comm/transport.h"

namespace tern {

class TcpTransport final : public Transport {
 public:
  // Blocks until this rank is connected to every other rank of the world (see tcp_mesh.h), or
  // throws CommError by options.timeout naming the ranks that did not arrive.
  TcpTransport(const TcpWorld& world, Store& store, const CommOptions& options);
  // Closes every connection: the peers see EOF, and their recvs from this rank fail at once.
  ~TcpTransport() override;
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Writes header and payload to the socket from the caller's thread (no copy); it returns when
  // the kernel has taken the bytes. Waits only for socket space, never for the receiver's recv.
  void send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) override;
  // A recv that times out while its message is half received closes that peer's connection:
  // the rest of the message can no longer be told apart from what follows it. A recv reads the
  // socket itself while it waits (the reader thread stands aside meanwhile): one of at most
  // options.poll_max_bytes polls it for up to options.poll, yielding the core between looks, then
  // any recv sleeps in poll() on the socket — no thread hand-off per message.
  void recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
            std::chrono::milliseconds timeout) override;
  // wait() reads the socket itself, as recv does, straight into the posted buffer; until then the
  // reader thread leaves the socket alone (it reads into the buffer only while a send of ours
  // cannot write, or when recvs do not poll: options.poll = 0).
  std::unique_ptr<PostedRecv> post_recv(int src, uint64_t context, uint64_t tag, void* data,
                                        size_t bytes) override;
  // The same, reducing the message into `data` as it is read off the socket, a piece at a time.
  std::unique_ptr<PostedRecv> post_recv_reduce(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                                               RecvReduction how) override;
  // Recvs posted from now on poll the socket before sleeping on it up to this size
  // (CommOptions::poll_max_bytes):
  // make_tcp_communicator sets it once the mesh stands and it knows how many ranks share the host.
  // Call it before any recv.
  void set_poll_max_bytes(size_t bytes) { options_.poll_max_bytes = bytes; }
  // A send of at least this many bytes (0: none) then takes every whole message already in from
  // any peer (CommOptions::read_after_send_bytes, from which it starts): make_tcp_communicator
  // turns it off when this host runs more of the world's ranks than it has cores. Call it before
  // any send.
  void set_read_after_send_bytes(size_t bytes) { options_.read_after_send_bytes = bytes; }
  uint64_t bytes_sent() const override { return bytes_sent_; }
  uint64_t bytes_received() const override { return bytes_received_; }
  // The kernel's send and receive buffer sizes (SO_SNDBUF, SO_RCVBUF) of the connection to `peer`,
  // after options.socket_buffer_bytes; {0, 0} for this rank itself. For tests and diagnostics.
  std::pair<int, int> socket_buffers(int peer) const;

 private:
  struct Peer;
  class PeerRecv;

  // How long the reader thread leaves the socket to the next polling recv after one got its
  // message (a frame arriving then wakes no thread); a recv that waits for the reader ends it.
  static constexpr std::chrono::microseconds kReaderGrace{1000};

  void stop_readers();
  void read_frames(Peer& peer);
  bool take_frame(Peer& peer, std::chrono::steady_clock::time_point deadline);
  bool take_any_frame();
  bool whole_frame_readable(Peer& peer);
  void wait_writable_or_readable(Peer& to);
  void poll_frames(Peer& peer, std::chrono::steady_clock::time_point deadline, bool sleep);
  std::string read_exact(Peer& peer, void* data, size_t bytes, size_t padding,
                         std::chrono::steady_clock::time_point deadline);
  std::string write_frame(Peer& peer, const void* header, const void* data, size_t bytes);

  int rank_;
  int size_;
  uint64_t job_hash_;
  CommOptions options_;
  boost::asio::io_context io_;  // owns the sockets' services: declared before the peers
  std::vector<std::unique_ptr<Peer>> peers_;
  std::atomic<bool> closing_{false};
  std::atomic<int> stalled_sends_{0};  // sends waiting for socket space: the readers read meanwhile
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};
};

}  // namespace tern
