// What the tcp backend's two transports promise alike (comm/transport.h), run against each: TCP
// sockets (TcpTransport) and shared-memory rings (ShmTransport, with rings small enough that every
// large message wraps many times). What only one of them does is tested in its own file.
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/tcp/shm_transport.h"
#include "comm/tcp/tcp_store.h"
#include "tests/comm/tcp/tcp_test_support.h"
#include "tests/comm/tcp/transport_checks.h"
#include "tests/support/threads.h"

namespace tern {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::pattern;
using testing::short_timeouts;

constexpr milliseconds kRecvTimeout = seconds(10);

// Sockets as they run by default, sockets whose every send then reads what came in (the path of
// sends from 1 MB with a core per rank, CommOptions::read_after_send_bytes), and shared memory.
enum class Link { sockets, sockets_reading_after_sends, shared_memory };

// Test options with recvs that poll for `poll_us` (recvs of up to `poll_max_bytes`).
CommOptions polling(int64_t poll_us, size_t poll_max_bytes = CommOptions{}.poll_max_bytes) {
  CommOptions options = short_timeouts();
  options.poll = std::chrono::microseconds(poll_us);
  options.poll_max_bytes = poll_max_bytes;
  return options;
}

std::string link_name(const ::testing::TestParamInfo<Link>& info) {
  switch (info.param) {
    case Link::sockets:
      return "Sockets";
    case Link::sockets_reading_after_sends:
      return "SocketsReadingAfterSends";
    case Link::shared_memory:
      break;
  }
  return "SharedMemory";
}

class TransportContract : public ::testing::TestWithParam<Link> {
 protected:
  // n transports of one job over the fixture's store, rank r at index r.
  std::vector<std::unique_ptr<Transport>> world(int n, const std::string& job_id,
                                                const CommOptions& options = short_timeouts()) {
    std::vector<std::unique_ptr<Transport>> ranks;
    if (GetParam() != Link::shared_memory) {
      CommOptions link = options;
      if (GetParam() == Link::sockets_reading_after_sends) link.read_after_send_bytes = 1;
      for (auto& t : testing::make_tcp_world(n, *store_, job_id, link)) ranks.push_back(std::move(t));
    } else {
      for (auto& t : testing::make_shm_world(n, *store_, job_id, options)) ranks.push_back(std::move(t));
    }
    return ranks;
  }

  TcpStoreServer server_;
  std::shared_ptr<Store> store_ = connect_tcp_store(server_.address(), seconds(5));
};

INSTANTIATE_TEST_SUITE_P(Links, TransportContract,
                         ::testing::Values(Link::sockets, Link::sockets_reading_after_sends,
                                           Link::shared_memory),
                         link_name);

// Every rank sends everything (to itself too) before it receives anything: sends far larger than
// what the link holds must not wait for the peer's recv.
TEST_P(TransportContract, EveryPairExchangesMessagesOfSizeZeroOneSevenAndSixteenMegabytes) {
  constexpr int kRanks = 3;
  auto ranks = world(kRanks, "sizes");
  const std::vector<size_t> sizes = {0, 1, 7, size_t{16} << 20};
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      Transport& t = *ranks[static_cast<size_t>(r)];
      for (int peer = 0; peer < kRanks; ++peer) {
        for (size_t s = 0; s < sizes.size(); ++s) {
          const auto data = pattern(sizes[s], static_cast<uint64_t>(r * 100 + peer * 10) + s);
          t.send(peer, 0, s, data.data(), data.size());
        }
      }
      for (int peer = 0; peer < kRanks; ++peer) {
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
  for (auto& t : ranks) {
    EXPECT_EQ(t->bytes_sent(), payload * kRanks);
    EXPECT_EQ(t->bytes_received(), payload * kRanks);
  }
}

// Steps of a ring (or of halving-doubling) with messages far larger than what the link holds:
// every rank posts its recv from the previous rank, sends to the next, then waits — right after a
// polled recv, while the reader threads still stand aside for it. A send that cannot write must
// not wait in the middle of another rank's message for bytes that rank cannot write, because it is
// stuck the same way (with 2 ranks: each reading the other's half-written message).
TEST_P(TransportContract, SimultaneousStepsWithMessagesLargerThanTheLinkRightAfterAPolledRecvComplete) {
  for (int n : {2, 3, 4}) {
    auto ranks = world(n, "steps" + std::to_string(n));
    const size_t big = size_t{12} << 20;
    testing::run_on_threads(n, [&](int r) {
      Transport& t = *ranks[static_cast<size_t>(r)];
      const int next = (r + 1) % n, prev = (r + n - 1) % n;
      for (int step = 0; step < 3; ++step) {
        const auto data = pattern(big, static_cast<uint64_t>(r * 10 + step));
        std::vector<uint8_t> got(big);
        uint8_t token = 0;  // a small message first: the recv polls, the readers stand aside
        t.send(next, 0, 1, &token, 1);
        t.recv(prev, 0, 1, &token, 1, kRecvTimeout);
        auto recv = t.post_recv(prev, 0, 2, got.data(), got.size());
        t.send(next, 0, 2, data.data(), data.size());
        recv->wait(kRecvTimeout);
        EXPECT_TRUE(got == pattern(big, static_cast<uint64_t>(prev * 10 + step))) << "rank " << r << " step " << step;
      }
    });
  }
}

TEST_P(TransportContract, MessagesOfOneTagArriveInOrderWhateverTheOrderTagsAreReceived) {
  auto ranks = world(2, "tags");
  constexpr int kTags = 40, kRounds = 5;
  for (int round = 0; round < kRounds; ++round) {  // tags interleaved on the link
    for (int tag = 0; tag < kTags; ++tag) {
      const int value = round * 1000 + tag;
      ranks[0]->send(1, 7, static_cast<uint64_t>(tag), &value, sizeof(value));
    }
  }
  for (int tag = kTags - 1; tag >= 0; --tag) {  // received tag by tag, last tag first
    for (int round = 0; round < kRounds; ++round) {
      int value = -1;
      ranks[1]->recv(0, 7, static_cast<uint64_t>(tag), &value, sizeof(value), kRecvTimeout);
      EXPECT_EQ(value, round * 1000 + tag);
    }
  }
}

TEST_P(TransportContract, ContextsSeparateMessagesWithTheSameTag) {
  auto ranks = world(2, "contexts");
  const int a = 11, b = 22;
  ranks[0]->send(1, 1, 5, &a, sizeof(a));
  ranks[0]->send(1, 2, 5, &b, sizeof(b));
  int got = 0;
  ranks[1]->recv(0, 2, 5, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, b);
  ranks[1]->recv(0, 1, 5, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, a);
}

TEST_P(TransportContract, ARecvWaitingBeforeTheSendGetsALargeMessageWhole) {
  auto ranks = world(2, "waiting");
  const auto data = pattern(size_t{5} << 20, 42);
  std::vector<uint8_t> got(data.size(), 0);
  std::thread receiver([&] { ranks[1]->recv(0, 3, 9, got.data(), got.size(), kRecvTimeout); });
  std::this_thread::sleep_for(milliseconds(50));  // usually the recv waits first; correct either way
  ranks[0]->send(1, 3, 9, data.data(), data.size());
  receiver.join();
  EXPECT_TRUE(got == data);
}

// The receiving rank is busy elsewhere (computing) and calls nothing: a send many times what the link
// holds still completes — the link's reader thread takes the message in — well before that rank's recv.
TEST_P(TransportContract, ASendLargerThanTheLinkCompletesWhileTheReceivingRankIsBusy) {
  auto ranks = world(2, "busy");
  const auto data = pattern(size_t{12} << 20, 5);
  constexpr milliseconds kBusy{1500};
  const auto start = std::chrono::steady_clock::now();
  ranks[0]->send(1, 0, 4, data.data(), data.size());
  const auto sent = std::chrono::steady_clock::now() - start;
  std::this_thread::sleep_until(start + kBusy);
  std::vector<uint8_t> got(data.size());
  ranks[1]->recv(0, 0, 4, got.data(), got.size(), kRecvTimeout);
  EXPECT_LT(sent, kBusy / 2) << "the send waited for the recv";
  EXPECT_TRUE(got == data);
}

// A recv that stopped polling is asleep; the message that comes much later must still reach it.
TEST_P(TransportContract, ARecvThatStoppedPollingGetsALateMessage) {
  auto ranks = world(2, "late", polling(100));
  for (int round = 0; round < 3; ++round) {
    int got = 0;
    std::thread receiver([&] { ranks[1]->recv(0, 0, 1, &got, sizeof(got), kRecvTimeout); });
    std::this_thread::sleep_for(milliseconds(30));  // far past the poll window
    const int value = 11 + round;
    ranks[0]->send(1, 0, 1, &value, sizeof(value));
    receiver.join();
    EXPECT_EQ(got, 11 + round);
  }
}

TEST_P(TransportContract, RecvTimesOutNamingThePeerTheTagAndTheTimeoutAndTheLinkGoesOn) {
  auto ranks = world(2, "timeout");
  int got = 0;
  const std::string what =
      testing::transport_error_of([&] { ranks[1]->recv(0, 0, 77, &got, sizeof(got), milliseconds(200)); });
  EXPECT_NE(what.find("from rank 0"), std::string::npos) << what;
  EXPECT_NE(what.find("tag 77"), std::string::npos) << what;
  EXPECT_NE(what.find("timed out after 200 ms"), std::string::npos) << what;
  const int value = 4;
  ranks[0]->send(1, 0, 77, &value, sizeof(value));
  ranks[1]->recv(0, 0, 77, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, value);
}

TEST_P(TransportContract, ARecvOfTheWrongLengthIsAnErrorNamingBothLengths) {
  auto ranks = world(2, "length");
  const auto data = pattern(12, 1);
  ranks[0]->send(1, 0, 1, data.data(), data.size());
  std::vector<uint8_t> got(8);
  const std::string what =
      testing::transport_error_of([&] { ranks[1]->recv(0, 0, 1, got.data(), got.size(), kRecvTimeout); });
  EXPECT_NE(what.find("expected 8 bytes but the message has 12"), std::string::npos) << what;
}

TEST_P(TransportContract, SendLargerThanTheLimitFailsAtTheSender) {
  CommOptions options = short_timeouts();
  options.max_message_bytes = 1024;
  auto ranks = world(2, "limit", options);
  const std::vector<uint8_t> data(2048);
  const std::string what = testing::transport_error_of([&] { ranks[0]->send(1, 0, 0, data.data(), data.size()); });
  EXPECT_NE(what.find("max_message_bytes"), std::string::npos) << what;
  ranks[0]->send(1, 0, 0, data.data(), 1024);  // the limit itself is allowed
  std::vector<uint8_t> got(1024);
  ranks[1]->recv(0, 0, 0, got.data(), got.size(), kRecvTimeout);
}

TEST_P(TransportContract, UnclaimedMessagesAreDrainedRightAfterAPollingRecv) {
  auto ranks = world(2, "drain");
  testing::check_unclaimed_messages_are_drained_after_a_poll(*ranks[0], *ranks[1], 5);
}

// Polling for as long as it takes, for a moment, or not at all, and with large recvs sleeping at
// once (the 64 KB limit) or polling too.
TEST_P(TransportContract, ConcurrentRecvsThatPollAndSleepEachGetTheirOwnMessagesInOrder) {
  for (const int64_t poll_us : {int64_t{0}, int64_t{50}, int64_t{100000}}) {
    for (const size_t poll_max_bytes : {size_t{64} << 10, std::numeric_limits<size_t>::max()}) {
      auto ranks =
          world(2, "poll-" + std::to_string(poll_us) + "-" + std::to_string(poll_max_bytes), polling(poll_us, poll_max_bytes));
      SCOPED_TRACE("poll " + std::to_string(poll_us) + " us, up to " + std::to_string(poll_max_bytes) + " bytes");
      testing::check_concurrent_recvs_that_poll_and_sleep(*ranks[0], *ranks[1], 4);
    }
  }
}

// Transport::post_recv and post_recv_reduce, with sizes on both sides of the polling limit and
// messages far larger than the link holds.
TEST_P(TransportContract, PostedRecvsOfOneTagTakeMessagesInPostOrderAlongsidePlainRecvs) {
  auto ranks = world(2, "post-order");
  testing::check_posted_recvs_take_messages_in_post_order(*ranks[0], *ranks[1], 4);
}

TEST_P(TransportContract, PostedRecvsFromItselfTakeItsMessagesInOrder) {
  auto ranks = world(2, "post-self");
  testing::check_posted_recvs_take_messages_in_post_order(*ranks[1], *ranks[1], 4);
}

TEST_P(TransportContract, AWindowOfPostedRecvsKeepsUpWithAStream) {
  for (const int64_t poll_us : {int64_t{0}, int64_t{200}}) {
    auto ranks = world(2, "post-window-" + std::to_string(poll_us), polling(poll_us));
    SCOPED_TRACE("poll " + std::to_string(poll_us) + " us");
    testing::check_a_window_of_posted_recvs_keeps_up_with_a_stream(*ranks[0], *ranks[1], 4);
  }
}

TEST_P(TransportContract, APostedRecvThatTimesOutLeavesTheMessageToTheNextRecv) {
  auto ranks = world(2, "post-timeout");
  testing::check_a_posted_recv_that_times_out_leaves_the_message_to_the_next_recv(*ranks[0], *ranks[1], 4);
}

TEST_P(TransportContract, ReducingRecvsFoldEachMessageIntoTheirBuffer) {
  auto ranks = world(2, "post-reduce");
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(*ranks[0], *ranks[1], 4);
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(*ranks[1], *ranks[1], 5);
}

TEST_P(TransportContract, APostedRecvOfTheWrongLengthFailsNamingBothLengths) {
  auto ranks = world(2, "post-length");
  testing::check_a_posted_recv_of_the_wrong_length_fails_naming_both(*ranks[0], *ranks[1], 4);
}

TEST_P(TransportContract, PostedRecvsFailPromptlyWhenTheirPeerLeaves) {
  auto ranks = world(2, "post-gone", short_timeouts(seconds(30)));
  testing::check_posted_recvs_fail_when_their_peer_leaves(*ranks[1], 0, 4, [&] { ranks[0].reset(); });
}

TEST_P(TransportContract, APostedRecvDestroyedUnwaitedGivesItsBufferBack) {
  auto ranks = world(2, "post-destroyed");
  testing::check_a_posted_recv_destroyed_unwaited_gives_its_buffer_back(*ranks[0], *ranks[1], 4);
}

}  // namespace
}  // namespace tern
