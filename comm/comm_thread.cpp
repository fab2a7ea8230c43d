#include "comm/comm_thread.h"

namespace tern {

// One queued operation and the Work that reports on it.
struct CommThread::Item : Work {
  std::function<void()> op;
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
  void finish(std::exception_ptr e) {
    {
      std::lock_guard lock(mu);
      error = e;
      done = true;
    }
    cv.notify_all();
  }
};

CommThread::CommThread() : thread_([this] { loop(); }) {}

CommThread::~CommThread() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

WorkPtr CommThread::enqueue(std::function<void()> op) {
  auto item = std::make_shared<Item>();
  item->op = std::move(op);
  {
    std::lock_guard lock(mu_);
    queue_.push_back(item);
  }
  cv_.notify_one();
  return item;
}

void CommThread::loop() {
  for (;;) {
    std::shared_ptr<Item> item;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has run
      item = queue_.front();
      queue_.pop_front();
    }
    std::exception_ptr error;
    try {
      item->op();
    } catch (...) {
      error = std::current_exception();
    }
    item->op = nullptr;  // release captured tensors before reporting
    item->finish(error);
  }
}

}  // namespace tern
