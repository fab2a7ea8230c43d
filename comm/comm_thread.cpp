#include "comm/comm_thread.h"

#include "comm/thread_name.h"

namespace tern {

// One queued operation and the Work that reports on it.
struct CommThread::Item : Work {
  CommThread* owner = nullptr;
  std::function<void()> op;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;

  void wait() override {
    owner->run_if_next(this);
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

CommThread::CommThread() : thread_([this] { loop(); }) { name_thread(thread_, "tern-comm"); }

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
  item->owner = this;
  item->op = std::move(op);
  {
    std::lock_guard lock(mu_);
    queue_.push_back(item);
  }
  // A blocking call's caller runs it itself when it is next; else whoever runs the operation
  // before it wakes the thread when done (execute), so it is never left waiting.
  if (!detail::starting_blocking_call()) cv_.notify_one();
  return item;
}

void CommThread::run_if_next(Item* item) {
  std::shared_ptr<Item> mine;
  {
    std::lock_guard lock(mu_);
    if (busy_ || queue_.empty() || queue_.front().get() != item) return;
    mine = queue_.front();
    queue_.pop_front();
    busy_ = true;
  }
  execute(mine);
}

void CommThread::execute(const std::shared_ptr<Item>& item) {
  std::exception_ptr error;
  try {
    item->op();
  } catch (...) {
    error = std::current_exception();
  }
  item->op = nullptr;  // release captured tensors before reporting
  bool more = false;
  {
    std::lock_guard lock(mu_);
    busy_ = false;
    more = !queue_.empty() || stopping_;
  }
  if (more) cv_.notify_all();  // the thread may take the next operation now (none waits otherwise)
  item->finish(error);
}

void CommThread::loop() {
  for (;;) {
    std::shared_ptr<Item> item;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return (stopping_ && !busy_) || (!busy_ && !queue_.empty()); });
      if (queue_.empty()) return;  // stopping, and everything queued has run
      item = queue_.front();
      queue_.pop_front();
      busy_ = true;
    }
    execute(item);
  }
}

}  // namespace tern
