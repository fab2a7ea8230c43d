#include "comm/local/local_transport.h"

#include <algorithm>
#include <cstring>

#include "comm/communicator.h"

namespace tern {

LocalFabric::LocalFabric(int size) {
  TERN_CHECK(size >= 1, "local world: size ", size, " must be at least 1");
  left_.reset(new std::atomic<bool>[static_cast<size_t>(size)]);
  for (int r = 0; r < size; ++r) {
    mailboxes_.push_back(std::make_unique<Mailbox>());
    left_[static_cast<size_t>(r)] = false;
  }
}

void LocalFabric::throw_if_broken(int rank, const char* op, int peer) const {
  if (!broken_.load()) return;
  std::lock_guard lock(failure_mu_);
  throw CommError(detail::concat("rank ", rank, ": ", op, " rank ", peer, " abandoned because rank ",
                                 failed_rank_, " failed: ", failure_));
}

LocalFabric::Mailbox& LocalFabric::mailbox_of(int dst, int src, const char* op) {
  if (src < 0 || src >= size() || dst < 0 || dst >= size()) {
    const bool sending = std::string(op) == "send to";
    throw CommError(detail::concat("rank ", sending ? src : dst, ": ", op, " rank ", sending ? dst : src,
                                   ", which is not in [0, ", size(), ")"));
  }
  return *mailboxes_[static_cast<size_t>(dst)];
}

void LocalFabric::file_locked(Mailbox& box, const Key& key, std::vector<char> message) {
  const auto posted = box.posted.find(key);
  if (posted == box.posted.end()) {
    box.queues[key].push_back(std::move(message));
    return;
  }
  Post* target = posted->second.front();
  posted->second.pop_front();
  if (posted->second.empty()) box.posted.erase(posted);
  target->message_ = std::move(message);
  target->state_ = Post::State::arrived;
}

void LocalFabric::unpost_locked(Mailbox& box, Post& post) {
  const auto posted = box.posted.find(Key{post.src_, post.context_, post.tag_});
  if (posted == box.posted.end()) return;
  auto& queue = posted->second;
  queue.erase(std::remove(queue.begin(), queue.end(), &post), queue.end());
  if (queue.empty()) box.posted.erase(posted);
}

void LocalFabric::deliver(int src, int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  Mailbox& box = mailbox_of(dst, src, "send to");
  const Key key{src, context, tag};
  auto check_open = [&] {
    throw_if_broken(src, "send to", dst);
    if (left_[static_cast<size_t>(dst)].load()) {
      throw CommError(detail::concat("rank ", src, ": send to rank ", dst, " failed: rank ", dst,
                                     " has shut down (its communicator was destroyed)"));
    }
  };
  Post* target = nullptr;
  {
    std::lock_guard lock(box.mu);
    check_open();
    const auto posted = box.posted.find(key);
    if (posted != box.posted.end() && posted->second.front()->bytes_ == bytes) {
      target = posted->second.front();
      posted->second.pop_front();
      if (posted->second.empty()) box.posted.erase(posted);
      target->state_ = Post::State::filling;
    }
  }
  if (target != nullptr) {  // the recv is waiting: one copy (or reduction), outside the lock
    land_message(target->data_, data, bytes, target->reduce_);
    {
      std::lock_guard lock(box.mu);
      target->state_ = Post::State::filled;  // the recv may return from here on
    }
    box.arrived.notify_all();
    return;
  }
  // Copy outside the lock: the receiver's mailbox is held only to link the message in.
  std::vector<char> message(static_cast<const char*>(data), static_cast<const char*>(data) + bytes);
  {
    std::lock_guard lock(box.mu);
    check_open();
    file_locked(box, key, std::move(message));
  }
  box.arrived.notify_all();
}

void LocalFabric::post(Post& post) {
  Mailbox& box = mailbox_of(post.dst_, post.src_, "recv from");
  std::lock_guard lock(box.mu);
  TERN_CHECK(post.state_ == Post::State::unposted, "LocalFabric::post: a recv was posted twice");
  const Key key{post.src_, post.context_, post.tag_};
  const auto queued = box.queues.find(key);
  if (queued == box.queues.end()) {
    box.posted[key].push_back(&post);
    post.state_ = Post::State::waiting;
    return;
  }
  post.message_ = std::move(queued->second.front());
  post.state_ = Post::State::arrived;
  queued->second.pop_front();
  if (queued->second.empty()) box.queues.erase(queued);  // every collective uses a fresh tag
}

void LocalFabric::wait(Post& post, std::chrono::milliseconds timeout) {
  // A deadline far beyond any run stands in for "forever" without overflowing the clock.
  const auto deadline = std::chrono::steady_clock::now() +
                        std::min<std::chrono::milliseconds>(timeout, std::chrono::hours(24 * 365));
  const int dst = post.dst_, src = post.src_;
  Mailbox& box = mailbox_of(dst, src, "recv from");
  std::unique_lock lock(box.mu);
  auto give_up = [&] {
    unpost_locked(box, post);
    post.message_.clear();
    post.state_ = Post::State::done;
  };
  for (;;) {
    // A broken world fails every recv at once, even one whose message came (as before posting).
    const bool settled = post.state_ == Post::State::filled || post.state_ == Post::State::arrived;
    if (broken_.load() && (settled || post.state_ == Post::State::waiting)) {
      give_up();
      throw_if_broken(dst, "recv from", src);
    }
    switch (post.state_) {
      case Post::State::unposted:
      case Post::State::done:
        TERN_CHECK(false, "LocalFabric::wait: a recv that is not posted (or was already waited for)");
        break;
      case Post::State::filled:
        post.state_ = Post::State::done;
        return;
      case Post::State::arrived: {
        post.state_ = Post::State::done;
        const std::vector<char> message = std::move(post.message_);
        lock.unlock();
        if (message.size() != post.bytes_) {
          throw CommError(
              detail::concat("rank ", dst, ": recv from rank ", src, " expected ", post.bytes_,
                             " bytes but the message has ", message.size(),
                             " bytes (do the ranks disagree on the size or order of operations?)"));
        }
        land_message(post.data_, message.data(), post.bytes_, post.reduce_);
        return;
      }
      case Post::State::filling:  // the sender is copying: it finishes without waiting for anyone
        box.arrived.wait(lock);
        continue;
      case Post::State::waiting:
        if (left_[static_cast<size_t>(src)].load()) {
          give_up();
          throw CommError(
              detail::concat("rank ", dst, ": recv from rank ", src, " failed: rank ", src,
                             " has shut down (its communicator was destroyed) without sending it"));
        }
        if (box.arrived.wait_until(lock, deadline) == std::cv_status::timeout &&
            post.state_ == Post::State::waiting) {
          give_up();
          throw_if_broken(dst, "recv from", src);
          throw CommError(detail::concat("rank ", dst, ": recv from rank ", src, " timed out after ",
                                         timeout.count(), " ms"));
        }
        continue;
    }
  }
}

void LocalFabric::cancel(Post& post) {
  Mailbox& box = mailbox_of(post.dst_, post.src_, "recv from");
  std::unique_lock lock(box.mu);
  if (post.state_ == Post::State::waiting) unpost_locked(box, post);
  box.arrived.wait(lock, [&] { return post.state_ != Post::State::filling; });
  post.message_.clear();
  post.state_ = Post::State::done;
}

void LocalFabric::take(int dst, int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                       std::chrono::milliseconds timeout) {
  Post recv(dst, src, context, tag, data, bytes);
  post(recv);
  wait(recv, timeout);  // leaves the post done whether it returns or throws
}

void LocalFabric::wake_everyone() {
  for (auto& box : mailboxes_) {
    // Taking the lock orders this wake-up after any waiter's check of the flags.
    { std::lock_guard lock(box->mu); }
    box->arrived.notify_all();
  }
}

void LocalFabric::fail(int rank, const std::string& reason) {
  {
    std::lock_guard lock(failure_mu_);
    if (broken_.load()) return;  // the first failure is the one worth naming
    failed_rank_ = rank;
    failure_ = reason;
    broken_.store(true);
  }
  wake_everyone();
}

void LocalFabric::leave(int rank) {
  left_[static_cast<size_t>(rank)].store(true);
  wake_everyone();
}

void LocalTransport::send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  fabric_->deliver(rank_, dst, context, tag, data, bytes);
  sent_.fetch_add(bytes, std::memory_order_relaxed);
}

void LocalTransport::recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                          std::chrono::milliseconds timeout) {
  fabric_->take(rank_, src, context, tag, data, bytes, timeout);
  received_.fetch_add(bytes, std::memory_order_relaxed);
}

namespace {

class LocalRecv final : public PostedRecv {
 public:
  LocalRecv(LocalFabric& fabric, std::atomic<uint64_t>& received, int dst, int src, uint64_t context,
            uint64_t tag, void* data, size_t bytes, std::optional<RecvReduction> reduce = {})
      : PostedRecv(bytes),
        fabric_(fabric),
        received_(received),
        post_(dst, src, context, tag, data, bytes, reduce) {
    fabric_.post(post_);
  }
  ~LocalRecv() override { fabric_.cancel(post_); }
  void wait(std::chrono::milliseconds timeout) override {
    fabric_.wait(post_, timeout);
    received_.fetch_add(bytes(), std::memory_order_relaxed);
  }

 private:
  LocalFabric& fabric_;
  std::atomic<uint64_t>& received_;
  LocalFabric::Post post_;
};

}  // namespace

std::unique_ptr<PostedRecv> LocalTransport::post_recv(int src, uint64_t context, uint64_t tag, void* data,
                                                      size_t bytes) {
  return std::make_unique<LocalRecv>(*fabric_, received_, rank_, src, context, tag, data, bytes);
}

std::unique_ptr<PostedRecv> LocalTransport::post_recv_reduce(int src, uint64_t context, uint64_t tag, void* data,
                                                             size_t bytes, RecvReduction how) {
  check_reducing_recv(bytes, how);
  return std::make_unique<LocalRecv>(*fabric_, received_, rank_, src, context, tag, data, bytes, how);
}

std::vector<std::shared_ptr<LocalTransport>> make_local_transports(int n,
                                                                   std::shared_ptr<LocalFabric>* fabric) {
  auto shared = std::make_shared<LocalFabric>(n);
  std::vector<std::shared_ptr<LocalTransport>> transports;
  transports.reserve(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) transports.push_back(std::make_shared<LocalTransport>(shared, r));
  if (fabric != nullptr) *fabric = shared;
  return transports;
}

}  // namespace tern
