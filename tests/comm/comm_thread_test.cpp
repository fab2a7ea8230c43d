#include "comm/comm_thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace tern {
namespace {

// Queued operations run one at a time, in the order they were queued, whoever runs them.
TEST(CommThread, RunsQueuedOperationsInOrderWhetherWaitedInOrderOrNot) {
  CommThread thread;
  std::vector<int> ran;
  std::vector<WorkPtr> work;
  for (int i = 0; i < 50; ++i) {
    work.push_back(thread.enqueue([&ran, i] {
      std::this_thread::sleep_for(std::chrono::microseconds(i % 3 == 0 ? 200 : 0));
      ran.push_back(i);
    }));
  }
  for (int i = 49; i >= 0; --i) work[static_cast<size_t>(i)]->wait();
  ASSERT_EQ(ran.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(ran[static_cast<size_t>(i)], i);
}

// An operation queued for a blocking call does not wake the thread, and finishing one wakes it only
// when more are queued: the caller runs it. So on an idle CommThread the blocking calls run on the
// caller's thread (with the wake-ups, 74-481 of these 20 000 ran on the communication thread). A
// condition variable may wake spuriously, hence a margin of 2.
TEST(CommThread, BlockingCallsOnAnIdleThreadRunOnTheCallersThread) {
  CommThread thread;
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the thread is waiting by now
  int elsewhere = 0;
  for (int i = 0; i < 20000; ++i) {
    std::thread::id ran_on;
    WorkPtr work;
    {
      detail::BlockingCall call;
      work = thread.enqueue([&] { ran_on = std::this_thread::get_id(); });
    }
    work->wait();
    elsewhere += ran_on != std::this_thread::get_id();
  }
  EXPECT_LE(elsewhere, 2);
}

// A blocking call queued behind asynchronous operations waits for them and still completes: whoever
// finishes the operation before it wakes the thread for it. Its error reaches its caller.
TEST(CommThread, ABlockingCallBehindQueuedOperationsRunsAfterThemAndReportsItsError) {
  CommThread thread;
  std::atomic<int> done{0};
  std::vector<WorkPtr> before;
  for (int i = 0; i < 5; ++i) {
    before.push_back(thread.enqueue([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      ++done;
    }));
  }
  WorkPtr work;
  {
    detail::BlockingCall call;
    work = thread.enqueue([&] {
      EXPECT_EQ(done.load(), 5);
      throw std::runtime_error("the blocking one failed");
    });
  }
  EXPECT_THROW(work->wait(), std::runtime_error);
  for (auto& w : before) w->wait();
  EXPECT_FALSE(detail::starting_blocking_call());
}

}  // namespace
}  // namespace tern
