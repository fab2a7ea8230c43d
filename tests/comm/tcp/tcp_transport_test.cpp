#include "comm/tcp/tcp_transport.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

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

TEST_F(TcpTransportWorld, EveryPairExchangesMessagesOfSizeZeroOneAndSixteenMegabytes) {
  constexpr int kRanks = 3;
  auto world = make_tcp_world(kRanks, *store_, "sizes");
  const std::vector<size_t> sizes = {0, 1, 7, size_t{16} << 20};
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      TcpTransport& t = *world[static_cast<size_t>(r)];
      for (int peer = 0; peer < kRanks; ++peer) {
        if (peer == r) continue;
        for (size_t s = 0; s < sizes.size(); ++s) {
          const auto data = pattern(sizes[s], static_cast<uint64_t>(r * 100 + peer * 10) + s);
          t.send(peer, 0, s, data.data(), data.size());
        }
      }
      for (int peer = 0; peer < kRanks; ++peer) {
        if (peer == r) continue;
        for (size_t s = 0; s < sizes.size(); ++s) {
          std::vector<uint8_t> got(sizes[s], 0xAB);
          t.recv(peer, 0, s, got.data(), got.size(), kRecvTimeout);
          EXPECT_TRUE(got == pattern(sizes[s], static_cast<uint64_t>(peer * 100 + r * 10) + s))
              << "rank " << r << " from " << peer << " size " << sizes[s];
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  size_t payload = 0;
  for (size_t s : sizes) payload += s;
  for (auto& t : world) {
    EXPECT_EQ(t->bytes_sent(), payload * (kRanks - 1));
    EXPECT_EQ(t->bytes_received(), payload * (kRanks - 1));
  }
}

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

TEST_F(TcpTransportWorld, MessagesOfOneTagArriveInOrderWhateverTheOrderTagsAreReceived) {
  auto world = make_tcp_world(2, *store_, "tags");
  constexpr int kTags = 40, kRounds = 5;
  for (int round = 0; round < kRounds; ++round) {  // tags interleaved on the wire
    for (int tag = 0; tag < kTags; ++tag) {
      const int value = round * 1000 + tag;
      world[0]->send(1, 7, static_cast<uint64_t>(tag), &value, sizeof(value));
    }
  }
  for (int tag = kTags - 1; tag >= 0; --tag) {  // received tag by tag, last tag first
    for (int round = 0; round < kRounds; ++round) {
      int value = -1;
      world[1]->recv(0, 7, static_cast<uint64_t>(tag), &value, sizeof(value), kRecvTimeout);
      EXPECT_EQ(value, round * 1000 + tag);
    }
  }
}

TEST_F(TcpTransportWorld, ContextsSeparateMessagesWithTheSameTag) {
  auto world = make_tcp_world(2, *store_, "contexts");
  const int a = 11, b = 22;
  world[0]->send(1, 1, 5, &a, sizeof(a));
  world[0]->send(1, 2, 5, &b, sizeof(b));
  int got = 0;
  world[1]->recv(0, 2, 5, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, b);
  world[1]->recv(0, 1, 5, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, a);
}

TEST_F(TcpTransportWorld, RecvPostedBeforeTheSendGetsTheData) {
  auto world = make_tcp_world(2, *store_, "posted");
  const auto data = pattern(size_t{4} << 20, 5);
  std::vector<uint8_t> got(data.size());
  std::thread receiver([&] { world[1]->recv(0, 0, 1, got.data(), got.size(), kRecvTimeout); });
  std::this_thread::sleep_for(milliseconds(50));  // usually the recv waits first; correct either way
  world[0]->send(1, 0, 1, data.data(), data.size());
  receiver.join();
  EXPECT_TRUE(got == data);
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

TEST_F(TcpTransportWorld, UnclaimedMessagesAreDrainedRightAfterAPollingRecv) {
  auto world = make_tcp_world(2, *store_, "drain-TcpTransportWorld", testing::short_timeouts());
  testing::check_unclaimed_messages_are_drained_after_a_poll(*world[0], *world[1], 5);
}

TEST_F(TcpTransportWorld, ConcurrentRecvsThatPollAndSleepEachGetTheirOwnMessagesInOrder) {
  for (const int64_t poll_us : {int64_t{0}, int64_t{50}, int64_t{100000}}) {
    CommOptions options = testing::short_timeouts();
    options.poll = std::chrono::microseconds(poll_us);
    auto world = make_tcp_world(2, *store_, "poll-" + std::to_string(poll_us), options);
    SCOPED_TRACE("poll " + std::to_string(poll_us) + " us");
    testing::check_concurrent_recvs_that_poll_and_sleep(*world[0], *world[1], 4);
  }
}

// Transport::post_recv, with sizes on both sides of the polling limit.
TEST_F(TcpTransportWorld, PostedRecvsOfOneTagTakeMessagesInPostOrderAlongsidePlainRecvs) {
  auto world = make_tcp_world(2, *store_, "post-order");
  testing::check_posted_recvs_take_messages_in_post_order(*world[0], *world[1], 4);
}

TEST_F(TcpTransportWorld, AWindowOfPostedRecvsKeepsUpWithAStream) {
  auto world = make_tcp_world(2, *store_, "post-window");
  testing::check_a_window_of_posted_recvs_keeps_up_with_a_stream(*world[0], *world[1], 4);
}

TEST_F(TcpTransportWorld, APostedRecvThatTimesOutLeavesTheMessageToTheNextRecv) {
  auto world = make_tcp_world(2, *store_, "post-timeout");
  testing::check_a_posted_recv_that_times_out_leaves_the_message_to_the_next_recv(*world[0], *world[1], 4);
}

TEST_F(TcpTransportWorld, ReducingRecvsFoldEachMessageIntoTheirBuffer) {
  auto world = make_tcp_world(2, *store_, "post-reduce");
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(*world[0], *world[1], 4);
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(*world[1], *world[1], 5);
}

TEST_F(TcpTransportWorld, APostedRecvOfTheWrongLengthFailsNamingBothLengths) {
  auto world = make_tcp_world(2, *store_, "post-length");
  testing::check_a_posted_recv_of_the_wrong_length_fails_naming_both(*world[0], *world[1], 4);
}

TEST_F(TcpTransportWorld, PostedRecvsFailPromptlyWhenTheirPeerLeaves) {
  auto world = make_tcp_world(2, *store_, "post-gone", testing::short_timeouts(seconds(30)));
  testing::check_posted_recvs_fail_when_their_peer_leaves(*world[1], 0, 4, [&] { world[0].reset(); });
}

TEST_F(TcpTransportWorld, APostedRecvDestroyedUnwaitedGivesItsBufferBack) {
  auto world = make_tcp_world(2, *store_, "post-destroyed");
  testing::check_a_posted_recv_destroyed_unwaited_gives_its_buffer_back(*world[0], *world[1], 4);
}

TEST_F(TcpTransportWorld, PostedRecvsFromItselfTakeItsMessagesInOrder) {
  auto world = make_tcp_world(2, *store_, "post-self");
  testing::check_posted_recvs_take_messages_in_post_order(*world[1], *world[1], 4);
}

TEST_F(TcpTransportWorld, SendToItselfIsDelivered) {
  auto world = make_tcp_world(2, *store_, "self");
  const double value = 3.5;
  world[1]->send(1, 0, 9, &value, sizeof(value));
  double got = 0;
  world[1]->recv(1, 0, 9, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, value);
}

TEST_F(TcpTransportWorld, RecvOfTheWrongLengthNamesBothLengths) {
  auto world = make_tcp_world(2, *store_, "length");
  const std::vector<uint8_t> data(12, 1);
  world[0]->send(1, 0, 3, data.data(), data.size());
  std::vector<uint8_t> got(8);
  try {
    world[1]->recv(0, 0, 3, got.data(), got.size(), kRecvTimeout);
    FAIL() << "expected a length mismatch";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("expected 8 bytes"), std::string::npos) << what;
    EXPECT_NE(what.find("has 12"), std::string::npos) << what;
  }
}

TEST_F(TcpTransportWorld, RecvWithNoMessageTimesOutNamingThePeer) {
  auto world = make_tcp_world(2, *store_, "timeout");
  int got = 0;
  try {
    world[0]->recv(1, 0, 42, &got, sizeof(got), milliseconds(100));
    FAIL() << "expected a timeout";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("from rank 1"), std::string::npos) << what;
    EXPECT_NE(what.find("timed out"), std::string::npos) << what;
  }
  // The link still works afterwards.
  const int value = 4;
  world[1]->send(0, 0, 42, &value, sizeof(value));
  world[0]->recv(1, 0, 42, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, value);
}

TEST_F(TcpTransportWorld, SendLargerThanTheLimitFailsAtTheSender) {
  CommOptions options = testing::short_timeouts();
  options.max_message_bytes = 1024;
  auto world = make_tcp_world(2, *store_, "limit_send", options);
  const std::vector<uint8_t> data(2048);
  try {
    world[0]->send(1, 0, 0, data.data(), data.size());
    FAIL() << "expected the send to be refused";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("max_message_bytes"), std::string::npos) << e.what();
  }
  world[0]->send(1, 0, 0, data.data(), 1024);  // the limit itself is allowed
  std::vector<uint8_t> got(1024);
  world[1]->recv(0, 0, 0, got.data(), got.size(), kRecvTimeout);
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
