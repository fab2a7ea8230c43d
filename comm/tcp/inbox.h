// Inbox: what one rank has received, or is waiting to receive, from one peer — the receive side
// shared by TcpTransport and ShmTransport, which keep only their links (sockets, rings) to fill it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "comm/communicator.h"
#include "comm/transport.h"

namespace tern {

// "<bytes> bytes (context C, tag T)": how the tcp backend's errors name a message.
std::string message_text(uint64_t context, uint64_t tag, size_t bytes);
// "<n> ms".
std::string duration_text(std::chrono::milliseconds duration);
// The argument checks of a transport's send and recv: a peer inside the world, a message within
// the size limit. CommError naming this rank otherwise.
void check_peer_rank(int rank, int size, int peer, const char* operation);
void check_send_size(int rank, int dst, uint64_t context, uint64_t tag, size_t bytes, size_t max_bytes);

// Messages from the peer wait in a mailbox per (context, tag) until a recv takes them, unless a
// recv is already waiting ("posted") for them: then the link's reader thread reads the payload
// straight into the recv's buffer. Several recvs may be posted per (context, tag); the k-th
// message goes to the k-th recv posted (or attached to it whole, when it came earlier or has
// another length). Once the peer is dead (the link failed, or a recv gave up in the middle of a
// message) every waiting and later recv fails with the reason; messages that arrived whole before
// that are still delivered.
// A recv's place in one of its peer's counts that the link's reader thread consults: recvs that
// wait for the reader (it reads the link for them; while there are none it may leave the link to
// recvs that poll it), or, over sockets, recvs posted to read the link themselves (it leaves the link
// to them). start() counts the recv and wakes the reader through `wake`; stop() and destruction
// uncount it. Both are idempotent.
class ReaderWaiter {
 public:
  ReaderWaiter(std::atomic<int>& count, std::function<void()> wake) : count_(count), wake_(std::move(wake)) {}
  ~ReaderWaiter() { stop(); }
  ReaderWaiter(const ReaderWaiter&) = delete;
  ReaderWaiter& operator=(const ReaderWaiter&) = delete;
  void start() {
    if (std::exchange(counted_, true)) return;
    count_.fetch_add(1, std::memory_order_seq_cst);
    wake_();
  }
  void stop() {
    if (std::exchange(counted_, false)) count_.fetch_sub(1, std::memory_order_seq_cst);
  }

 private:
  std::atomic<int>& count_;
  std::function<void()> wake_;
  bool counted_ = false;
};

class Inbox {
 public:
  // Reads exactly `bytes` of the next payload from the link into `data`; returns "" or the
  // peer's death ("disconnected (EOF)"), which completes "peer rank S ...".
  using PayloadReader = std::function<std::string(void* data, size_t bytes)>;
  // The same, but reduces the payload into `data` (data[i] = data[i] op payload[i]) as it comes,
  // for a link that can hand out its bytes in place (the shared-memory ring).
  using PayloadReducer = std::function<std::string(void* data, size_t bytes, const RecvReduction& how)>;

  // `rank` is this rank and `peer` the sender, for messages. `link_note` ends every peer-death
  // message (e.g. " (shared memory)"). `close_link` ends the link on death, so the peer learns it
  // and the reader stops.
  Inbox(int rank, int peer, std::string link_note, std::function<void()> close_link);
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;

  // One recv's claim on a message of its mailbox: its buffer, and how far the message got. It
  // lives with the recv (on its stack, or in a PostedRecv handle); the inbox only points at it
  // between post() and the end of wait() or cancel().
  class Post {
   public:
    // With `reduce`, the message is reduced into data instead of copied (a reducing recv; bytes
    // must be whole elements, check_reducing_recv).
    Post(uint64_t context, uint64_t tag, void* data, size_t bytes, std::optional<RecvReduction> reduce = {})
        : context_(context), tag_(tag), data_(data), bytes_(bytes), reduce_(reduce) {}
    Post(const Post&) = delete;
    Post& operator=(const Post&) = delete;
    size_t bytes() const { return bytes_; }

   private:
    friend class Inbox;
    // unposted -> waiting (queued for the next message) -> filling (the reader is copying into
    // data) -> filled or failed; or -> arrived (a whole message was attached, not yet copied);
    // every path ends in done, when wait() or cancel() gives the buffer back.
    enum class State { unposted, waiting, filling, filled, failed, arrived, done };
    uint64_t context_;
    uint64_t tag_;
    void* data_;
    size_t bytes_;
    std::optional<RecvReduction> reduce_;
    State state_ = State::unposted;
    std::unique_ptr<uint8_t[]> message_;  // when arrived
    size_t message_bytes_ = 0;
  };

  // A whole message, copied in (this rank's sends to itself).
  void deliver(uint64_t context, uint64_t tag, const void* data, size_t bytes);
  // For the reader thread, once a message's header has been checked: reads its payload through
  // `read`, into the buffer of the first recv posted for its mailbox if it has the message's
  // length, else into a new message attached to that recv or queued in the mailbox. A reducing
  // recv gets it through `reduce` when the link has one, else through `read` in pieces of scratch.
  // Returns false when the peer is now dead: read failed (with read's reason), or the payload
  // could not be allocated (nothing read; the link cannot be resynchronised). Calls for one inbox
  // must not overlap (the transports hold their link's read lock).
  bool receive(uint64_t context, uint64_t tag, size_t bytes, const PayloadReader& read,
               const PayloadReducer* reduce = nullptr);

  // A recv that drains the link itself while it waits, instead of sleeping until the reader thread
  // hands it the message (two thread wake-ups per message, the cost of a small message): until
  // `until`, wait calls `poll` (which reads whatever whole messages the link holds through
  // receive(), so its own lands straight in its posted buffer) between looks at its state. If it
  // has to sleep after all, it calls `sleeping` once first (so the reader thread takes over).
  struct Poller {
    std::function<void()> poll;
    std::chrono::steady_clock::time_point until;
    std::function<void()> sleeping;
  };

  // Takes the post's place in its mailbox's order: the oldest queued message, if there is one, is
  // attached to it at once; else it waits for the next one to arrive.
  void post(Post& post);
  // Blocks until the posted message is in the post's buffer; throws CommError on a length
  // mismatch, a dead peer or the timeout. A timeout in the middle of the message kills the peer:
  // the buffer must be the caller's again before wait returns. The post is done either way.
  void wait(Post& post, std::chrono::milliseconds timeout, Poller* poller = nullptr);
  // Gives the buffer back without waiting for the message: un-posts it, or, if the reader is
  // copying into it, lets the copy finish for up to `grace`, then kills the peer (as a stalled
  // recv does). A message already attached or copied is discarded. Nothing happens once done.
  void cancel(Post& post, std::chrono::milliseconds grace);

  // Records the first reason the peer is unusable, wakes its waiters and closes the link.
  void mark_dead(const std::string& death);
  bool dead() const;
  // The peer's death, or `otherwise` while it lives.
  std::string death_or(const std::string& otherwise) const;
  // "rank R: peer rank S <death> during <operation> of <message><link_note>".
  CommError peer_error(const char* operation, uint64_t context, uint64_t tag, size_t bytes) const;

 private:
  using MailboxKey = std::pair<uint64_t, uint64_t>;  // (context, tag)
  struct Message {
    std::unique_ptr<uint8_t[]> bytes;
    size_t size = 0;
  };

  // A reducing post's payload through `read`, a piece of reduce_scratch_ at a time.
  std::string read_reducing(const PayloadReader& read, void* data, size_t bytes, const RecvReduction& how);
  // With mu_ held: hands a whole message to the first waiting post of its mailbox, or queues it.
  void file_locked(const MailboxKey& key, Message message);
  // With mu_ held: removes a waiting post from its mailbox's queue.
  void unpost_locked(Post& post);
  void record_death(const std::string& death);  // with mu_ held
  CommError peer_error_locked(const char* operation, uint64_t context, uint64_t tag, size_t bytes) const;

  const int rank_;
  const int peer_;
  const std::string link_note_;
  const std::function<void()> close_link_;

  mutable std::mutex mu_;  // guards everything below, and the state of every post
  std::condition_variable changed_;
  // Per mailbox, either queued messages (no recv was waiting when they came) or waiting posts (no
  // message has come for them yet), never both. Empty queues are erased: every collective uses a
  // fresh tag.
  std::map<MailboxKey, std::deque<Message>> mailboxes_;
  std::map<MailboxKey, std::deque<Post*>> posted_;
  bool dead_ = false;
  std::string death_;  // completes "peer rank S ...", e.g. "disconnected (EOF)"
  std::unique_ptr<uint8_t[]> reduce_scratch_;  // read_reducing's, used by receive() only
};

}  // namespace tern
