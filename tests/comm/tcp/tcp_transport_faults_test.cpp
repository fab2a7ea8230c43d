// What a tcp world does with strangers, broken peers and bad frames: reject them with a message
// that says what was wrong, keep the job going where it can, and never hang or crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <thread>

#include "comm/tcp/tcp_store.h"
#include "comm/tcp/tcp_transport.h"
#include "tests/comm/tcp/tcp_test_support.h"

namespace tern {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::FakePeer;
using testing::make_tcp_world;
using testing::RawConnection;

constexpr milliseconds kRecvTimeout = seconds(10);

// The CommError `body` throws, as text ("" when it throws nothing).
template <typename Body>
std::string comm_error_of(Body body) {
  try {
    body();
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

class TcpFaults : public ::testing::Test {
 protected:
  // Starts rank `rank` of a world of `size` on its own thread; get() yields it once connected.
  std::future<std::unique_ptr<TcpTransport>> start_rank(int rank, int size, const std::string& job,
                                                        CommOptions options = testing::short_timeouts()) {
    return std::async(std::launch::async, [this, rank, size, job, options] {
      return std::make_unique<TcpTransport>(TcpWorld{rank, size, job}, *store_, options);
    });
  }

  void expect_link_works(TcpTransport& from, TcpTransport& to) {
    const int value = 1234 + from.rank();
    from.send(to.rank(), 0, 77, &value, sizeof(value));
    int got = 0;
    to.recv(from.rank(), 0, 77, &got, sizeof(got), kRecvTimeout);
    EXPECT_EQ(got, value);
  }

  TcpStoreServer server_;
  std::shared_ptr<Store> store_ = connect_tcp_store(server_.address(), seconds(5));
};

TEST_F(TcpFaults, GarbageSentToARanksPortIsRejectedAndTheJobCarriesOn) {
  auto rank0 = start_rank(0, 2, "garbage");
  const std::string address = testing::published_address(*store_, "garbage", 0);

  RawConnection http(address);
  http.write("GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88\r\nAccept: */*\r\n\r\n");
  EXPECT_TRUE(http.closed_by_peer());
  RawConnection zeros(address);
  zeros.write(std::string(200, '\0'));
  EXPECT_TRUE(zeros.closed_by_peer());
  RawConnection hangs_up(address);  // a few bytes, then gone
  hangs_up.write("TE");
  { RawConnection quiet(address); }  // connects and leaves without a word

  auto rank1 = start_rank(1, 2, "garbage");
  auto t0 = rank0.get();
  auto t1 = rank1.get();
  expect_link_works(*t0, *t1);
  expect_link_works(*t1, *t0);
}

TEST_F(TcpFaults, HandshakeFromAnotherJobIsRejectedAndTheJobCarriesOn) {
  auto rank0 = start_rank(0, 2, "the_job");
  const std::string address = testing::published_address(*store_, "the_job", 0);

  RawConnection intruder(address);
  const net::EncodedHeader hello = net::encode_header(testing::handshake_header("other_job", 1, 2));
  intruder.write(hello.data(), hello.size());
  intruder.write(testing::padded("other_job"));
  EXPECT_TRUE(intruder.closed_by_peer());

  // Same length of job id and a forged hash: caught by comparing the ids themselves.
  RawConnection forger(address);
  net::FrameHeader forged = testing::handshake_header("the_job", 1, 2);
  const net::EncodedHeader forged_bytes = net::encode_header(forged);
  forger.write(forged_bytes.data(), forged_bytes.size());
  forger.write(testing::padded("the_jox"));
  EXPECT_TRUE(forger.closed_by_peer());

  RawConnection wrong_rank(address);  // rank 0 only accepts higher ranks
  const net::EncodedHeader low = net::encode_header(testing::handshake_header("the_job", 0, 2));
  wrong_rank.write(low.data(), low.size());
  wrong_rank.write(testing::padded("the_job"));
  EXPECT_TRUE(wrong_rank.closed_by_peer());

  RawConnection wrong_size(address);
  const net::EncodedHeader big = net::encode_header(testing::handshake_header("the_job", 1, 3));
  wrong_size.write(big.data(), big.size());
  wrong_size.write(testing::padded("the_job"));
  EXPECT_TRUE(wrong_size.closed_by_peer());

  auto rank1 = start_rank(1, 2, "the_job");
  auto t0 = rank0.get();
  auto t1 = rank1.get();
  expect_link_works(*t0, *t1);
  expect_link_works(*t1, *t0);
}

TEST_F(TcpFaults, PeerThatGoesAwayFailsEveryRecvFromItPromptlyNamingIt) {
  auto world = make_tcp_world(3, *store_, "departure");
  // A recv already waiting, with a timeout far beyond the test's patience: it must end at the
  // disconnect, not at the timeout.
  auto waiting = std::async(std::launch::async, [&] {
    int got = 0;
    return comm_error_of([&] { world[0]->recv(1, 0, 5, &got, sizeof(got), seconds(60)); });
  });
  std::this_thread::sleep_for(milliseconds(100));
  world[1].reset();
  const std::string pending = waiting.get();
  EXPECT_NE(pending.find("rank 0: peer rank 1 disconnected (EOF) during recv"), std::string::npos) << pending;

  int got = 0;
  const std::string later = comm_error_of([&] { world[2]->recv(1, 3, 4, &got, sizeof(got), seconds(60)); });
  EXPECT_NE(later.find("peer rank 1 disconnected"), std::string::npos) << later;
  const std::string send = comm_error_of([&] { world[0]->send(1, 0, 0, &got, sizeof(got)); });
  EXPECT_NE(send.find("peer rank 1 disconnected (EOF) during send"), std::string::npos) << send;

  expect_link_works(*world[0], *world[2]);
  expect_link_works(*world[2], *world[0]);
}

TEST_F(TcpFaults, MessagesThatArrivedBeforeTheDisconnectAreStillDelivered) {
  auto world = make_tcp_world(2, *store_, "last_words");
  const int value = 99;
  world[1]->send(0, 0, 1, &value, sizeof(value));
  world[1].reset();
  int got = 0;
  world[0]->recv(1, 0, 1, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, value);
  EXPECT_THROW(world[0]->recv(1, 0, 1, &got, sizeof(got), kRecvTimeout), CommError);
}

TEST_F(TcpFaults, FrameAboveTheReceiversLimitIsRejectedWithTheReason) {
  CommOptions strict = testing::short_timeouts();
  strict.max_message_bytes = size_t{1} << 20;
  auto rank0 = start_rank(0, 2, "limit", strict);
  auto rank1 = start_rank(1, 2, "limit");  // a peer configured with a larger limit
  auto t0 = rank0.get();
  auto t1 = rank1.get();
  const std::vector<uint8_t> big(size_t{2} << 20, 7);
  // The receiver may close the link while the sender is still writing: the send may fail too.
  comm_error_of([&] { t1->send(0, 0, 0, big.data(), big.size()); });
  std::vector<uint8_t> got(big.size());
  const std::string what = comm_error_of([&] { t0->recv(1, 0, 0, got.data(), got.size(), kRecvTimeout); });
  EXPECT_NE(what.find("peer rank 1 sent a bad frame"), std::string::npos) << what;
  EXPECT_NE(what.find("payload of 2097152 bytes exceeds the limit of 1048576 bytes"), std::string::npos)
      << what;
}

class TcpBadFrames : public TcpFaults {
 protected:
  // Rank 0 is real; rank 1 is the test, speaking the protocol by hand.
  void SetUp() override {
    auto rank0 = start_rank(0, 2, "frames");
    fake_ = std::make_unique<FakePeer>(*store_, "frames", 1, 2, 0);
    rank0_ = rank0.get();
    fake_->send(0, 3, "first");  // a good frame is delivered
    std::string got(5, '\0');
    rank0_->recv(1, 0, 3, got.data(), got.size(), kRecvTimeout);
    EXPECT_EQ(got, "first");
  }

  // What rank 0's next recv from the fake peer throws.
  std::string next_recv_error() {
    int got = 0;
    return comm_error_of([&] { rank0_->recv(1, 0, 3, &got, sizeof(got), kRecvTimeout); });
  }

  std::unique_ptr<TcpTransport> rank0_;
  std::unique_ptr<FakePeer> fake_;
};

TEST_F(TcpBadFrames, BadMagicDisconnectsThePeerWithTheReason) {
  net::FrameHeader header = testing::data_header("frames", 0, 3, fake_->next_sequence(), 4);
  header.magic = 0xDEADBEEF;
  fake_->send_frame(header, "abcd");
  const std::string what = next_recv_error();
  EXPECT_NE(what.find("peer rank 1 sent a bad frame (bad magic 0xdeadbeef"), std::string::npos) << what;
  EXPECT_TRUE(fake_->connection().closed_by_peer());
}

TEST_F(TcpBadFrames, SkippedSequenceNumberDisconnectsThePeer) {
  fake_->send_frame(testing::data_header("frames", 0, 3, fake_->next_sequence() + 1, 4), "abcd");
  const std::string what = next_recv_error();
  EXPECT_NE(what.find("sequence number 3, expected 2"), std::string::npos) << what;
}

TEST_F(TcpBadFrames, FrameOfAnotherJobDisconnectsThePeer) {
  fake_->send_frame(testing::data_header("other", 0, 3, fake_->next_sequence(), 4), "abcd");
  const std::string what = next_recv_error();
  EXPECT_NE(what.find("a frame of another job"), std::string::npos) << what;
}

TEST_F(TcpBadFrames, AbsurdLengthIsRejectedBeforeAnythingIsAllocated) {
  fake_->send_frame(testing::data_header("frames", 0, 3, fake_->next_sequence(), uint64_t{1} << 62), "");
  const std::string what = next_recv_error();
  EXPECT_NE(what.find("exceeds the limit"), std::string::npos) << what;
}

TEST_F(TcpBadFrames, PeerDyingInTheMiddleOfAFrameFailsTheRecv) {
  fake_->send_frame(testing::data_header("frames", 0, 3, fake_->next_sequence(), 4), "ab");  // 2 of 4 bytes
  fake_.reset();
  const std::string what = next_recv_error();
  EXPECT_NE(what.find("peer rank 1 disconnected (EOF) during recv"), std::string::npos) << what;
}

TEST_F(TcpBadFrames, RecvTimingOutInTheMiddleOfAFrameEndsAtItsTimeout) {
  // Usually the recv is waiting before the frame starts, so the reader is filling the recv's own
  // buffer when the sender stalls: the recv must take its buffer back (closing the link) and fail.
  std::vector<uint8_t> buffer(8);
  auto waiting = std::async(std::launch::async, [&] {
    return comm_error_of([&] { rank0_->recv(1, 0, 3, buffer.data(), buffer.size(), milliseconds(500)); });
  });
  std::this_thread::sleep_for(milliseconds(100));
  fake_->send_frame(testing::data_header("frames", 0, 3, fake_->next_sequence(), 8), "half");  // 4 of 8 bytes
  const std::string what = waiting.get();
  EXPECT_TRUE(what.find("peer rank 1 stalled in the middle of a message") != std::string::npos ||
              what.find("from rank 1 timed out") != std::string::npos)
      << what;
}

TEST_F(TcpFaults, APostedRecvDestroyedWhileItsSenderStallsMidFrameCutsTheLinkAfterTheTimeout) {
  // Recvs that never read the socket themselves (poll 0): the reader thread fills a posted recv as
  // its frame comes. (A recv that reads the socket itself leaves its frames there until its wait,
  // so the reader does not touch them while it is only posted.)
  CommOptions options = testing::short_timeouts(milliseconds(300));
  options.poll = std::chrono::microseconds(0);
  auto rank0 = start_rank(0, 2, "stalled-post", options);
  FakePeer fake(*store_, "stalled-post", 1, 2, 0);
  auto t0 = rank0.get();
  std::vector<uint8_t> buffer(8, 0);
  auto posted = t0->post_recv(1, 0, 3, buffer.data(), buffer.size());
  fake.send_frame(testing::data_header("stalled-post", 0, 3, fake.next_sequence(), 8),
                  "half");                         // 4 of 8 bytes
  std::this_thread::sleep_for(milliseconds(100));  // the reader is (usually) filling the buffer now
  posted.reset();  // must not return while the reader may still write the buffer
  std::fill(buffer.begin(), buffer.end(), uint8_t{0xEE});
  int got = 0;
  const std::string what = comm_error_of([&] { t0->recv(1, 0, 4, &got, sizeof(got), milliseconds(500)); });
  // Usually the reader had claimed the buffer, so the link was cut and says why; otherwise the half
  // frame sits in the reader (bound for the mailbox) and the recv times out.
  EXPECT_TRUE(
      what.find("peer rank 1 stalled in the middle of a message for 300 ms after its recv was abandoned") !=
          std::string::npos ||
      what.find("from rank 1 timed out") != std::string::npos)
      << what;
  EXPECT_EQ(buffer, std::vector<uint8_t>(8, 0xEE)) << "the buffer was written after its recv was destroyed";
}

TEST_F(TcpFaults, SendToAPeerThatStopsReadingFailsAtTheTimeout) {
  auto rank0 = start_rank(0, 2, "deaf", testing::short_timeouts(milliseconds(500)));
  FakePeer deaf(*store_, "deaf", 1, 2, 0);  // completes the handshake, then never reads
  auto t0 = rank0.get();
  const std::vector<uint8_t> big(size_t{64} << 20);  // more than any socket buffer holds
  const std::string what = comm_error_of([&] { t0->send(1, 0, 0, big.data(), big.size()); });
  EXPECT_NE(what.find("peer rank 1 stopped reading for 500 ms"), std::string::npos) << what;
}

TEST_F(TcpFaults, SetupWithARankThatNeverArrivesTimesOutNamingIt) {
  const std::string alone = comm_error_of([&] {
    TcpTransport t(TcpWorld{0, 2, "lonely"}, *store_, testing::short_timeouts(milliseconds(300)));
  });
  EXPECT_NE(alone.find("rank 0: tcp setup of job 'lonely' timed out"), std::string::npos) << alone;
  EXPECT_NE(alone.find("rank(s) 1 never arrived"), std::string::npos) << alone;

  const std::string middle = comm_error_of([&] {
    TcpTransport t(TcpWorld{1, 3, "sparse"}, *store_, testing::short_timeouts(milliseconds(300)));
  });
  EXPECT_NE(middle.find("rank(s) 0, 2 never arrived"), std::string::npos) << middle;
}

TEST_F(TcpFaults, SetupWhereARankPublishedButNeverConnectedNamesIt) {
  // Rank 1 of a world of 2 "arrives" in the store but never dials rank 0.
  store_->add("tern/mute/tcp/worlds_created_by/1", 1);
  store_->set(net::address_key("mute", 1, 1), "127.0.0.1:1");
  const std::string what = comm_error_of([&] {
    TcpTransport t(TcpWorld{0, 2, "mute"}, *store_, testing::short_timeouts(milliseconds(300)));
  });
  EXPECT_NE(what.find("rank(s) 1 did not complete the connection"), std::string::npos) << what;
}

}  // namespace
}  // namespace tern
