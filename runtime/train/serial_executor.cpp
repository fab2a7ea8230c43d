#include "runtime/train/serial_executor.h"

#include <exception>

namespace tern {

struct SerialExecutor::Task : Work {
  std::function<void()> fn;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;

  void wait() override {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done; });
    if (error) std::rethrow_exception(error);
  }
  bool test() override {
    std::lock_guard lock(mu);
    return done;
  }
};

SerialExecutor::SerialExecutor() : thread_([this] { loop(); }) {}

SerialExecutor::~SerialExecutor() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

WorkPtr SerialExecutor::submit(std::function<void()> fn) {
  auto task = std::make_shared<Task>();
  task->fn = std::move(fn);
  {
    std::lock_guard lock(mu_);
    queue_.push_back(task);
  }
  cv_.notify_all();
  return task;
}

void SerialExecutor::loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    std::shared_ptr<Task> task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    try {
      task->fn();
    } catch (...) {
      task->error = std::current_exception();
    }
    {
      std::lock_guard done_lock(task->mu);
      task->done = true;
    }
    task->cv.notify_all();
    lock.lock();
  }
}

}  // namespace tern
