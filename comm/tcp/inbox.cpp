#include "comm/tcp/inbox.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

namespace tern {

using Clock = std::chrono::steady_clock;

std::string message_text(uint64_t context, uint64_t tag, size_t bytes) {
  return std::to_string(bytes) + " bytes (context " + std::to_string(context) + ", tag " +
         std::to_string(tag) + ")";
}

std::string duration_text(std::chrono::milliseconds duration) {
  return std::to_string(duration.count()) + " ms";
}

void check_peer_rank(int rank, int size, int peer, const char* operation) {
  if (peer < 0 || peer >= size) {
    throw CommError("rank " + std::to_string(rank) + ": " + operation + " rank " + std::to_string(peer) +
                    ", outside the world of size " + std::to_string(size));
  }
}

void check_send_size(int rank, int dst, uint64_t context, uint64_t tag, size_t bytes, size_t max_bytes) {
  if (bytes > max_bytes) {
    throw CommError("rank " + std::to_string(rank) + ": send to rank " + std::to_string(dst) + " of " +
                    message_text(context, tag, bytes) + " exceeds max_message_bytes (" + std::to_string(max_bytes) +
                    ")");
  }
}

Inbox::Inbox(int rank, int peer, std::string link_note, bool has_reader, std::function<void()> close_link)
    : rank_(rank),
      peer_(peer),
      link_note_(std::move(link_note)),
      has_reader_(has_reader),
      close_link_(std::move(close_link)) {}

void Inbox::deliver(uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  Message message{bytes ? std::make_unique<uint8_t[]>(bytes) : nullptr, bytes};
  if (bytes) std::memcpy(message.bytes.get(), data, bytes);
  {
    std::lock_guard lock(mu_);
    mailboxes_[{context, tag}].push_back(std::move(message));
  }
  arrived_.notify_all();
}

// A posted recv takes the message only when it has the recv's length (else the recv must report
// the mismatch) and no earlier message of its mailbox is queued (else order would break).
Inbox::PostedRecv* Inbox::claim_posted(const MailboxKey& key, size_t bytes) {
  const auto posted = posted_.find(key);
  const auto queued = mailboxes_.find(key);
  if (posted == posted_.end() || posted->second->bytes != bytes ||
      (queued != mailboxes_.end() && !queued->second.empty())) {
    return nullptr;
  }
  PostedRecv* target = posted->second;
  target->state = PostedRecv::State::filling;
  posted_.erase(posted);
  return target;
}

bool Inbox::receive(uint64_t context, uint64_t tag, size_t bytes, const PayloadReader& read) {
  const MailboxKey key{context, tag};
  PostedRecv* target = nullptr;
  {
    std::lock_guard lock(mu_);
    target = claim_posted(key, bytes);
  }
  if (target) {  // straight into the waiting recv's buffer: one copy in all
    const std::string death = read(target->data, bytes);
    {
      std::lock_guard lock(mu_);
      // The recv may return as soon as it sees the state: target is not touched after this.
      target->state = death.empty() ? PostedRecv::State::filled : PostedRecv::State::failed;
      if (!death.empty()) record_death(death);
    }
    arrived_.notify_all();
    if (death.empty()) return true;
    close_link_();
    return false;
  }
  Message message;
  message.size = bytes;
  try {
    if (bytes) message.bytes.reset(new uint8_t[bytes]);
  } catch (const std::bad_alloc&) {
    mark_dead("sent a message of " + std::to_string(bytes) + " bytes, more than this rank could allocate");
    return false;
  }
  const std::string death = read(message.bytes.get(), bytes);
  if (!death.empty()) {
    mark_dead(death);
    return false;
  }
  {
    std::lock_guard lock(mu_);
    mailboxes_[key].push_back(std::move(message));
  }
  arrived_.notify_all();
  return true;
}

void Inbox::recv(uint64_t context, uint64_t tag, void* data, size_t bytes, std::chrono::milliseconds timeout,
                 Poller* poller) {
  const MailboxKey key{context, tag};
  const Clock::time_point deadline = Clock::now() + timeout;
  PostedRecv post{data, bytes};
  bool posted = false;
  std::unique_lock lock(mu_);
  auto unpost = [&] {
    if (!posted) return;
    const auto it = posted_.find(key);
    if (it != posted_.end() && it->second == &post) posted_.erase(it);
    posted = false;
  };
  for (;;) {
    switch (post.state) {
      case PostedRecv::State::filled:
        return;
      case PostedRecv::State::failed:
        throw peer_error_locked("recv", context, tag, bytes);
      case PostedRecv::State::filling:
        if (Clock::now() >= deadline) {
          // The sender stalled mid-message. Our buffer must be ours again before we return, so
          // the link goes: the reader then gives the buffer back at once.
          lock.unlock();
          mark_dead("stalled in the middle of a message for " + duration_text(timeout) +
                    " and was disconnected");
          lock.lock();
          arrived_.wait(lock, [&] { return post.state != PostedRecv::State::filling; });
          continue;
        }
        break;
      case PostedRecv::State::waiting: {
        const auto queued = mailboxes_.find(key);
        if (queued != mailboxes_.end() && !queued->second.empty()) {
          Message message = std::move(queued->second.front());
          queued->second.pop_front();
          if (queued->second.empty()) mailboxes_.erase(queued);
          unpost();
          lock.unlock();
          if (message.size != bytes) {
            throw CommError("rank " + std::to_string(rank_) + ": recv from rank " + std::to_string(peer_) +
                            " (context " + std::to_string(context) + ", tag " + std::to_string(tag) +
                            ") expected " + std::to_string(bytes) + " bytes but the message has " +
                            std::to_string(message.size));
          }
          if (bytes) std::memcpy(data, message.bytes.get(), bytes);
          return;
        }
        if (dead_) {
          unpost();
          throw peer_error_locked("recv", context, tag, bytes);
        }
        if (Clock::now() >= deadline) {
          unpost();
          throw CommError("rank " + std::to_string(rank_) + ": recv of " + message_text(context, tag, bytes) +
                          " from rank " + std::to_string(peer_) + " timed out after " +
                          duration_text(timeout));
        }
        if (!posted && has_reader_ && posted_.find(key) == posted_.end()) {
          posted_.emplace(key, &post);
          posted = true;
        }
        break;
      }
    }
    if (poller != nullptr) {
      const bool keep_polling = Clock::now() < std::min(poller->until, deadline);
      lock.unlock();
      if (keep_polling) {
        poller->poll();
      } else {
        std::exchange(poller, nullptr)->sleeping();  // the reader thread takes over
      }
      lock.lock();
      continue;
    }
    arrived_.wait_until(lock, deadline);
  }
}

void Inbox::record_death(const std::string& death) {
  if (dead_) return;
  dead_ = true;
  death_ = death;
}

void Inbox::mark_dead(const std::string& death) {
  {
    std::lock_guard lock(mu_);
    record_death(death);
  }
  arrived_.notify_all();
  close_link_();
}

bool Inbox::dead() const {
  std::lock_guard lock(mu_);
  return dead_;
}

std::string Inbox::death_or(const std::string& otherwise) const {
  std::lock_guard lock(mu_);
  return dead_ ? death_ : otherwise;
}

CommError Inbox::peer_error(const char* operation, uint64_t context, uint64_t tag, size_t bytes) const {
  std::lock_guard lock(mu_);
  return peer_error_locked(operation, context, tag, bytes);
}

CommError Inbox::peer_error_locked(const char* operation, uint64_t context, uint64_t tag,
                                   size_t bytes) const {
  return CommError("rank " + std::to_string(rank_) + ": peer rank " + std::to_string(peer_) + " " + death_ +
                   " during " + operation + " of " + message_text(context, tag, bytes) + link_note_);
}

}  // namespace tern
