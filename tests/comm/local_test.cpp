// The local backend's pieces on their own: the in-memory transport's matching, length check and
// failure modes, the memory Store, and run_local's error handling.
#include "comm/local/local.h"

#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "comm/local/local_transport.h"
#include "tests/comm/tcp/transport_checks.h"

namespace tern {
namespace {

using std::chrono::milliseconds;

template <typename Fn>
std::string comm_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const CommError& e) {
    return e.what();
  }
  return "no CommError";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(LocalTransport, DeliversInOrderPerSourceContextAndTag) {
  auto transports = make_local_transports(2);
  LocalTransport& a = *transports[0];
  LocalTransport& b = *transports[1];
  const int first = 1, second = 2, other_context = 3, other_tag = 4;
  a.send(1, 7, 0, &first, sizeof first);
  a.send(1, 8, 0, &other_context, sizeof other_context);
  a.send(1, 7, 1, &other_tag, sizeof other_tag);
  a.send(1, 7, 0, &second, sizeof second);
  int got = 0;
  b.recv(0, 7, 1, &got, sizeof got, milliseconds(1000));
  EXPECT_EQ(got, other_tag);
  b.recv(0, 7, 0, &got, sizeof got, milliseconds(1000));
  EXPECT_EQ(got, first);
  b.recv(0, 7, 0, &got, sizeof got, milliseconds(1000));
  EXPECT_EQ(got, second);
  b.recv(0, 8, 0, &got, sizeof got, milliseconds(1000));
  EXPECT_EQ(got, other_context);
  EXPECT_EQ(a.bytes_sent(), 4 * sizeof(int));
  EXPECT_EQ(b.bytes_received(), 4 * sizeof(int));
}

TEST(LocalTransport, AMessageOfTheWrongLengthIsACommErrorNamingBothLengths) {
  auto transports = make_local_transports(2);
  const char data[12] = {};
  transports[0]->send(1, 0, 0, data, sizeof data);
  char got[8];
  const std::string error =
      comm_error_of([&] { transports[1]->recv(0, 0, 0, got, sizeof got, milliseconds(1000)); });
  EXPECT_TRUE(contains(error, "rank 1: recv from rank 0 expected 8 bytes but the message has 12 bytes"))
      << error;
}

TEST(LocalTransport, RecvTimesOutWithAMessageNamingBothRanks) {
  auto transports = make_local_transports(3);
  char got[1];
  const std::string error =
      comm_error_of([&] { transports[2]->recv(1, 0, 0, got, sizeof got, milliseconds(20)); });
  EXPECT_EQ(error, "rank 2: recv from rank 1 timed out after 20 ms");
}

TEST(LocalTransport, ABrokenFabricFailsWaitingAndLaterOperationsNamingTheFailedRank) {
  std::shared_ptr<LocalFabric> fabric;
  auto transports = make_local_transports(3, &fabric);
  std::string waiting_error;
  std::thread waiter([&] {
    char got[1];
    waiting_error = comm_error_of([&] { transports[0]->recv(1, 0, 0, got, 1, std::chrono::seconds(10)); });
  });
  fabric->fail(2, "out of memory");
  waiter.join();
  EXPECT_TRUE(
      contains(waiting_error, "rank 0: recv from rank 1 abandoned because rank 2 failed: out of memory"))
      << waiting_error;
  const char byte = 0;
  EXPECT_TRUE(contains(comm_error_of([&] { transports[1]->send(0, 0, 0, &byte, 1); }), "rank 2 failed"));
}

TEST(LocalTransport, MessagesSentBeforeTheSenderLeftAreStillDelivered) {
  auto transports = make_local_transports(2);
  const int value = 5;
  transports[0]->send(1, 0, 0, &value, sizeof value);
  transports[0].reset();
  int got = 0;
  transports[1]->recv(0, 0, 0, &got, sizeof got, milliseconds(1000));
  EXPECT_EQ(got, value);
  EXPECT_TRUE(
      contains(comm_error_of([&] { transports[1]->recv(0, 0, 0, &got, sizeof got, milliseconds(10000)); }),
               "has shut down"));
}

// Transport::post_recv: the sender copies straight into a posted buffer. The checks shared with
// the tcp backend's transports, then the local backend's own failure modes.
TEST(LocalTransport, PostedRecvsOfOneTagTakeMessagesInPostOrderAlongsidePlainRecvs) {
  auto transports = make_local_transports(2);
  testing::check_posted_recvs_take_messages_in_post_order(*transports[0], *transports[1], 4);
  testing::check_posted_recvs_take_messages_in_post_order(*transports[1], *transports[1], 5);
}

TEST(LocalTransport, AWindowOfPostedRecvsKeepsUpWithAStream) {
  auto transports = make_local_transports(2);
  testing::check_a_window_of_posted_recvs_keeps_up_with_a_stream(*transports[0], *transports[1], 4);
}

TEST(LocalTransport, APostedRecvThatTimesOutLeavesTheMessageToTheNextRecv) {
  auto transports = make_local_transports(2);
  testing::check_a_posted_recv_that_times_out_leaves_the_message_to_the_next_recv(*transports[0],
                                                                                  *transports[1], 4);
}

// The sender reduces into a posted reducing recv; Transport's default (scratch of its own, reduced in
// wait()) over the same fabric.
TEST(LocalTransport, ReducingRecvsFoldEachMessageIntoTheirBuffer) {
  auto transports = make_local_transports(2);
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(*transports[0], *transports[1], 4);
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(*transports[1], *transports[1], 5);
  auto plain = make_local_transports(2);
  struct DefaultReducing final : Transport {
    explicit DefaultReducing(Transport& t) : inner(t) {}
    int rank() const override { return inner.rank(); }
    int size() const override { return inner.size(); }
    void send(int dst, uint64_t c, uint64_t t, const void* d, size_t b) override { inner.send(dst, c, t, d, b); }
    void recv(int src, uint64_t c, uint64_t t, void* d, size_t b, std::chrono::milliseconds ms) override {
      inner.recv(src, c, t, d, b, ms);
    }
    std::unique_ptr<PostedRecv> post_recv(int src, uint64_t c, uint64_t t, void* d, size_t b) override {
      return inner.post_recv(src, c, t, d, b);
    }
    uint64_t bytes_sent() const override { return inner.bytes_sent(); }
    uint64_t bytes_received() const override { return inner.bytes_received(); }
    Transport& inner;
  };
  DefaultReducing from(*plain[0]), to(*plain[1]);
  testing::check_reducing_recvs_fold_each_message_into_the_buffer(from, to, 6);
}

TEST(LocalTransport, APostedRecvOfTheWrongLengthFailsNamingBothLengths) {
  auto transports = make_local_transports(2);
  testing::check_a_posted_recv_of_the_wrong_length_fails_naming_both(*transports[0], *transports[1], 4);
}

TEST(LocalTransport, APostedRecvDestroyedUnwaitedGivesItsBufferBack) {
  auto transports = make_local_transports(2);
  testing::check_a_posted_recv_destroyed_unwaited_gives_its_buffer_back(*transports[0], *transports[1], 4);
}

TEST(LocalTransport, PostedRecvsFailWhenTheirSenderLeavesOrTheFabricBreaks) {
  std::shared_ptr<LocalFabric> fabric;
  auto transports = make_local_transports(3, &fabric);
  int got = 0;
  const int value = 6;
  transports[0]->send(2, 0, 1, &value, sizeof value);
  auto before = transports[2]->post_recv(0, 0, 1, &got, sizeof got);
  auto after = transports[2]->post_recv(0, 0, 1, &got, sizeof got);
  transports[0].reset();
  before->wait(milliseconds(1000));  // sent before it left: still delivered
  EXPECT_EQ(got, value);
  EXPECT_TRUE(contains(comm_error_of([&] { after->wait(milliseconds(10000)); }), "rank 0 has shut down"));

  auto waiting = transports[2]->post_recv(1, 0, 1, &got, sizeof got);
  std::thread breaker([&] {
    std::this_thread::sleep_for(milliseconds(20));
    fabric->fail(1, "out of memory");
  });
  const std::string error = comm_error_of([&] { waiting->wait(std::chrono::seconds(10)); });
  breaker.join();
  EXPECT_TRUE(contains(error, "rank 2: recv from rank 1 abandoned because rank 1 failed: out of memory"))
      << error;
}

TEST(LocalTransport, APostedRecvCountsItsBytesWhenItCompletes) {
  auto transports = make_local_transports(2);
  const double value = 2.5;
  double got = 0;
  auto posted = transports[1]->post_recv(0, 0, 0, &got, sizeof got);
  transports[0]->send(1, 0, 0, &value, sizeof value);
  EXPECT_EQ(transports[1]->bytes_received(), 0u);
  posted->wait(milliseconds(1000));
  EXPECT_EQ(got, value);
  EXPECT_EQ(transports[1]->bytes_received(), sizeof value);
}

TEST(RunLocal, RethrowsTheFirstExceptionAfterEveryRankEnded) {
  std::atomic<int> finished{0};
  EXPECT_THROW(run_local(4,
                         [&](Communicator& comm) {
                           if (comm.rank() == 3) throw std::invalid_argument("bad input on rank 3");
                           finished.fetch_add(1);
                         }),
               std::invalid_argument);
  EXPECT_EQ(finished.load(), 3);
}

TEST(RunLocal, RejectsAnEmptyWorld) {
  EXPECT_THROW(run_local(0, [](Communicator&) {}), Error);
}

TEST(MemoryStore, GetReturnsTheValueSetByAnotherThread) {
  auto store = make_memory_store();
  std::thread setter([&] { store->set("addr/1", "127.0.0.1:4242"); });
  EXPECT_EQ(store->get("addr/1", std::chrono::seconds(10)), "127.0.0.1:4242");
  setter.join();
  store->set("addr/1", "changed");
  EXPECT_EQ(store->get("addr/1", milliseconds(1)), "changed");
}

TEST(MemoryStore, GetOfAMissingKeyTimesOutNamingTheKey) {
  auto store = make_memory_store();
  const std::string error = comm_error_of([&] { store->get("never/set", milliseconds(20)); });
  EXPECT_TRUE(contains(error, "get('never/set') timed out after 20 ms")) << error;
}

TEST(MemoryStore, AddIsAtomicAcrossThreads) {
  auto store = make_memory_store();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) store->add("count", 1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(store->add("count", 0), 4000);
  EXPECT_EQ(store->get("count", milliseconds(1)), "4000");
  store->set("text", "abc");
  EXPECT_THROW(store->add("text", 1), Error);
}

}  // namespace
}  // namespace tern
