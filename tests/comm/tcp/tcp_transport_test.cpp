#include "comm/tcp/tcp_transport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "comm/tcp/frame.h"
#include "comm/tcp/tcp_store.h"
#include "runtime/rng.h"
#include "tests/comm/tcp/tcp_test_support.h"
#include "tests/comm/tcp/transport_checks.h"

namespace tern {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::make_tcp_world;

constexpr milliseconds kRecvTimeout = seconds(10);

using testing::pattern;

class TcpTransportWorld : public ::testing::Test {
 protected:
  TcpStoreServer server_;
  std::shared_ptr<Store> store_ = connect_tcp_store(server_.address(), seconds(5));
};

TEST_F(TcpTransportWorld, SocketBuffersAreSetFromTheOptionsOrLeftToTheKernel) {
  auto sizes = [&](size_t bytes, const std::string& job) {
    CommOptions options = testing::short_timeouts();
    options.socket_buffer_bytes = bytes;
    auto world = make_tcp_world(2, *store_, job, options);
    EXPECT_EQ(world[0]->socket_buffers(0), std::make_pair(0, 0));  // no socket to itself
    return world[0]->socket_buffers(1);
  };
  // Linux doubles what it is given (bookkeeping overhead) and caps it at net.core.*mem_max, which
  // is at least 200 KB on any kernel; 150 KB fits under the cap everywhere.
  const auto [send, receive] = sizes(150 << 10, "buffers-set");
  EXPECT_GE(send, 150 << 10);
  EXPECT_GE(receive, 150 << 10);
  const auto [send0, receive0] = sizes(0, "buffers-default");
  EXPECT_GT(send0, 0);
  EXPECT_GT(receive0, 0);
  EXPECT_NE(std::make_pair(send0, receive0), std::make_pair(send, receive));
  EXPECT_THROW(make_tcp_world(1, *store_, "buffers-one")[0]->socket_buffers(1), CommError);
}

// Every header and payload starts at a multiple of net::kFrameAlign in the byte stream, whatever
// the sizes before it (the kernel's copies out of the socket are then aligned), and the padding
// is zeros. Read off the wire by a peer played by hand.
TEST_F(TcpTransportWorld, FramesOnTheWireAreHeaderPayloadAndZerosToTheAlignment) {
  auto rank0 = std::async(std::launch::async, [&] {
    return std::make_unique<TcpTransport>(TcpWorld{0, 2, "wire"}, *store_, testing::short_timeouts());
  });
  testing::FakePeer fake(*store_, "wire", 1, 2, 0);
  auto t0 = rank0.get();
  const std::vector<size_t> sizes = {0, 1, 7, 63, 64, 65, 130, 4099};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const auto payload = pattern(sizes[i], i);
    t0->send(1, 5, 100 + i, payload.data(), payload.size());
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    net::EncodedHeader raw;
    ASSERT_TRUE(fake.connection().read(raw.data(), raw.size())) << "frame " << i;
    const net::FrameHeader header = net::decode_header(raw.data());
    EXPECT_EQ(net::frame_problem(header, net::FrameKind::data, net::job_hash("wire"), i + 1, 1 << 20), "");
    EXPECT_EQ(header.tag, 100 + i);
    ASSERT_EQ(header.payload_bytes, sizes[i]);
    const size_t on_wire = (sizes[i] + net::kFrameAlign - 1) / net::kFrameAlign * net::kFrameAlign;
    std::vector<uint8_t> body(on_wire, 0xEE);
    ASSERT_TRUE(fake.connection().read(body.data(), body.size())) << "frame " << i;
    EXPECT_EQ(std::vector<uint8_t>(body.begin(), body.begin() + static_cast<ptrdiff_t>(sizes[i])),
              pattern(sizes[i], i));
    EXPECT_TRUE(std::all_of(body.begin() + static_cast<ptrdiff_t>(sizes[i]), body.end(),
                            [](uint8_t b) { return b == 0; }))
        << "padding of frame " << i;
  }
  // and the real end reads the same framing back
  for (size_t i = 0; i < sizes.size(); ++i)
    fake.send(5, 100 + i, std::string(sizes[i], static_cast<char>('a' + i)));
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::string got(sizes[i], '\0');
    t0->recv(1, 5, 100 + i, got.data(), got.size(), kRecvTimeout);
    EXPECT_EQ(got, std::string(sizes[i], static_cast<char>('a' + i)));
  }
}

TEST_F(TcpTransportWorld, BothDirectionsOfALargeExchangeProceedTogether) {
  // Each rank sends 16 MB to the other before receiving: no deadlock, since readers never wait
  // for a recv.
  auto world = make_tcp_world(2, *store_, "both_ways");
  const size_t bytes = size_t{16} << 20;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      const auto mine = pattern(bytes, static_cast<uint64_t>(r));
      world[static_cast<size_t>(r)]->send(1 - r, 0, 0, mine.data(), mine.size());
      std::vector<uint8_t> got(bytes);
      world[static_cast<size_t>(r)]->recv(1 - r, 0, 0, got.data(), got.size(), kRecvTimeout);
      EXPECT_TRUE(got == pattern(bytes, static_cast<uint64_t>(1 - r)));
    });
  }
  for (auto& t : threads) t.join();
}

TEST_F(TcpTransportWorld, SecondWorldOfTheSameJobConnectsAfresh) {
  { auto first = make_tcp_world(2, *store_, "again"); }
  auto second = make_tcp_world(2, *store_, "again");
  const int value = 8;
  second[0]->send(1, 0, 0, &value, sizeof(value));
  int got = 0;
  second[1]->recv(0, 0, 0, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, value);
}

}  // namespace
}  // namespace tern
