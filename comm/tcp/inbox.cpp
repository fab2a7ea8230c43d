#include "comm/tcp/inbox.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "comm/reduce.h"

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

Inbox::Inbox(int rank, int peer, std::string link_note, std::function<void()> close_link)
    : rank_(rank), peer_(peer), link_note_(std::move(link_note)), close_link_(std::move(close_link)) {}

void Inbox::file_locked(const MailboxKey& key, Message message) {
  const auto posted = posted_.find(key);
  if (posted == posted_.end()) {
    mailboxes_[key].push_back(std::move(message));
    return;
  }
  Post* target = posted->second.front();
  posted->second.pop_front();
  if (posted->second.empty()) posted_.erase(posted);
  target->message_ = std::move(message.bytes);
  target->message_bytes_ = message.size;
  target->state_ = Post::State::arrived;
}

void Inbox::unpost_locked(Post& post) {
  const auto posted = posted_.find({post.context_, post.tag_});
  if (posted != posted_.end()) {
    auto& queue = posted->second;
    queue.erase(std::remove(queue.begin(), queue.end(), &post), queue.end());
    if (queue.empty()) posted_.erase(posted);
  }
}

void Inbox::deliver(uint64_t context, uint64_t tag, const void* data, size_t bytes) {
  Message message{bytes ? std::make_unique<uint8_t[]>(bytes) : nullptr, bytes};
  if (bytes) std::memcpy(message.bytes.get(), data, bytes);
  {
    std::lock_guard lock(mu_);
    file_locked({context, tag}, std::move(message));
  }
  changed_.notify_all();
}

namespace {
// A reducing recv fed by a link that cannot reduce in place reads its payload into scratch this
// large, piece by piece, and reduces each piece while it is still in cache.
constexpr size_t kReduceScratchBytes = size_t{64} << 10;  // a multiple of every element size
}  // namespace

std::string Inbox::read_reducing(const PayloadReader& read, void* data, size_t bytes, const RecvReduction& how) {
  if (!reduce_scratch_) reduce_scratch_.reset(new uint8_t[kReduceScratchBytes]);
  const size_t elem = dtype_size(how.dtype);
  auto* out = static_cast<uint8_t*>(data);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(bytes - done, kReduceScratchBytes);
    std::string death = read(reduce_scratch_.get(), n);
    if (!death.empty()) return death;
    reduce_into(out + done, reduce_scratch_.get(), static_cast<int64_t>(n / elem), how.dtype, how.op);
    done += n;
  }
  return "";
}

bool Inbox::receive(uint64_t context, uint64_t tag, size_t bytes, const PayloadReader& read,
                    const PayloadReducer* reduce) {
  const MailboxKey key{context, tag};
  Post* target = nullptr;
  {
    // The first posted recv takes the message straight into its buffer when it has the message's
    // length (else it must report the mismatch: the message goes to it whole, below).
    std::lock_guard lock(mu_);
    const auto posted = posted_.find(key);
    if (posted != posted_.end() && posted->second.front()->bytes_ == bytes) {
      target = posted->second.front();
      posted->second.pop_front();
      if (posted->second.empty()) posted_.erase(posted);
      target->state_ = Post::State::filling;
    }
  }
  if (target) {  // straight into the waiting recv's buffer: one copy in all
    std::string death;
    if (!target->reduce_) {
      death = read(target->data_, bytes);
    } else if (reduce != nullptr) {
      death = (*reduce)(target->data_, bytes, *target->reduce_);
    } else {
      death = read_reducing(read, target->data_, bytes, *target->reduce_);
    }
    {
      std::lock_guard lock(mu_);
      // The recv may return as soon as it sees the state: target is not touched after this.
      target->state_ = death.empty() ? Post::State::filled : Post::State::failed;
      if (!death.empty()) record_death(death);
    }
    changed_.notify_all();
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
    file_locked(key, std::move(message));
  }
  changed_.notify_all();
  return true;
}

void Inbox::post(Post& post) {
  std::lock_guard lock(mu_);
  TERN_CHECK(post.state_ == Post::State::unposted, "Inbox::post: a recv was posted twice");
  const MailboxKey key{post.context_, post.tag_};
  const auto queued = mailboxes_.find(key);
  if (queued == mailboxes_.end()) {
    posted_[key].push_back(&post);
    post.state_ = Post::State::waiting;
    return;
  }
  post.message_ = std::move(queued->second.front().bytes);
  post.message_bytes_ = queued->second.front().size;
  post.state_ = Post::State::arrived;
  queued->second.pop_front();
  if (queued->second.empty()) mailboxes_.erase(queued);
}

void Inbox::wait(Post& post, std::chrono::milliseconds timeout, Poller* poller) {
  const Clock::time_point deadline = Clock::now() + timeout;
  std::unique_lock lock(mu_);
  for (;;) {
    switch (post.state_) {
      case Post::State::unposted:
      case Post::State::done:
        TERN_CHECK(false, "Inbox::wait: a recv that is not posted (or was already waited for)");
        break;
      case Post::State::filled:
        post.state_ = Post::State::done;
        return;
      case Post::State::failed:
        post.state_ = Post::State::done;
        throw peer_error_locked("recv", post.context_, post.tag_, post.bytes_);
      case Post::State::arrived: {
        post.state_ = Post::State::done;
        const std::unique_ptr<uint8_t[]> message = std::move(post.message_);
        lock.unlock();
        if (post.message_bytes_ != post.bytes_) {
          throw CommError("rank " + std::to_string(rank_) + ": recv from rank " + std::to_string(peer_) +
                          " (context " + std::to_string(post.context_) + ", tag " +
                          std::to_string(post.tag_) + ") expected " + std::to_string(post.bytes_) +
                          " bytes but the message has " + std::to_string(post.message_bytes_));
        }
        land_message(post.data_, message.get(), post.bytes_, post.reduce_);
        return;
      }
      case Post::State::filling:
        if (Clock::now() >= deadline) {
          // The sender stalled mid-message. Our buffer must be ours again before we return, so
          // the link goes: the reader then gives the buffer back at once.
          lock.unlock();
          mark_dead("stalled in the middle of a message for " + duration_text(timeout) +
                    " and was disconnected");
          lock.lock();
          changed_.wait(lock, [&] { return post.state_ != Post::State::filling; });
          continue;
        }
        break;
      case Post::State::waiting:
        if (dead_) {
          unpost_locked(post);
          post.state_ = Post::State::done;
          throw peer_error_locked("recv", post.context_, post.tag_, post.bytes_);
        }
        if (Clock::now() >= deadline) {
          unpost_locked(post);
          post.state_ = Post::State::done;
          throw CommError("rank " + std::to_string(rank_) + ": recv of " +
                          message_text(post.context_, post.tag_, post.bytes_) + " from rank " +
                          std::to_string(peer_) + " timed out after " + duration_text(timeout));
        }
        break;
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
    changed_.wait_until(lock, deadline);
  }
}

void Inbox::cancel(Post& post, std::chrono::milliseconds grace) {
  std::unique_lock lock(mu_);
  if (post.state_ == Post::State::waiting) unpost_locked(post);
  if (post.state_ == Post::State::filling &&
      !changed_.wait_for(lock, grace, [&] { return post.state_ != Post::State::filling; })) {
    lock.unlock();
    mark_dead("stalled in the middle of a message for " + duration_text(grace) +
              " after its recv was abandoned, and was disconnected");
    lock.lock();
    changed_.wait(lock, [&] { return post.state_ != Post::State::filling; });
  }
  post.message_.reset();
  post.state_ = Post::State::done;
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
  changed_.notify_all();
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
