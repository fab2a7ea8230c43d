#include "comm/tcp/shm_transport.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <exception>
#include <limits>
#include <thread>
#include <vector>

#include "comm/local/local.h"
#include "comm/tcp/shm_ring.h"
#include "runtime/rng.h"
#include "tests/comm/tcp/transport_checks.h"
#include "tests/support/threads.h"

namespace tern {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr milliseconds kRecvTimeout = seconds(10);
// Small rings, so that every large message wraps around many times.
constexpr size_t kTestRingBytes = size_t{64} << 10;

CommOptions short_timeouts(milliseconds timeout = seconds(10)) {
  CommOptions options;
  options.timeout = timeout;
  return options;
}

using testing::pattern;

// n transports of one job over one in-memory store, each built on its own thread.
std::vector<std::unique_ptr<ShmTransport>> make_shm_world(int n, Store& store, const std::string& job_id,
                                                          const CommOptions& options = short_timeouts(),
                                                          size_t ring_bytes = kTestRingBytes) {
  std::vector<std::unique_ptr<ShmTransport>> world(static_cast<size_t>(n));
  testing::run_on_threads(n, [&](int r) {
    world[static_cast<size_t>(r)] =
        std::make_unique<ShmTransport>(TcpWorld{r, n, job_id}, store, options, ring_bytes);
  });
  return world;
}

class ShmTransportWorld : public ::testing::Test {
 protected:
  std::shared_ptr<Store> store_ = make_memory_store();
};

TEST_F(ShmTransportWorld, EveryPairExchangesMessagesOfSizeZeroOneSevenAndSixteenMegabytes) {
  constexpr int kRanks = 3;
  auto world = make_shm_world(kRanks, *store_, "shm-sizes");
  const std::vector<size_t> sizes = {0, 1, 7, size_t{16} << 20};
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      ShmTransport& t = *world[static_cast<size_t>(r)];
      // Every rank sends everything before it receives anything: sends far larger than the ring
      // must not wait for the peer's recv.
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
  for (auto& t : world) {
    EXPECT_EQ(t->bytes_sent(), payload * kRanks);
    EXPECT_EQ(t->bytes_received(), payload * kRanks);
  }
}

TEST_F(ShmTransportWorld, ARecvPostedBeforeTheMessageArrivesReceivesALargeMessageWhole) {
  auto world = make_shm_world(2, *store_, "shm-posted");
  const auto data = pattern(size_t{5} << 20, 42);
  std::vector<uint8_t> got(data.size(), 0);
  std::thread receiver([&] { world[1]->recv(0, 3, 9, got.data(), got.size(), kRecvTimeout); });
  std::this_thread::sleep_for(milliseconds(50));  // usually posted first; correct either way
  world[0]->send(1, 3, 9, data.data(), data.size());
  receiver.join();
  EXPECT_TRUE(got == data);
}

TEST_F(ShmTransportWorld, UnclaimedMessagesAreDrainedRightAfterAPollingRecv) {
  auto world = make_shm_world(2, *store_, "drain-ShmTransportWorld", short_timeouts());
  testing::check_unclaimed_messages_are_drained_after_a_poll(*world[0], *world[1], 5);
}

TEST_F(ShmTransportWorld, ConcurrentRecvsThatPollAndSleepEachGetTheirOwnMessagesInOrder) {
  for (const int64_t poll_us : {int64_t{0}, int64_t{50}, int64_t{100000}}) {
    for (const size_t poll_max_bytes : {size_t{64} << 10, std::numeric_limits<size_t>::max()}) {
      CommOptions options = short_timeouts();
      options.poll = std::chrono::microseconds(poll_us);
      options.poll_max_bytes = poll_max_bytes;
      auto world = make_shm_world(2, *store_, "shm-poll-" + std::to_string(poll_us) + "-" + std::to_string(poll_max_bytes), options);
      SCOPED_TRACE("poll " + std::to_string(poll_us) + " us, up to " + std::to_string(poll_max_bytes) + " bytes");
      testing::check_concurrent_recvs_that_poll_and_sleep(*world[0], *world[1], 4);
    }
  }
}

// Transport::post_recv, with sizes on both sides of the polling limit and messages far larger than
// the ring.
TEST_F(ShmTransportWorld, PostedRecvsOfOneTagTakeMessagesInPostOrderAlongsidePlainRecvs) {
  auto world = make_shm_world(2, *store_, "shm-post-order");
  testing::check_posted_recvs_take_messages_in_post_order(*world[0], *world[1], 4);
}

TEST_F(ShmTransportWorld, AWindowOfPostedRecvsKeepsUpWithAStream) {
  for (const int64_t poll_us : {int64_t{0}, int64_t{200}}) {
    CommOptions options = short_timeouts();
    options.poll = std::chrono::microseconds(poll_us);
    auto world = make_shm_world(2, *store_, "shm-post-window-" + std::to_string(poll_us), options);
    SCOPED_TRACE("poll " + std::to_string(poll_us) + " us");
    testing::check_a_window_of_posted_recvs_keeps_up_with_a_stream(*world[0], *world[1], 4);
  }
}

TEST_F(ShmTransportWorld, APostedRecvThatTimesOutLeavesTheMessageToTheNextRecv) {
  auto world = make_shm_world(2, *store_, "shm-post-timeout");
  testing::check_a_posted_recv_that_times_out_leaves_the_message_to_the_next_recv(*world[0], *world[1], 4);
}

TEST_F(ShmTransportWorld, ReducingRecvsFoldEachMessageIntoTheirBuffer) {
  auto world = make_shm_world(2, *store_, "shm-post-reduce");
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(*world[0], *world[1], 4);
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(*world[1], *world[1], 5);
}

TEST_F(ShmTransportWorld, APostedRecvOfTheWrongLengthFailsNamingBothLengths) {
  auto world = make_shm_world(2, *store_, "shm-post-length");
  testing::check_a_posted_recv_of_the_wrong_length_fails_naming_both(*world[0], *world[1], 4);
}

TEST_F(ShmTransportWorld, PostedRecvsFailPromptlyWhenTheirPeerLeaves) {
  auto world = make_shm_world(2, *store_, "shm-post-gone", short_timeouts(seconds(30)));
  testing::check_posted_recvs_fail_when_their_peer_leaves(*world[1], 0, 4, [&] { world[0].reset(); });
}

TEST_F(ShmTransportWorld, APostedRecvDestroyedUnwaitedGivesItsBufferBack) {
  auto world = make_shm_world(2, *store_, "shm-post-destroyed");
  testing::check_a_posted_recv_destroyed_unwaited_gives_its_buffer_back(*world[0], *world[1], 4);
}

TEST_F(ShmTransportWorld, PostedRecvsFromItselfTakeItsMessagesInOrder) {
  auto world = make_shm_world(2, *store_, "shm-post-self");
  testing::check_posted_recvs_take_messages_in_post_order(*world[1], *world[1], 4);
}

// A recv that stopped polling is asleep; the message that comes much later must still reach it.
TEST_F(ShmTransportWorld, ARecvThatStoppedPollingGetsALateMessage) {
  CommOptions options = short_timeouts();
  options.poll = std::chrono::microseconds(100);
  auto world = make_shm_world(2, *store_, "shm-late", options);
  for (int round = 0; round < 3; ++round) {
    int got = 0;
    std::thread receiver([&] { world[1]->recv(0, 0, 1, &got, sizeof(got), kRecvTimeout); });
    std::this_thread::sleep_for(milliseconds(30));  // far past the poll window
    const int value = 11 + round;
    world[0]->send(1, 0, 1, &value, sizeof(value));
    receiver.join();
    EXPECT_EQ(got, 11 + round);
  }
}

TEST_F(ShmTransportWorld, MessagesOfOneTagArriveInOrderWhateverTheOrderTagsAreReceived) {
  auto world = make_shm_world(2, *store_, "shm-tags");
  constexpr int kTags = 40, kRounds = 5;
  for (int round = 0; round < kRounds; ++round) {  // tags interleaved in the ring
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

TEST_F(ShmTransportWorld, ContextsSeparateMessagesWithTheSameTag) {
  auto world = make_shm_world(2, *store_, "shm-contexts");
  const int a = 1, b = 2;
  world[0]->send(1, 10, 5, &a, sizeof(a));
  world[0]->send(1, 11, 5, &b, sizeof(b));
  int got = 0;
  world[1]->recv(0, 11, 5, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, 2);
  world[1]->recv(0, 10, 5, &got, sizeof(got), kRecvTimeout);
  EXPECT_EQ(got, 1);
}

TEST_F(ShmTransportWorld, RecvTimesOutNamingThePeerAndTheTimeout) {
  auto world = make_shm_world(2, *store_, "shm-timeout");
  int value = 0;
  try {
    world[1]->recv(0, 0, 77, &value, sizeof(value), milliseconds(200));
    FAIL() << "recv returned without a message";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("from rank 0"), std::string::npos) << what;
    EXPECT_NE(what.find("tag 77"), std::string::npos) << what;
    EXPECT_NE(what.find("timed out after 200 ms"), std::string::npos) << what;
  }
}

TEST_F(ShmTransportWorld, ARecvOfTheWrongLengthIsAnErrorNamingBothLengths) {
  auto world = make_shm_world(2, *store_, "shm-length");
  const auto data = pattern(12, 1);
  world[0]->send(1, 0, 1, data.data(), data.size());
  std::vector<uint8_t> got(8);
  try {
    world[1]->recv(0, 0, 1, got.data(), got.size(), kRecvTimeout);
    FAIL() << "a 12-byte message filled an 8-byte recv";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("expected 8 bytes but the message has 12"), std::string::npos) << what;
  }
}

TEST_F(ShmTransportWorld, APeerThatGoesAwayFailsRecvsFromItPromptlyNamingIt) {
  auto world = make_shm_world(3, *store_, "shm-gone", short_timeouts(seconds(30)));
  const int sent = 5;
  world[1]->send(0, 0, 1, &sent, sizeof(sent));
  world[1].reset();  // rank 1 leaves after sending one message
  int value = 0;
  world[0]->recv(1, 0, 1, &value, sizeof(value), kRecvTimeout);  // what it sent still arrives
  EXPECT_EQ(value, 5);
  const auto start = std::chrono::steady_clock::now();
  try {
    world[0]->recv(1, 0, 2, &value, sizeof(value), seconds(30));
    FAIL() << "recv from a departed rank returned";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("peer rank 1"), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(20)) << "failed by the timeout, not the close";
  EXPECT_THROW(world[2]->send(1, 0, 1, &sent, sizeof(sent)), CommError);
  // The others are unaffected.
  world[2]->send(0, 0, 3, &sent, sizeof(sent));
  world[0]->recv(2, 0, 3, &value, sizeof(value), kRecvTimeout);
  EXPECT_EQ(value, 5);
}

TEST_F(ShmTransportWorld, LeavesNoSegmentsInDevShmOnceSetUp) {
  auto world = make_shm_world(2, *store_, "shm-unlinked");
  for (int src = 0; src < 2; ++src) {
    const std::string path =
        "/dev/shm" + shm::ring_name("shm-unlinked", 1, src, 1 - src, static_cast<long>(::getpid()));
    struct stat info {};
    EXPECT_NE(::stat(path.c_str(), &info), 0) << path << " still exists";
  }
}

TEST_F(ShmTransportWorld, ARankThatNeverArrivesFailsSetupByTheTimeoutNamingIt) {
  try {
    ShmTransport alone(TcpWorld{0, 2, "shm-alone"}, *store_, short_timeouts(milliseconds(300)),
                       kTestRingBytes);
    FAIL() << "set up a world of 2 with one rank";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 1 did not arrive"), std::string::npos) << what;
  }
}

TEST(ShmHost, ThreadsOfOneProcessAllCountThemselvesOnTheirHost) {
  auto store = make_memory_store();
  std::vector<int> answers(3, -1);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      answers[static_cast<size_t>(r)] = ranks_on_this_host(TcpWorld{r, 3, "host"}, *store, seconds(10));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(answers, std::vector<int>({3, 3, 3}));
}

TEST(ShmHost, ARankOnAnotherHostIsNotCounted) {
  auto store = make_memory_store();
  // Rank 1 "lives" elsewhere: it published a different identity under the key rank 0 reads.
  store->add("tern/elsewhere/shm/host_checks_by/1", 1);
  store->set("tern/elsewhere/shm/1/host/1", "another-host|boot|ipc");
  EXPECT_EQ(ranks_on_this_host(TcpWorld{0, 2, "elsewhere"}, *store, seconds(10)), 1);
}

}  // namespace
}  // namespace tern
