// Helpers for the tcp backend's tests: a world of TcpTransports (or ShmTransports) as threads of this
// process over one store, and raw sockets that speak (or abuse) the wire protocol the way a stranger would.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/tcp/asio.h"
#include "comm/tcp/frame.h"
#include "comm/tcp/host_port.h"
#include "comm/tcp/shm_transport.h"
#include "comm/tcp/tcp_mesh.h"
#include "comm/tcp/tcp_transport.h"
#include "tests/support/threads.h"

namespace tern::testing {

inline CommOptions short_timeouts(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  CommOptions options;
  options.timeout = timeout;
  return options;
}

// n transports of one job, rank r at index r, each built on its own thread (construction blocks
// until the mesh is complete). The first construction error is rethrown.
inline std::vector<std::unique_ptr<TcpTransport>> make_tcp_world(
    int n, Store& store, const std::string& job_id, const CommOptions& options = short_timeouts()) {
  std::vector<std::unique_ptr<TcpTransport>> world(static_cast<size_t>(n));
  testing::run_on_threads(n, [&](int r) {
    world[static_cast<size_t>(r)] =
        std::make_unique<TcpTransport>(TcpWorld{r, n, job_id}, store, options);
  });
  return world;
}

// Small rings, so that every large message wraps around many times.
constexpr size_t kTestRingBytes = size_t{64} << 10;

// The same world over shared-memory rings.
inline std::vector<std::unique_ptr<ShmTransport>> make_shm_world(int n, Store& store, const std::string& job_id,
                                                                 const CommOptions& options = short_timeouts(),
                                                                 size_t ring_bytes = kTestRingBytes) {
  std::vector<std::unique_ptr<ShmTransport>> world(static_cast<size_t>(n));
  testing::run_on_threads(n, [&](int r) {
    world[static_cast<size_t>(r)] = std::make_unique<ShmTransport>(TcpWorld{r, n, job_id}, store, options, ring_bytes);
  });
  return world;
}

// A plain TCP connection from the test to some port, with deadlines on every wait.
class RawConnection {
 public:
  explicit RawConnection(const std::string& address) : socket_(io_) {
    const auto parsed = net::parse_host_port(address);
    if (!parsed) throw Error("bad address " + address);
    socket_.connect(net::resolve_endpoint(io_, *parsed, "test"));
  }
  void write(const void* data, size_t bytes) {
    boost::asio::write(socket_, boost::asio::buffer(data, bytes));
  }
  void write(const std::string& bytes) { write(bytes.data(), bytes.size()); }
  // Reads exactly `bytes` bytes; false if the connection ended or `timeout` passed first.
  bool read(void* data, size_t bytes, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    boost::system::error_code result = boost::asio::error::would_block;
    boost::asio::async_read(socket_, boost::asio::buffer(data, bytes),
                            [&](boost::system::error_code ec, size_t) { result = ec; });
    io_.restart();
    io_.run_for(timeout);
    if (result == boost::asio::error::would_block) {
      socket_.cancel();
      io_.restart();
      io_.run();
      return false;
    }
    return !result;
  }
  // True when the other end closes the connection within `timeout` (what a rejection looks like).
  bool closed_by_peer(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    boost::system::error_code result = boost::asio::error::would_block;
    char byte;
    boost::asio::async_read(socket_, boost::asio::buffer(&byte, 1),
                            [&](boost::system::error_code ec, size_t) { result = ec; });
    io_.restart();
    io_.run_for(timeout);
    if (result == boost::asio::error::would_block) {
      socket_.cancel();
      io_.restart();
      io_.run();
      return false;
    }
    return result == boost::asio::error::eof || result == boost::asio::error::connection_reset;
  }

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
};

inline net::FrameHeader handshake_header(const std::string& job_id, int rank, int world_size) {
  net::FrameHeader header;
  header.kind = static_cast<uint16_t>(net::FrameKind::handshake);
  header.job_hash = net::job_hash(job_id);
  header.context = static_cast<uint64_t>(world_size);
  header.tag = static_cast<uint64_t>(rank);
  header.payload_bytes = job_id.size();
  return header;
}

inline net::FrameHeader data_header(const std::string& job_id, uint64_t context, uint64_t tag,
                                    uint64_t sequence, uint64_t payload_bytes) {
  net::FrameHeader header;
  header.kind = static_cast<uint16_t>(net::FrameKind::data);
  header.job_hash = net::job_hash(job_id);
  header.context = context;
  header.tag = tag;
  header.sequence = sequence;
  header.payload_bytes = payload_bytes;
  return header;
}

// A payload as it goes on the wire: followed by zeros up to a multiple of net::kFrameAlign.
inline std::string padded(const std::string& payload) {
  return payload + std::string(net::frame_padding(payload.size()), '\0');
}

// The address rank `rank` published for the first tcp world of job_id.
inline std::string published_address(Store& store, const std::string& job_id, int rank) {
  return store.get(net::address_key(job_id, 1, rank), std::chrono::seconds(10));
}

// Plays the highest rank of a world against real transports: connects to `peer`, completes the
// handshake, then writes whatever frames the test wants, well-formed or not.
class FakePeer {
 public:
  FakePeer(Store& store, const std::string& job_id, int rank, int world_size, int peer)
      : job_id_(job_id), connection_(published_address(store, job_id, peer)) {
    const net::EncodedHeader hello = net::encode_header(handshake_header(job_id, rank, world_size));
    connection_.write(hello.data(), hello.size());
    connection_.write(padded(job_id));
    net::EncodedHeader answer;
    std::string answer_job(padded(job_id).size(), '\0');
    if (!connection_.read(answer.data(), answer.size()) ||
        !connection_.read(answer_job.data(), answer_job.size())) {
      throw Error("fake peer: no answer to its handshake");
    }
  }
  void send_frame(const net::FrameHeader& header, const std::string& payload) {
    const net::EncodedHeader encoded = net::encode_header(header);
    connection_.write(encoded.data(), encoded.size());
    // a payload cut short (the tests' torn frames) is sent as it is
    connection_.write(payload.size() == header.payload_bytes ? padded(payload) : payload);
  }
  // A well-formed data frame with the next sequence number.
  void send(uint64_t context, uint64_t tag, const std::string& payload) {
    send_frame(data_header(job_id_, context, tag, next_sequence_++, payload.size()), payload);
  }
  uint64_t next_sequence() const { return next_sequence_; }
  RawConnection& connection() { return connection_; }

 private:
  std::string job_id_;
  RawConnection connection_;
  uint64_t next_sequence_ = 1;
};

}  // namespace tern::testing
