// CommThread: the communication thread every backend runs its operations on, one at a time in the
// order they were queued, so callers overlap computation with communication through Work handles.
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

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Item>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tern
