// SerialExecutor: one thread that runs queued tasks in order and hands back a Work per task, so
// GradSync can run a compressed bucket's reduction (several collectives plus compression) off the
// caller's thread while backward continues.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "comm/communicator.h"

namespace tern {

class SerialExecutor {
 public:
  SerialExecutor();
  ~SerialExecutor();  // runs what is queued, then joins
  SerialExecutor(const SerialExecutor&) = delete;
  SerialExecutor& operator=(const SerialExecutor&) = delete;

  // Queues task; its exception, if any, is rethrown by the Work's wait().
  WorkPtr submit(std::function<void()> task);

 private:
  struct Task;
  void loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Task>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tern
