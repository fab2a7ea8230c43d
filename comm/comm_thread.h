// CommThread: the communication thread every backend runs its operations on, one at a time in the
// order they were queued, so callers overlap computation with communication through Work handles.
// A caller that waits for an operation nobody has started yet, and that is next in line, runs it
// itself: a blocking call then costs no thread hand-off (two wake-ups fewer per operation).
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "comm/communicator.h"

namespace tern {

class CommThread {
 public:
  CommThread();
  // Finishes every queued operation, then joins.
  ~CommThread();
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  // Queues op; its exception (if any) is rethrown by the returned Work's wait().
  WorkPtr enqueue(std::function<void()> op);

 private:
  struct Item;
  void loop();
  // Runs item (already popped, with busy_ set) and reports it; then frees the queue for others.
  void execute(const std::shared_ptr<Item>& item);
  // Called by Work::wait(): if item is next and nothing runs, pops and runs it on the caller.
  void run_if_next(Item* item);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Item>> queue_;
  bool busy_ = false;  // an operation is running, on this thread or on a waiting caller's
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tern
