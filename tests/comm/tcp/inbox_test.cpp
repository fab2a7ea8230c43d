// The Inbox on its own, fed by the test instead of a link: which recv gets which message when
// several are posted for one mailbox, what a timeout, a dead peer, a wrong length or a cancel does
// to a posted recv, and that a cancelled recv's buffer is never written once cancel returns.
#include "comm/tcp/inbox.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/error_of.h"

namespace tern {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::error_of;

constexpr milliseconds kWait = seconds(10);

// An inbox of rank 0 for messages from rank 1, with a link the test plays: arrive() is the reader
// thread finding a whole message on the link. Closing the link (the inbox does it on death) makes a
// stalled reader give up, as a socket shut down under a blocked recv does.
class InboxTest : public ::testing::Test {
 protected:
  Inbox inbox_{0, 1, "", [this] { close_link(); }};

  // One int message of the given value, read from the link in one go.
  bool arrive(uint64_t tag, int value) {
    return inbox_.receive(0, tag, sizeof(value), [&](void* data, size_t bytes) {
      std::memcpy(data, &value, bytes);
      return std::string();
    });
  }
  bool arrive_bytes(uint64_t tag, const std::vector<char>& payload) {
    return inbox_.receive(0, tag, payload.size(), [&](void* data, size_t bytes) {
      std::memcpy(data, payload.data(), bytes);
      return std::string();
    });
  }
  // A message whose payload trickles in: the reader has claimed the recv it is for (if one is
  // posted) and blocks until release() or the link closes; it then writes `value` (or gives up).
  std::future<bool> arrive_slowly(uint64_t tag, int value) {
    return std::async(std::launch::async, [this, tag, value] {
      return inbox_.receive(0, tag, sizeof(value), [&](void* data, size_t bytes) {
        std::unique_lock lock(mu_);
        reading_ = true;
        changed_.notify_all();
        changed_.wait(lock, [&] { return released_ || closed_; });
        if (closed_) return std::string("disconnected (closed by the test)");
        std::memcpy(data, &value, bytes);
        return std::string();
      });
    });
  }
  void wait_until_reading() {
    std::unique_lock lock(mu_);
    changed_.wait(lock, [&] { return reading_; });
  }
  void release() {
    std::lock_guard lock(mu_);
    released_ = true;
    changed_.notify_all();
  }
  void close_link() {
    std::lock_guard lock(mu_);
    closed_ = true;
    changed_.notify_all();
  }
  bool link_closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }
  // A plain recv: post and wait at once.
  int recv(uint64_t tag) {
    int value = -1;
    Inbox::Post post(0, tag, &value, sizeof(value));
    inbox_.post(post);
    inbox_.wait(post, kWait);
    return value;
  }

  std::mutex mu_;
  std::condition_variable changed_;
  bool reading_ = false, released_ = false, closed_ = false;
};

TEST_F(InboxTest, PostedRecvsOfOneMailboxGetItsMessagesInPostOrderWhateverTheWaitOrder) {
  ASSERT_TRUE(arrive(5, 100));  // queued before any recv is posted
  ASSERT_TRUE(arrive(5, 101));
  std::vector<int> got(6, -1);
  std::vector<std::unique_ptr<Inbox::Post>> posts;
  for (int& value : got) {
    posts.push_back(std::make_unique<Inbox::Post>(0, 5, &value, sizeof(value)));
    inbox_.post(*posts.back());
  }
  for (int v = 102; v < 106; ++v) ASSERT_TRUE(arrive(5, v));  // straight into the posted buffers
  EXPECT_EQ(got, std::vector<int>({-1, -1, 102, 103, 104, 105})) << "queued messages are copied by wait";
  for (size_t i = posts.size(); i-- > 0;) inbox_.wait(*posts[i], kWait);  // last first
  EXPECT_EQ(got, std::vector<int>({100, 101, 102, 103, 104, 105}));
}

TEST_F(InboxTest, APlainRecvAfterAPostGetsTheMessageAfterThePosts) {
  int first = -1;
  Inbox::Post posted(0, 5, &first, sizeof(first));
  inbox_.post(posted);
  auto plain = std::async(std::launch::async, [&] { return recv(5); });  // posts itself behind
  std::this_thread::sleep_for(milliseconds(20));
  ASSERT_TRUE(arrive(5, 1));
  ASSERT_TRUE(arrive(5, 2));
  EXPECT_EQ(plain.get(), 2);
  inbox_.wait(posted, kWait);
  EXPECT_EQ(first, 1);
}

TEST_F(InboxTest, APostedRecvThatTimesOutLeavesTheNextMessageToTheNextRecv) {
  int value = -1;
  Inbox::Post posted(0, 5, &value, sizeof(value));
  inbox_.post(posted);
  const std::string what = error_of([&] { inbox_.wait(posted, milliseconds(50)); });
  EXPECT_NE(what.find("rank 0: recv of 4 bytes (context 0, tag 5) from rank 1 timed out after 50 ms"),
            std::string::npos)
      << what;
  ASSERT_TRUE(arrive(5, 7));
  EXPECT_EQ(recv(5), 7);
  EXPECT_EQ(value, -1);
}

TEST_F(InboxTest, AMessageOfAnotherLengthFailsItsPostedRecvNamingBothLengthsAndTheNextOneIsFine) {
  for (const bool posted_first : {true, false}) {
    SCOPED_TRACE(posted_first ? "posted before the message came" : "message queued before the post");
    const uint64_t tag = posted_first ? 1 : 2;
    std::vector<char> buffer(8, 'x');
    Inbox::Post posted(0, tag, buffer.data(), buffer.size());
    if (posted_first) inbox_.post(posted);
    ASSERT_TRUE(arrive_bytes(tag, std::vector<char>(12, 'm')));
    if (!posted_first) inbox_.post(posted);
    const std::string what = error_of([&] { inbox_.wait(posted, kWait); });
    EXPECT_NE(what.find("expected 8 bytes but the message has 12"), std::string::npos) << what;
    EXPECT_EQ(buffer, std::vector<char>(8, 'x')) << "a message of the wrong length wrote the buffer";
    ASSERT_TRUE(arrive(tag, 3));
    EXPECT_EQ(recv(tag), 3);
  }
}

TEST_F(InboxTest, APeerDeathFailsWaitingPostsButWholeMessagesAreStillDelivered) {
  int a = -1, b = -1, c = -1;
  Inbox::Post first(0, 5, &a, sizeof(a)), second(0, 5, &b, sizeof(b));
  inbox_.post(first);
  inbox_.post(second);
  ASSERT_TRUE(arrive(5, 1));
  auto waiting =
      std::async(std::launch::async, [&] { return error_of([&] { inbox_.wait(second, kWait); }); });
  std::this_thread::sleep_for(milliseconds(20));
  inbox_.mark_dead("disconnected (EOF)");
  EXPECT_TRUE(link_closed()) << "death closes the link";
  EXPECT_NE(
      waiting.get().find("rank 0: peer rank 1 disconnected (EOF) during recv of 4 bytes (context 0, tag 5)"),
      std::string::npos);
  inbox_.wait(first, kWait);
  EXPECT_EQ(a, 1);
  Inbox::Post late(0, 5, &c, sizeof(c));
  inbox_.post(late);
  EXPECT_NE(error_of([&] { inbox_.wait(late, kWait); }).find("disconnected (EOF)"), std::string::npos);
}

TEST_F(InboxTest, CancellingAWaitingPostLeavesItsMessageToTheNextPost) {
  int a = -1, b = -1;
  Inbox::Post cancelled(0, 5, &a, sizeof(a)), next(0, 5, &b, sizeof(b));
  inbox_.post(cancelled);
  inbox_.post(next);
  inbox_.cancel(cancelled, kWait);
  ASSERT_TRUE(arrive(5, 9));
  inbox_.wait(next, kWait);
  EXPECT_EQ(b, 9);
  EXPECT_EQ(a, -1);
}

TEST_F(InboxTest, CancellingAPostWhoseMessageCameDiscardsThatMessage) {
  int a = -1;
  Inbox::Post cancelled(0, 5, &a, sizeof(a));
  inbox_.post(cancelled);
  ASSERT_TRUE(arrive(5, 1));
  inbox_.cancel(cancelled, kWait);
  ASSERT_TRUE(arrive(5, 2));
  EXPECT_EQ(recv(5), 2);
  inbox_.cancel(cancelled, kWait);  // done: nothing happens
}

TEST_F(InboxTest, CancellingAPostBeingFilledWaitsForTheCopyToEnd) {
  int value = -1;
  Inbox::Post posted(0, 5, &value, sizeof(value));
  inbox_.post(posted);
  auto reader = arrive_slowly(5, 42);
  wait_until_reading();
  auto cancelling = std::async(std::launch::async, [&] { inbox_.cancel(posted, kWait); });
  EXPECT_EQ(cancelling.wait_for(milliseconds(50)), std::future_status::timeout)
      << "cancel returned while the reader was still writing the buffer";
  release();
  cancelling.get();
  EXPECT_TRUE(reader.get());
  EXPECT_FALSE(inbox_.dead()) << "a copy that finished leaves the link alive";
  ASSERT_TRUE(arrive(5, 43));
  EXPECT_EQ(recv(5), 43);
}

TEST_F(InboxTest, CancellingAPostWhoseSenderStalledMidMessageCutsTheLinkAfterTheGrace) {
  int value = -1;
  Inbox::Post posted(0, 5, &value, sizeof(value));
  inbox_.post(posted);
  auto reader = arrive_slowly(5, 42);  // never released: the sender stalled
  wait_until_reading();
  const auto start = std::chrono::steady_clock::now();
  inbox_.cancel(posted, milliseconds(100));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(100));
  EXPECT_FALSE(reader.get()) << "the reader gave the buffer back when the link was cut";
  EXPECT_EQ(value, -1);
  const std::string what = error_of([&] { recv(6); });
  EXPECT_NE(
      what.find("peer rank 1 stalled in the middle of a message for 100 ms after its recv was abandoned"),
      std::string::npos)
      << what;
}

TEST_F(InboxTest, AWaitThatTimesOutWhileItsMessageIsCopiedInCutsTheLinkAndFails) {
  int value = -1;
  Inbox::Post posted(0, 5, &value, sizeof(value));
  inbox_.post(posted);
  auto reader = arrive_slowly(5, 42);  // never released
  wait_until_reading();
  const std::string what = error_of([&] { inbox_.wait(posted, milliseconds(50)); });
  EXPECT_NE(what.find("peer rank 1 stalled in the middle of a message for 50 ms"), std::string::npos) << what;
  EXPECT_FALSE(reader.get());
  EXPECT_TRUE(inbox_.dead());
}

TEST_F(InboxTest, MessagesToItselfGoToPostsInOrder) {
  Inbox self(0, 0, "", [] {});
  int a = -1;
  Inbox::Post posted(0, 5, &a, sizeof(a));
  self.post(posted);
  const int one = 1, two = 2;
  self.deliver(0, 5, &one, sizeof(one));
  self.deliver(0, 5, &two, sizeof(two));
  int b = -1;
  Inbox::Post plain(0, 5, &b, sizeof(b));
  self.post(plain);
  self.wait(plain, kWait);
  self.wait(posted, kWait);
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
}

TEST_F(InboxTest, WaitingTwiceForOnePostIsAnError) {
  int value = -1;
  Inbox::Post posted(0, 5, &value, sizeof(value));
  inbox_.post(posted);
  ASSERT_TRUE(arrive(5, 1));
  inbox_.wait(posted, kWait);
  EXPECT_NE(error_of([&] { inbox_.wait(posted, kWait); }).find("already waited"), std::string::npos);
}

}  // namespace
}  // namespace tern
