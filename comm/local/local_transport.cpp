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

void LocalFabric::deliver(int src, int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  if (dst < 0 || dst >= size()) {
    throw CommError(
        detail::concat("rank ", src, ": send to rank ", dst, ", which is not in [0, ", size(), ")"));
  }
  // Copy outside the lock: the receiver's mailbox is held only to link the message in.
  std::vector<char> message(static_cast<const char*>(data), static_cast<const char*>(data) + bytes);
  Mailbox& box = *mailboxes_[static_cast<size_t>(dst)];
  {
    std::lock_guard lock(box.mu);
    throw_if_broken(src, "send to", dst);
    if (left_[static_cast<size_t>(dst)].load()) {
      throw CommError(detail::concat("rank ", src, ": send to rank ", dst, " failed: rank ", dst,
                                     " has shut down (its communicator was destroyed)"));
    }
    box.queues[Key{src, context, tag}].push_back(std::move(message));
  }
  box.arrived.notify_all();
}

void LocalFabric::take(int dst, int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                       std::chrono::milliseconds timeout) {
  if (src < 0 || src >= size()) {
    throw CommError(
        detail::concat("rank ", dst, ": recv from rank ", src, ", which is not in [0, ", size(), ")"));
  }
  // A deadline far beyond any run stands in for "forever" without overflowing the clock.
  const auto deadline = std::chrono::steady_clock::now() +
                        std::min<std::chrono::milliseconds>(timeout, std::chrono::hours(24 * 365));
  Mailbox& box = *mailboxes_[static_cast<size_t>(dst)];
  std::vector<char> message;
  {
    std::unique_lock lock(box.mu);
    const Key key{src, context, tag};
    auto it = box.queues.end();
    for (;;) {
      throw_if_broken(dst, "recv from", src);
      it = box.queues.find(key);
      if (it != box.queues.end()) break;
      if (left_[static_cast<size_t>(src)].load()) {
        throw CommError(detail::concat("rank ", dst, ": recv from rank ", src, " failed: rank ", src,
                                       " has shut down (its communicator was destroyed) without sending it"));
      }
      if (box.arrived.wait_until(lock, deadline) == std::cv_status::timeout &&
          box.queues.find(key) == box.queues.end()) {
        throw_if_broken(dst, "recv from", src);
        throw CommError(detail::concat("rank ", dst, ": recv from rank ", src, " timed out after ",
                                       timeout.count(), " ms"));
      }
    }
    message = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) box.queues.erase(it);  // every collective uses a fresh tag
  }
  if (message.size() != bytes) {
    throw CommError(detail::concat("rank ", dst, ": recv from rank ", src, " expected ", bytes,
                                   " bytes but the message has ", message.size(),
                                   " bytes (do the ranks disagree on the size or order of operations?)"));
  }
  if (bytes > 0) std::memcpy(data, message.data(), bytes);
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
