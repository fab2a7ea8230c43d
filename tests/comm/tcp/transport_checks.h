// Checks shared by the tests of the tcp backend's two transports (sockets and shared memory): the
// same promises, run against either.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "comm/transport.h"
#include "runtime/rng.h"

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
// messages. Four threads of `to` each receive their own tag (sizes 1 B .. 2 KB, and 4 KB .. 1 MB
// past the polling limit) while `from` pauses at random, so recvs find their message while
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

}  // namespace tern::testing
