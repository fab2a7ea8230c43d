// The local backend's Transport: in-memory mailboxes shared by the ranks (threads) of one process.
// Private to comm/local and its tests; everyone else goes through comm/local/local.h.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "comm/transport.h"

namespace tern {

// The mailboxes of one local world: per destination rank, a FIFO of messages for each
// (source, context, tag). It also knows when the world is broken (a rank failed: every waiting and
// future recv fails at once, naming that rank) and which ranks have left (their transport was
// destroyed: a recv from them with nothing queued can never complete, so it fails at once).
class LocalFabric {
 public:
  explicit LocalFabric(int size);
  int size() const { return static_cast<int>(mailboxes_.size()); }

  // A recv's claim on a message to rank dst from (src, context, tag): the k-th message goes to the
  // k-th post. The recv owns it; the fabric points at it between post() and the end of wait() or
  // cancel().
  class Post {
   public:
    // With `reduce`, the message is reduced into data instead of copied (a reducing recv).
    Post(int dst, int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
         std::optional<RecvReduction> reduce = {})
        : dst_(dst), src_(src), context_(context), tag_(tag), data_(data), bytes_(bytes), reduce_(reduce) {}
    Post(const Post&) = delete;
    Post& operator=(const Post&) = delete;

   private:
    friend class LocalFabric;
    // unposted -> waiting -> filling (the sender copies into data) -> filled; or -> arrived (a
    // queued or wrong-length message attached whole); all end in done.
    enum class State { unposted, waiting, filling, filled, arrived, done };
    int dst_;
    int src_;
    uint64_t context_;
    uint64_t tag_;
    void* data_;
    size_t bytes_;
    std::optional<RecvReduction> reduce_;
    State state_ = State::unposted;
    std::vector<char> message_;  // when arrived
  };

  // Copies (or reduces) the message straight into the buffer of the first recv posted for it when it
  // has the message's length; else queues a copy (or attaches it to that recv, which reports the mismatch).
  void deliver(int src, int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes);
  // Takes the post's place in the order of its messages; a queued message is attached at once.
  void post(Post& post);
  // Blocks until the post's message is in its buffer; CommError on a length mismatch, the timeout, a
  // broken world or a sender that left without sending it. The post is done either way.
  void wait(Post& post, std::chrono::milliseconds timeout);
  // Un-posts (a message being copied in is finished first); an attached message is discarded.
  void cancel(Post& post);
  // post and wait.
  void take(int dst, int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
            std::chrono::milliseconds timeout);

  // Marks the world broken because `rank` failed with `reason`; wakes every waiting recv.
  void fail(int rank, const std::string& reason);
  void leave(int rank);

 private:
  using Key = std::tuple<int, uint64_t, uint64_t>;  // source, context, tag
  struct Mailbox {
    std::mutex mu;
    std::condition_variable arrived;
    // Per key, either queued messages (no recv was posted when they came) or posted recvs (no
    // message has come for them yet), never both. Empty queues are erased.
    std::map<Key, std::deque<std::vector<char>>> queues;
    std::map<Key, std::deque<Post*>> posted;
  };
  Mailbox& mailbox_of(int dst, int src, const char* op);
  // With the mailbox locked: hands a message to the first post of its key, or queues it.
  static void file_locked(Mailbox& box, const Key& key, std::vector<char> message);
  static void unpost_locked(Mailbox& box, Post& post);
  void wake_everyone();
  // Throws the CommError for `op` on rank `rank` if the world is broken; call with a mailbox locked.
  void throw_if_broken(int rank, const char* op, int peer) const;

  std::vector<std::unique_ptr<Mailbox>> mailboxes_;
  std::atomic<bool> broken_{false};
  mutable std::mutex failure_mu_;
  int failed_rank_ = -1;
  std::string failure_;
  std::unique_ptr<std::atomic<bool>[]> left_;
};

class LocalTransport : public Transport {
 public:
  LocalTransport(std::shared_ptr<LocalFabric> fabric, int rank) : fabric_(std::move(fabric)), rank_(rank) {}
  // The rank leaves the fabric: peers still waiting on it fail instead of timing out.
  ~LocalTransport() override { fabric_->leave(rank_); }

  int rank() const override { return rank_; }
  int size() const override { return fabric_->size(); }
  void send(int dst, uint64_t context, uint64_t tag, const void* data, size_t bytes) override;
  void recv(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
            std::chrono::milliseconds timeout) override;
  // The sender copies the message straight into the posted buffer (one copy instead of two).
  std::unique_ptr<PostedRecv> post_recv(int src, uint64_t context, uint64_t tag, void* data,
                                        size_t bytes) override;
  // The sender reduces the message straight into the posted buffer (no copy of it at all).
  std::unique_ptr<PostedRecv> post_recv_reduce(int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                                               RecvReduction how) override;
  uint64_t bytes_sent() const override { return sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const override { return received_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<LocalFabric> fabric_;
  int rank_;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> received_{0};
};

// One transport per rank of a fresh fabric (index = rank).
std::vector<std::shared_ptr<LocalTransport>> make_local_transports(
    int n, std::shared_ptr<LocalFabric>* fabric = nullptr);

// The context of the world communicator of a local job (splits derive theirs from it).
constexpr uint64_t kLocalWorldContext = 1;

}  // namespace tern
