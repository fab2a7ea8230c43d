// Inbox: what one rank has received, or is waiting to receive, from one peer — the receive side
// shared by TcpTransport and ShmTransport, which keep only their links (sockets, rings) to fill it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "comm/communicator.h"

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
// recv is already waiting ("posted") for exactly that message: then the link's reader thread
// reads the payload straight into the recv's buffer. Once the peer is dead (the link failed, or a
// recv gave up in the middle of a message) every waiting and later recv fails with the reason.
class Inbox {
 public:
  // Reads exactly `bytes` of the next payload from the link into `data`; returns "" or the
  // peer's death ("disconnected (EOF)"), which completes "peer rank S ...".
  using PayloadReader = std::function<std::string(void* data, size_t bytes)>;

  // `rank` is this rank and `peer` the sender, for messages. `link_note` ends every peer-death
  // message (e.g. " (shared memory)"). `has_reader`: a reader thread fills this inbox, so recvs
  // post their buffers for it (not so for the inbox of this rank's sends to itself).
  // `close_link` ends the link on death, so the peer learns it and the reader stops.
  Inbox(int rank, int peer, std::string link_note, bool has_reader, std::function<void()> close_link);
  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;

  // A whole message, copied in (this rank's sends to itself).
  void deliver(uint64_t context, uint64_t tag, const void* data, size_t bytes);
  // For the reader thread, once a message's header has been checked: reads its payload through
  // `read`, into the posted recv's buffer if one waits for exactly this message, else into a new
  // mailbox entry. Returns false when the peer is now dead: read failed (with read's reason), or
  // the payload could not be allocated (nothing read; the link cannot be resynchronised).
  bool receive(uint64_t context, uint64_t tag, size_t bytes, const PayloadReader& read);

  // A recv that drains the link itself while it waits, instead of sleeping until the reader thread
  // hands it the message (two thread wake-ups per message, the cost of a small message): until
  // `until`, recv calls `poll` (which reads whatever whole messages the link holds through
  // receive(), so its own lands straight in its posted buffer) between looks at its state. If it
  // has to sleep after all, it calls `sleeping` once first (so the reader thread takes over).
  struct Poller {
    std::function<void()> poll;
    std::chrono::steady_clock::time_point until;
    std::function<void()> sleeping;
  };

  // Blocks until the next message for (context, tag) is in `data`; throws CommError on a length
  // mismatch, a dead peer or the timeout. A timeout in the middle of a posted message kills the
  // peer: the buffer must be the caller's again before recv returns.
  void recv(uint64_t context, uint64_t tag, void* data, size_t bytes, std::chrono::milliseconds timeout,
            Poller* poller = nullptr);

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
  // A recv's buffer, offered to the reader for the next message of its mailbox.
  struct PostedRecv {
    enum class State { waiting, filling, filled, failed };
    void* data;
    size_t bytes;
    State state = State::waiting;
  };

  void record_death(const std::string& death);  // with mu_ held
  CommError peer_error_locked(const char* operation, uint64_t context, uint64_t tag, size_t bytes) const;
  PostedRecv* claim_posted(const MailboxKey& key, size_t bytes);

  const int rank_;
  const int peer_;
  const std::string link_note_;
  const bool has_reader_;
  const std::function<void()> close_link_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable arrived_;
  std::map<MailboxKey, std::deque<Message>> mailboxes_;
  std::map<MailboxKey, PostedRecv*> posted_;
  bool dead_ = false;
  std::string death_;  // completes "peer rank S ...", e.g. "disconnected (EOF)"
};

}  // namespace tern
