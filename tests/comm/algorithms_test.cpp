// The collective algorithms called directly over local transports, with the knobs the
// communicator does not expose: the small-message threshold (to force recursive doubling or the
// ring at any size), tiny ring chunks (many chunks per block), and world sizes up to 7 (folding).
#include "comm/algorithms.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>

#include "comm/local/local_transport.h"
#include "tests/comm/collective_reference.h"

namespace tern {
namespace {

using testing::first_mismatch;
using testing::rank_input;
using testing::reference_reduce;

// Runs body(group) on `world` threads over a fresh local fabric; a rank that throws breaks the
// fabric (so the others stop waiting) and fails the test.
void run_group(int world, const std::function<void(Group&)>& body) {
  std::shared_ptr<LocalFabric> fabric;
  auto transports = make_local_transports(world, &fabric);
  std::vector<int> members;
  for (int r = 0; r < world; ++r) members.push_back(r);
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        Group group(*transports[static_cast<size_t>(r)], members, r, 7, std::chrono::seconds(10));
        body(group);
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        errors.push_back(detail::concat("rank ", r, ": ", e.what()));
        fabric->fail(r, e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(errors.empty()) << errors.front();
}

AlgorithmOptions always_ring(size_t chunk_bytes) {
  AlgorithmOptions options;
  options.small_message_bytes = 0;
  options.small_gather_bytes = 0;
  options.ring_chunk_bytes = chunk_bytes;
  return options;
}

AlgorithmOptions never_ring() {
  AlgorithmOptions options;
  options.small_message_bytes = std::numeric_limits<size_t>::max();
  options.small_gather_bytes = std::numeric_limits<size_t>::max();
  return options;
}

TEST(RingAllreduce, MatchesReferenceWithManySmallChunksPerBlock) {
  for (int world = 1; world <= 5; ++world) {
    for (DType dtype : {DType::f32, DType::bf16, DType::i64}) {
      for (int64_t n : {1, 2, 7, 13, 1000}) {
        for (size_t chunk : {size_t{0}, size_t{1}, size_t{8}, size_t{100}}) {
          const Tensor expected = reference_reduce(dtype, ReduceOp::avg, world, n);
          run_group(world, [&](Group& group) {
            Tensor t = rank_input(dtype, group.rank(), n);
            allreduce(group, algorithm_tag(0), t.raw(), n, dtype, ReduceOp::avg, always_ring(chunk));
            EXPECT_EQ(first_mismatch(t, expected), -1)
                << "world " << world << " " << dtype_name(dtype) << "[" << n << "] chunk " << chunk;
          });
        }
      }
    }
  }
}

// The ring posts its recvs ahead of need: one at a time (no scratch budget), a few, or more than
// kMaxPostedRecvs chunks' worth (the cap). Each posted recv's scratch chunk is reused only after its
// chunk was reduced, so the result is the same whatever the window.
TEST(RingAllreduce, MatchesReferenceWhateverHowManyRecvsAreKeptPosted) {
  for (int world = 2; world <= 5; ++world) {
    for (const size_t window_bytes : {size_t{0}, size_t{8}, size_t{24}, kDefaultRingWindowBytes}) {
      const int64_t n = 2600;  // 2-element chunks: 260+ per block, past kMaxPostedRecvs
      const Tensor expected = reference_reduce(DType::f32, ReduceOp::sum, world, n);
      run_group(world, [&](Group& group) {
        Tensor t = rank_input(DType::f32, group.rank(), n);
        AlgorithmOptions options = always_ring(8);
        options.ring_window_bytes = window_bytes;
        allreduce(group, algorithm_tag(0), t.raw(), n, DType::f32, ReduceOp::sum, options);
        EXPECT_EQ(first_mismatch(t, expected), -1) << "world " << world << " window " << window_bytes << " B";
      });
    }
  }
}

TEST(RecursiveDoublingAllreduce, MatchesReferenceIncludingFoldedNonPowerOfTwoWorlds) {
  for (int world = 1; world <= 7; ++world) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
      for (int64_t n : {1, 7, 13, 100003}) {
        const Tensor expected = reference_reduce(DType::f16, op, world, n);
        run_group(world, [&](Group& group) {
          Tensor t = rank_input(DType::f16, group.rank(), n);
          allreduce(group, algorithm_tag(0), t.raw(), n, DType::f16, op, never_ring());
          EXPECT_EQ(first_mismatch(t, expected), -1) << "world " << world << " n " << n;
        });
      }
    }
  }
}

// Power-of-two worlds; sizes smaller than the world (empty halves), odd ones (uneven halves), and
// through allreduce's own choice (the ring below 4 ranks and above the limit).
TEST(HalvingDoublingAllreduce, MatchesReferenceForPowerOfTwoWorlds) {
  for (int world : {1, 2, 4, 8}) {
    for (DType dtype : {DType::f32, DType::bf16, DType::i64}) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
        for (int64_t n : {1, 3, 7, 13, 1000, 100003}) {
          const Tensor expected = reference_reduce(dtype, op, world, n);
          run_group(world, [&](Group& group) {
            Tensor t = rank_input(dtype, group.rank(), n);
            allreduce_halving_doubling(group, algorithm_tag(0), t.raw(), n, dtype, op);
            EXPECT_EQ(first_mismatch(t, expected), -1)
                << "world " << world << " " << dtype_name(dtype) << "[" << n << "] " << reduce_op_name(op);
          });
        }
      }
    }
  }
  for (int world : {3, 4, 5}) {
    for (int64_t n : {7, 3000, 30000}) {
      const Tensor expected = reference_reduce(DType::f32, ReduceOp::avg, world, n);
      run_group(world, [&](Group& group) {
        Tensor t = rank_input(DType::f32, group.rank(), n);
        AlgorithmOptions options = always_ring(1024);
        options.halving_doubling_max_bytes = 20000;  // 3000 floats take it at 4 ranks, 30000 do not
        allreduce(group, algorithm_tag(0), t.raw(), n, DType::f32, ReduceOp::avg, options);
        EXPECT_EQ(first_mismatch(t, expected), -1) << "world " << world << " n " << n;
      });
    }
  }
  run_group(3, [&](Group& group) {
    float x = 1;
    EXPECT_THROW(allreduce_halving_doubling(group, algorithm_tag(0), &x, 1, DType::f32, ReduceOp::sum), Error);
  });
}

TEST(Allreduce, ConsecutiveOperationsWithDistinctTagsDoNotMix) {
  // Small and ring allreduces back to back, without waiting for each other: each must use only
  // its own messages.
  const int world = 3;
  run_group(world, [&](Group& group) {
    for (uint64_t op = 0; op < 6; ++op) {
      const int64_t n = op % 2 == 0 ? 5 : 30000;
      Tensor t = rank_input(DType::i32, group.rank(), n, static_cast<int64_t>(op));
      AlgorithmOptions options;
      options.small_message_bytes = 1024;
      options.ring_chunk_bytes = 4096;
      allreduce(group, algorithm_tag(op), t.raw(), n, DType::i32, ReduceOp::sum, options);
      EXPECT_EQ(
          first_mismatch(t, reference_reduce(DType::i32, ReduceOp::sum, world, n, static_cast<int64_t>(op))),
          -1)
          << "operation " << op;
    }
  });
}

TEST(RingReduceScatter, MatchesReferenceWithSmallChunks) {
  for (int world = 1; world <= 5; ++world) {
    for (int64_t n : {0, 1, 3, 13, 1001}) {
      const Tensor expected = reference_reduce(DType::f32, ReduceOp::sum, world, n);
      const std::vector<int64_t> counts = even_counts(n, world);
      run_group(world, [&](Group& group) {
        const Tensor in = rank_input(DType::f32, group.rank(), n);
        Tensor out = Tensor::empty({counts[static_cast<size_t>(group.rank())]}, DType::f32);
        reduce_scatter(group, algorithm_tag(0), in.raw(), out.raw(), n, DType::f32, ReduceOp::sum,
                       always_ring(12));
        int64_t begin = 0;
        for (int r = 0; r < group.rank(); ++r) begin += counts[static_cast<size_t>(r)];
        EXPECT_EQ(first_mismatch(out, expected.slice(begin, begin + out.numel())), -1)
            << "world " << world << " n " << n;
      });
    }
  }
}

// Each rank's block, in rank order, whatever the counts (zeros included): the check both allgatherv
// tests share.
void expect_gathered(const Tensor& out, const std::vector<int64_t>& counts, const std::string& what) {
  int64_t at = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    EXPECT_EQ(first_mismatch(out.slice(at, at + counts[r]), rank_input(DType::i64, static_cast<int>(r), counts[r])), -1)
        << what << ": block of rank " << r;
    at += counts[r];
  }
}

TEST(RingAllgatherv, ZeroAndUnequalCountsWithSmallChunks) {
  for (int world = 1; world <= 5; ++world) {
    std::vector<int64_t> counts;
    for (int r = 0; r < world; ++r) counts.push_back((r * 37) % 11);  // 0, 4, 8, 1, 5
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    run_group(world, [&](Group& group) {
      const Tensor in = rank_input(DType::i64, group.rank(), counts[static_cast<size_t>(group.rank())]);
      Tensor out = Tensor::empty({total}, DType::i64);
      allgatherv(group, algorithm_tag(0), in.raw(), out.raw(), counts, 8, always_ring(8));
      expect_gathered(out, counts, "world " + std::to_string(world));
    });
  }
}

TEST(RingChunk, GrowsWithTheLargestBlockBetweenItsBounds) {
  AlgorithmOptions options;
  options.ring_chunk_bytes = 256;
  EXPECT_EQ(ring_chunk_for_blocks(options, 1 << 20), 256u);  // no maximum: fixed
  options.ring_chunk_max_bytes = 1024;
  EXPECT_EQ(ring_chunk_for_blocks(options, 0), 256u);
  EXPECT_EQ(ring_chunk_for_blocks(options, 1000), 256u);  // a quarter below the chunk
  EXPECT_EQ(ring_chunk_for_blocks(options, 2000), 500u);
  EXPECT_EQ(ring_chunk_for_blocks(options, 4096), 1024u);
  EXPECT_EQ(ring_chunk_for_blocks(options, 1 << 30), 1024u);
  options.ring_chunk_max_bytes = 100;  // below the chunk: fixed
  EXPECT_EQ(ring_chunk_for_blocks(options, 1 << 20), 256u);
  options.ring_chunk_bytes = 0;  // one chunk per block stays so
  options.ring_chunk_max_bytes = 1024;
  EXPECT_EQ(ring_chunk_for_blocks(options, 1 << 20), 0u);
}

// Chunks that grow with the blocks, in elements that do not divide them, with blocks of different
// sizes (every rank derives the chunk from the largest block, so they cut alike).
TEST(RingAllreduceAndAllgatherv, MatchReferenceWithChunksThatGrowWithTheBlocks) {
  for (int world = 2; world <= 5; ++world) {
    for (int64_t n : {7, 1001, 40000}) {
      AlgorithmOptions options = always_ring(12);
      options.ring_chunk_max_bytes = 4000;
      const Tensor expected = reference_reduce(DType::f32, ReduceOp::sum, world, n);
      std::vector<int64_t> counts;
      for (int r = 0; r < world; ++r) counts.push_back((r * 37 * n / 11) % (n + 1));
      const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
      run_group(world, [&](Group& group) {
        Tensor t = rank_input(DType::f32, group.rank(), n);
        allreduce(group, algorithm_tag(0), t.raw(), n, DType::f32, ReduceOp::sum, options);
        EXPECT_EQ(first_mismatch(t, expected), -1) << "world " << world << " f32[" << n << "]";
        const Tensor in = rank_input(DType::i64, group.rank(), counts[static_cast<size_t>(group.rank())]);
        Tensor out = Tensor::empty({total}, DType::i64);
        allgatherv(group, algorithm_tag(1), in.raw(), out.raw(), counts, 8, options);
        expect_gathered(out, counts, "world " + std::to_string(world) + " n " + std::to_string(n));
      });
    }
  }
}

TEST(RecursiveDoublingAllgatherv, DeliversEveryBlockForPowerOfTwoWorldsAndIsAllgathervsChoiceBelowItsLimit) {
  for (int world : {1, 2, 4, 8}) {
    for (int pattern = 0; pattern < 3; ++pattern) {
      std::vector<int64_t> counts;
      for (int r = 0; r < world; ++r) {
        counts.push_back(pattern == 0 ? 5 : pattern == 1 ? (r * 37) % 11 : (r == world - 1 ? 1000 : 0));
      }
      const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
      for (bool direct : {true, false}) {
        run_group(world, [&](Group& group) {
          const auto mine = static_cast<size_t>(group.rank());
          const Tensor in = rank_input(DType::i64, group.rank(), counts[mine]);
          Tensor out = Tensor::empty({total}, DType::i64);
          if (direct) {
            const int64_t offset = std::accumulate(counts.begin(), counts.begin() + static_cast<std::ptrdiff_t>(mine),
                                                   int64_t{0});
            std::memcpy(out.data<int64_t>() + offset, in.raw(), static_cast<size_t>(counts[mine]) * 8);
            allgatherv_recursive_doubling(group, algorithm_tag(0), out.raw(), counts, 8);
          } else {
            allgatherv(group, algorithm_tag(0), in.raw(), out.raw(), counts, 8, never_ring());
          }
          expect_gathered(out, counts, "world " + std::to_string(world) + " pattern " + std::to_string(pattern));
        });
      }
    }
  }
  run_group(3, [&](Group& group) {
    int64_t x = 0;
    EXPECT_THROW(allgatherv_recursive_doubling(group, algorithm_tag(0), &x, {0, 0, 0}, 8), Error);
  });
}

TEST(Broadcast, TreeAndChunkedChainDeliverTheRootsBytesFromEveryRoot) {
  for (int world = 1; world <= 7; ++world) {
    for (const AlgorithmOptions& options : {never_ring(), always_ring(24)}) {
      for (int root = 0; root < world; ++root) {
        const int64_t n = 101;
        run_group(world, [&](Group& group) {
          Tensor t = rank_input(DType::f32, group.rank(), n);
          broadcast(group, algorithm_tag(0), t.raw(), t.nbytes(), root, options);
          EXPECT_EQ(first_mismatch(t, rank_input(DType::f32, root, n)), -1)
              << "world " << world << " root " << root << " chain " << (options.small_message_bytes == 0);
        });
      }
    }
  }
}

TEST(Broadcast, ChainWithMoreChunksThanRecvsKeptPostedDeliversEveryChunkInPlace) {
  for (int world : {2, 3, 5}) {
    const int64_t n = 2000;  // 334 chunks of 24 bytes, more than kMaxPostedRecvs: the window slides
    run_group(world, [&](Group& group) {
      Tensor t = rank_input(DType::f32, group.rank(), n);
      broadcast(group, algorithm_tag(0), t.raw(), t.nbytes(), 1, always_ring(24));
      EXPECT_EQ(first_mismatch(t, rank_input(DType::f32, 1, n)), -1) << "world " << world;
    });
  }
}

TEST(Barrier, DisseminationHoldsEveryRankUntilAllArrivedForWorldsUpToSeven) {
  for (int world = 1; world <= 7; ++world) {
    std::atomic<int> entered{0};
    run_group(world, [&](Group& group) {
      entered.fetch_add(1);
      barrier(group, algorithm_tag(0));
      EXPECT_EQ(entered.load(), world) << "world " << world << " rank " << group.rank();
    });
  }
}

// The ring keeps recvs posted ahead of need; when a rank fails in the middle, the others must leave
// with the failure (their posted recvs un-posted on the way out), not hang or crash.
TEST(RingAllreduce, ARankThatFailsMidwayMakesEveryOtherRankFailNamingIt) {
  constexpr int kWorld = 4;
  std::shared_ptr<LocalFabric> fabric;
  auto transports = make_local_transports(kWorld, &fabric);
  const std::vector<int> members = {0, 1, 2, 3};
  std::vector<std::string> errors(kWorld);
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      Group group(*transports[static_cast<size_t>(r)], members, r, 7, std::chrono::seconds(10));
      if (r == 2) {  // sends part of its first block, then fails
        std::vector<float> chunk(16, 1.0f);
        group.send(3, algorithm_tag(0), chunk.data(), sizeof(float) * chunk.size());
        fabric->fail(2, "injected failure");
        return;
      }
      std::vector<float> data(1 << 16, 1.0f);
      try {
        allreduce_ring(group, algorithm_tag(0), data.data(), static_cast<int64_t>(data.size()), DType::f32,
                       ReduceOp::sum, always_ring(64));
      } catch (const CommError& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r : {0, 1, 3}) {
    EXPECT_NE(errors[static_cast<size_t>(r)].find("rank 2 failed: injected failure"), std::string::npos)
        << "rank " << r << ": " << errors[static_cast<size_t>(r)];
  }
}

TEST(Group, CountsTheBytesOfItsOwnMessages) {
  run_group(2, [&](Group& group) {
    std::vector<char> buffer(1000);
    if (group.rank() == 0) {
      group.send(1, user_tag(3), buffer.data(), buffer.size());
      EXPECT_EQ(group.bytes_sent(), 1000u);
    } else {
      group.recv(0, user_tag(3), buffer.data(), buffer.size());
      EXPECT_EQ(group.bytes_received(), 1000u);
    }
  });
}

}  // namespace
}  // namespace tern
