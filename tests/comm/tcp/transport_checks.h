// Checks shared by the tests of the tcp backend's two transports (sockets and shared memory): the
// same promises, run against either.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/reduce.h"
#include "comm/transport.h"
#include "runtime/rng.h"
#include "runtime/tensor/dtype.h"

namespace tern::testing {

// `bytes` pseudo-random bytes from `seed`: what a message must carry to be told apart from others.
inline std::vector<uint8_t> pattern(size_t bytes, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> data(bytes);
  for (auto& b : data) b = static_cast<uint8_t>(rng.next_u32());
  return data;
}

// A recv first reads the link itself (CommOptions::poll, for messages up to poll_max_bytes), then
// sleeps and leaves it to the reader thread; several recvs on one peer take each other's
// messages. Four threads of `to` each receive their own tag (sizes 1 B .. 2 KB, and 4 KB .. 1 MB,
// past the default polling limit) while `from` pauses at random, so recvs find their message while
// polling, after going to sleep, in the mailbox (read by another thread's poll), or posted and
// filled by the reader thread. Every message must arrive whole and in order.
inline void check_concurrent_recvs_that_poll_and_sleep(Transport& from, Transport& to, uint64_t context) {
  constexpr int kThreads = 4, kMessages = 60;
  const int src = from.rank();
  std::vector<std::thread> receivers;
  std::vector<int> wrong(kThreads, 0);
  auto bytes_of = [](int i) { return size_t{1} << (i % 21); };
  for (int t = 0; t < kThreads; ++t) {
    receivers.emplace_back([&, t] {
      for (int i = 0; i < kMessages; ++i) {
        std::vector<uint8_t> got(bytes_of(i), 0);
        to.recv(src, context, static_cast<uint64_t>(t), got.data(), got.size(), std::chrono::seconds(20));
        wrong[static_cast<size_t>(t)] += got != pattern(got.size(), static_cast<uint64_t>(t * 1000 + i));
      }
    });
  }
  Rng rng(7);
  for (int i = 0; i < kMessages; ++i) {
    for (int t = 0; t < kThreads; ++t) {
      const auto data = pattern(bytes_of(i), static_cast<uint64_t>(t * 1000 + i));
      from.send(to.rank(), context, static_cast<uint64_t>(t), data.data(), data.size());
      if (rng.below(4) == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng.below(300)));
    }
  }
  for (auto& r : receivers) r.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(wrong[static_cast<size_t>(t)], 0) << "receiving thread " << t;
}

// The message of the CommError `body` throws ("" when it throws none).
template <typename Body>
std::string transport_error_of(Body&& body) {
  try {
    body();
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

// Sizes on both sides of the polling limit (64 KB), and large ones the reader thread copies in
// many pieces; a posted recv of each kind must take its own message.
inline size_t posted_size(int i) {
  constexpr size_t kSizes[] = {1, 4096, 65536, 65537, size_t{1} << 20, 3, size_t{4} << 20, 100, 0, 70000};
  return kSizes[static_cast<size_t>(i) % (sizeof(kSizes) / sizeof(kSizes[0]))];
}

// Several recvs posted for one (source, context, tag) take its messages in the order they were
// posted, whatever the order they are waited in, whether a message came before its post (it waits
// in the mailbox) or after (straight into the buffer); a plain recv made after the posts takes the
// message after theirs.
inline void check_posted_recvs_take_messages_in_post_order(Transport& from, Transport& to, uint64_t context) {
  constexpr int kMessages = 10, kPosted = 8, kEarly = 3;
  constexpr uint64_t kTag = 21;
  auto send = [&](int i) {
    const auto data = pattern(posted_size(i), static_cast<uint64_t>(500 + i));
    from.send(to.rank(), context, kTag, data.data(), data.size());
  };
  for (int i = 0; i < kEarly; ++i) send(i);
  std::vector<std::vector<uint8_t>> got(kMessages);
  std::vector<std::unique_ptr<PostedRecv>> posted;
  for (int i = 0; i < kPosted; ++i) {
    got[static_cast<size_t>(i)].assign(posted_size(i), 0xAB);
    posted.push_back(
        to.post_recv(from.rank(), context, kTag, got[static_cast<size_t>(i)].data(), posted_size(i)));
  }
  std::thread sender([&] {
    Rng rng(3);
    for (int i = kEarly; i < kMessages; ++i) {
      send(i);
      if (rng.below(2) == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng.below(2000)));
    }
  });
  got[kPosted].assign(posted_size(kPosted), 0xAB);
  to.recv(from.rank(), context, kTag, got[kPosted].data(), posted_size(kPosted), std::chrono::seconds(20));
  got[kPosted + 1].assign(posted_size(kPosted + 1), 0xAB);
  auto last = to.post_recv(from.rank(), context, kTag, got[kPosted + 1].data(), posted_size(kPosted + 1));
  last->wait(std::chrono::seconds(20));
  for (int i = kPosted; i-- > 0;) posted[static_cast<size_t>(i)]->wait(std::chrono::seconds(20));
  sender.join();
  for (int i = 0; i < kMessages; ++i) {
    EXPECT_TRUE(got[static_cast<size_t>(i)] == pattern(posted_size(i), static_cast<uint64_t>(500 + i)))
        << "message " << i << " of " << posted_size(i) << " bytes";
  }
}

// The pattern of a ring pass: a window of recvs stays posted while a burst of messages streams in;
// the oldest is waited for and a new one posted in its place. Every message arrives whole, in order.
inline void check_a_window_of_posted_recvs_keeps_up_with_a_stream(Transport& from, Transport& to,
                                                                  uint64_t context) {
  constexpr int kMessages = 120;
  constexpr size_t kWindow = 4;
  constexpr uint64_t kTag = 22;
  auto size_of = [](int i) { return posted_size(i) % (size_t{300} << 10); };
  std::thread sender([&] {
    for (int i = 0; i < kMessages; ++i) {
      const auto data = pattern(size_of(i), static_cast<uint64_t>(900 + i));
      from.send(to.rank(), context, kTag, data.data(), data.size());
    }
  });
  std::vector<std::vector<uint8_t>> slots(kWindow);
  std::vector<std::unique_ptr<PostedRecv>> posted(kWindow);
  int next_post = 0, wrong = 0;
  auto post_next = [&] {
    auto& slot = slots[static_cast<size_t>(next_post) % kWindow];
    slot.assign(size_of(next_post), 0xAB);
    posted[static_cast<size_t>(next_post) % kWindow] =
        to.post_recv(from.rank(), context, kTag, slot.data(), slot.size());
    ++next_post;
  };
  while (next_post < static_cast<int>(kWindow)) post_next();
  for (int i = 0; i < kMessages; ++i) {
    const size_t s = static_cast<size_t>(i) % kWindow;
    posted[s]->wait(std::chrono::seconds(20));
    posted[s].reset();
    wrong += slots[s] != pattern(size_of(i), static_cast<uint64_t>(900 + i));
    if (next_post < kMessages) post_next();
  }
  sender.join();
  EXPECT_EQ(wrong, 0);
}

// A posted recv that times out is no longer posted: the message that comes later goes to the next
// recv. Small (polling) and large posted recvs alike.
inline void check_a_posted_recv_that_times_out_leaves_the_message_to_the_next_recv(Transport& from,
                                                                                   Transport& to,
                                                                                   uint64_t context) {
  for (const size_t bytes : {size_t{4}, size_t{1} << 20}) {
    SCOPED_TRACE(std::to_string(bytes) + " bytes");
    const uint64_t tag = 30 + bytes;
    std::vector<uint8_t> buffer(bytes, 0xAB);
    auto posted = to.post_recv(from.rank(), context, tag, buffer.data(), bytes);
    const std::string what = transport_error_of([&] { posted->wait(std::chrono::milliseconds(100)); });
    EXPECT_NE(what.find("timed out after 100 ms"), std::string::npos) << what;
    posted.reset();
    const auto data = pattern(bytes, bytes);
    from.send(to.rank(), context, tag, data.data(), data.size());
    std::vector<uint8_t> got(bytes, 0);
    to.recv(from.rank(), context, tag, got.data(), bytes, std::chrono::seconds(10));
    EXPECT_TRUE(got == data);
    EXPECT_TRUE(buffer == std::vector<uint8_t>(bytes, 0xAB)) << "the timed-out recv's buffer was written";
  }
}

// A posted recv of 8 bytes that gets a 12-byte message fails naming both lengths, whether the
// message came before the post or after; the link goes on working.
inline void check_a_posted_recv_of_the_wrong_length_fails_naming_both(Transport& from, Transport& to,
                                                                      uint64_t context) {
  for (const bool posted_first : {true, false}) {
    SCOPED_TRACE(posted_first ? "posted before the message came" : "message sent before the post");
    const uint64_t tag = posted_first ? 41 : 42;
    const auto data = pattern(12, tag);
    std::vector<uint8_t> buffer(8, 0xAB);
    std::unique_ptr<PostedRecv> posted;
    if (posted_first) posted = to.post_recv(from.rank(), context, tag, buffer.data(), buffer.size());
    from.send(to.rank(), context, tag, data.data(), data.size());
    if (!posted_first) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      posted = to.post_recv(from.rank(), context, tag, buffer.data(), buffer.size());
    }
    const std::string what = transport_error_of([&] { posted->wait(std::chrono::seconds(10)); });
    EXPECT_NE(what.find("expected 8 bytes but the message has 12"), std::string::npos) << what;
    const int value = 77;
    from.send(to.rank(), context, tag, &value, sizeof(value));
    int got = 0;
    to.recv(from.rank(), context, tag, &got, sizeof(got), std::chrono::seconds(10));
    EXPECT_EQ(got, value);
  }
}

// Recvs posted on a peer that then leaves (`leave` destroys its transport) fail promptly, naming
// it, small and large alike.
inline void check_posted_recvs_fail_when_their_peer_leaves(Transport& to, int src, uint64_t context,
                                                           const std::function<void()>& leave) {
  std::vector<uint8_t> small(4), large(size_t{1} << 20);
  auto small_recv = to.post_recv(src, context, 50, small.data(), small.size());
  auto large_recv = to.post_recv(src, context, 50, large.data(), large.size());
  std::thread leaver([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    leave();
  });
  const auto start = std::chrono::steady_clock::now();
  const std::string small_error = transport_error_of([&] { small_recv->wait(std::chrono::seconds(30)); });
  const std::string large_error = transport_error_of([&] { large_recv->wait(std::chrono::seconds(30)); });
  leaver.join();
  const std::string peer = "peer rank " + std::to_string(src);
  EXPECT_NE(small_error.find(peer), std::string::npos) << small_error;
  EXPECT_NE(large_error.find(peer), std::string::npos) << large_error;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20)) << "failed by the timeout";
}

// A handle destroyed without wait(), before or while its (large) message is copied in: once the
// destructor returns the buffer is the caller's again, never written after. The link goes on.
inline void check_a_posted_recv_destroyed_unwaited_gives_its_buffer_back(Transport& from, Transport& to,
                                                                         uint64_t context) {
  constexpr size_t kBytes = size_t{8} << 20;
  const auto data = pattern(kBytes, 61);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("destroyed after " + std::to_string(round * 2) + " ms");
    const uint64_t tag = 60 + static_cast<uint64_t>(round);
    std::vector<uint8_t> buffer(kBytes, 0);
    auto posted = to.post_recv(from.rank(), context, tag, buffer.data(), kBytes);
    std::thread sender([&] { from.send(to.rank(), context, tag, data.data(), data.size()); });
    std::this_thread::sleep_for(std::chrono::milliseconds(round * 2));
    posted.reset();
    std::fill(buffer.begin(), buffer.end(), uint8_t{0xEE});
    sender.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(std::count(buffer.begin(), buffer.end(), uint8_t{0xEE}), static_cast<std::ptrdiff_t>(kBytes))
        << "the buffer was written after its recv was destroyed";
  }
  const int value = 5;
  from.send(to.rank(), context, 69, &value, sizeof(value));
  int got = 0;
  to.recv(from.rank(), context, 69, &got, sizeof(got), std::chrono::seconds(10));
  EXPECT_EQ(got, value);
}

// Right after a recv got its message by polling, the link is left to the next polling recv for a
// moment (the reader thread is not woken by arriving data). A message that nobody receives yet must
// still be taken off the link, or a sender of more than the link holds (16 MB) would wait for a
// recv that comes only after it: here `to` posts its recv only once the send has returned (or 10 s
// have passed, which fails the check).
inline void check_unclaimed_messages_are_drained_after_a_poll(Transport& from, Transport& to, uint64_t context) {
  const int src = from.rank();
  const std::vector<uint8_t> small = pattern(64, 1), large = pattern(size_t{16} << 20, 2);
  std::atomic<bool> sent{false};
  std::thread sender([&] {
    from.send(to.rank(), context, 1, small.data(), small.size());
    from.send(to.rank(), context, 2, large.data(), large.size());
    sent = true;
  });
  std::vector<uint8_t> got(small.size());
  to.recv(src, context, 1, got.data(), got.size(), std::chrono::seconds(10));  // polls: small
  EXPECT_TRUE(got == small);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!sent && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(sent) << "a 16 MB send did not complete before its recv was posted";
  std::vector<uint8_t> big(large.size());
  to.recv(src, context, 2, big.data(), big.size(), std::chrono::seconds(10));
  EXPECT_TRUE(big == large);
  sender.join();
}

// Transport::post_recv_reduce: each message is folded into the buffer (buffer = buffer op
// message), for every reducible dtype, sizes 0 / 1 / 7 / a prime / past a test ring many times,
// messages sent before the post (they wait in the mailbox) and after (reduced as they arrive). A
// 3-byte message on another tag goes before each, so that elements straddle the shared-memory
// ring's end. A wrong length fails naming both lengths; a size that is not whole elements is
// refused at the post.
inline void check_reducing_recvs_fold_each_message_into_the_buffer(Transport& from, Transport& to,
                                                                   uint64_t context) {
  struct Case {
    DType dtype;
    ReduceOp op;
  };
  const Case cases[] = {{DType::f32, ReduceOp::sum}, {DType::bf16, ReduceOp::sum}, {DType::f16, ReduceOp::max},
                        {DType::i32, ReduceOp::sum}, {DType::i64, ReduceOp::max}};
  const size_t counts[] = {0, 1, 7, 16411, 300001};
  constexpr uint64_t kTag = 60, kFillerTag = 61;
  uint64_t seed = 0;
  for (const Case& c : cases) {
    const size_t elem = dtype_size(c.dtype);
    for (const size_t n : counts) {
      for (const bool posted_first : {true, false}) {
        SCOPED_TRACE(std::string(dtype_name(c.dtype)) + " " + reduce_op_name(c.op) + ", " + std::to_string(n) +
                     " elements, " + (posted_first ? "posted first" : "sent first"));
        ++seed;
        // Random bytes are valid i32/i64 values; floats get small integers (exact sums, no NaN).
        std::vector<uint8_t> mine = pattern(n * elem, seed), theirs = pattern(n * elem, seed + 1000);
        for (std::vector<uint8_t>* bytes : {&mine, &theirs}) {
          for (size_t i = 0; i < n && (c.dtype == DType::f32 || elem == 2); ++i) {
            const float value = static_cast<float>((*bytes)[i * elem] % 64) - 32;
            uint8_t* at = bytes->data() + i * elem;
            if (c.dtype == DType::f32) {
              std::memcpy(at, &value, sizeof(value));
            } else {
              const uint16_t half = c.dtype == DType::bf16 ? f32_to_bf16(value) : f32_to_f16(value);
              std::memcpy(at, &half, sizeof(half));
            }
          }
        }
        std::vector<uint8_t> expected = mine;
        reduce_into(expected.data(), theirs.data(), static_cast<int64_t>(n), c.dtype, c.op);
        const uint8_t filler[3] = {1, 2, 3};
        std::unique_ptr<PostedRecv> posted;
        if (posted_first) posted = to.post_recv_reduce(from.rank(), context, kTag, mine.data(), mine.size(), {c.dtype, c.op});
        from.send(to.rank(), context, kFillerTag, filler, sizeof(filler));
        from.send(to.rank(), context, kTag, theirs.data(), theirs.size());
        uint8_t got_filler[3] = {};
        to.recv(from.rank(), context, kFillerTag, got_filler, sizeof(got_filler), std::chrono::seconds(20));
        if (!posted_first) {
          std::this_thread::sleep_for(std::chrono::milliseconds(n > 1000 ? 20 : 1));
          posted = to.post_recv_reduce(from.rank(), context, kTag, mine.data(), mine.size(), {c.dtype, c.op});
        }
        posted->wait(std::chrono::seconds(20));
        EXPECT_TRUE(mine == expected);
      }
    }
  }
  std::vector<float> buffer(2, 1.0f);
  auto posted = to.post_recv_reduce(from.rank(), context, kTag, buffer.data(), 8, {DType::f32, ReduceOp::sum});
  const float three[3] = {1, 2, 3};
  from.send(to.rank(), context, kTag, three, sizeof(three));
  const std::string what = transport_error_of([&] { posted->wait(std::chrono::seconds(10)); });
  EXPECT_NE(what.find("expected 8 bytes but the message has 12"), std::string::npos) << what;
  EXPECT_THROW(to.post_recv_reduce(from.rank(), context, kTag, buffer.data(), 6, {DType::f32, ReduceOp::sum}),
               std::exception);
}

}  // namespace tern::testing
