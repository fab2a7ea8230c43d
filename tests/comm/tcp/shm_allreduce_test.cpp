#include "comm/tcp/shm_allreduce.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "comm/local/local.h"
#include "comm/tcp/shm_segment.h"
#include "comm/transport_communicator.h"
#include "tests/comm/collective_reference.h"
#include "tests/comm/tcp/tcp_test_support.h"
#include "tests/support/threads.h"

namespace tern {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::first_mismatch;
using testing::rank_input;
using testing::reference_reduce;

constexpr std::chrono::microseconds kPoll{200};

// n ranks of one segment as threads of this process: rank 0 creates it, the others open it, and the
// name is unlinked once all have mapped it (as ShmTransport does).
std::vector<std::unique_ptr<ShmWorldAllreduce>> make_world(int n, size_t slot_bytes) {
  static int serial = 0;
  const std::string name = "/tern-test-world-" + std::to_string(::getpid()) + "-" + std::to_string(++serial);
  std::vector<std::unique_ptr<ShmWorldAllreduce>> world;
  world.push_back(std::make_unique<ShmWorldAllreduce>(ShmWorldAllreduce::create(name, n, slot_bytes, kPoll)));
  for (int r = 1; r < n; ++r) {
    world.push_back(std::make_unique<ShmWorldAllreduce>(ShmWorldAllreduce::open(name, r, n, kPoll)));
  }
  shm::Segment::unlink(name);
  return world;
}

// Every rank reduces rank_input(dtype, rank, n) with `op` (avg is the caller's: it sums here).
std::string check_allreduce(std::vector<std::unique_ptr<ShmWorldAllreduce>>& world, DType dtype, ReduceOp op,
                            int64_t n, milliseconds timeout = seconds(30)) {
  const int size = static_cast<int>(world.size());
  const Tensor expected = reference_reduce(dtype, op, size, n);
  std::vector<std::string> problems(static_cast<size_t>(size));
  testing::run_on_threads(size, [&](int r) {
    Tensor t = rank_input(dtype, r, n);
    world[static_cast<size_t>(r)]->allreduce(t.raw(), n, dtype, op, timeout);
    const int64_t bad = first_mismatch(t, expected);
    if (bad >= 0) problems[static_cast<size_t>(r)] = "rank " + std::to_string(r) + " differs at " + std::to_string(bad);
  });
  for (const std::string& p : problems) {
    if (!p.empty()) return p;
  }
  return "";
}

TEST(ShmWorldAllreduce, MatchesTheReferenceForEveryDtypeOpSizeAndWorldSize) {
  // 4 KB slots: the larger sizes go through many pieces, and shares of a piece end mid-way.
  for (int ranks = 1; ranks <= 4; ++ranks) {
    auto world = make_world(ranks, 4096);
    for (DType dtype : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64}) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
        for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1021}, int64_t{16411}, int64_t{300001}}) {
          EXPECT_EQ(check_allreduce(world, dtype, op, n), "")
              << ranks << " ranks, " << dtype_name(dtype) << ", " << reduce_op_name(op) << ", n=" << n;
        }
      }
    }
  }
}

TEST(ShmWorldAllreduce, ABufferOfManyDefaultSlotsMatchesTheReference) {
  auto world = make_world(3, ShmWorldAllreduce::kDefaultSlotBytes);
  // 17 MB of f32: 17 pieces, the last one partial.
  EXPECT_EQ(check_allreduce(world, DType::f32, ReduceOp::sum, (int64_t{17} << 20) / 4 + 5), "");
}

TEST(ShmWorldAllreduce, ManyConsecutiveAllreducesOfVaryingSizesStayInStep) {
  auto world = make_world(4, 8192);
  for (int i = 0; i < 60; ++i) {
    const int64_t n = (i * 7919) % 5000;  // 0 .. 4999 elements: 0 to 3 pieces each
    ASSERT_EQ(check_allreduce(world, DType::i32, ReduceOp::sum, n), "") << "allreduce " << i << ", n=" << n;
  }
}

TEST(ShmWorldAllreduce, CountsTwoTimesPMinusOneOverPOfTheBufferEachWay) {
  auto world = make_world(4, 4096);
  std::vector<WorldAllreduce::Moved> moved(4);
  const int64_t n = 4096;  // 16 KB: 4 pieces of 1024 floats, shares of 256
  testing::run_on_threads(4, [&](int r) {
    Tensor t = rank_input(DType::f32, r, n);
    moved[static_cast<size_t>(r)] = world[static_cast<size_t>(r)]->allreduce(t.raw(), n, DType::f32, ReduceOp::sum, seconds(30));
  });
  for (const auto& m : moved) {
    EXPECT_EQ(m.sent, uint64_t{2} * 3 * n * 4 / 4);
    EXPECT_EQ(m.received, uint64_t{2} * 3 * n * 4 / 4);
  }
}

TEST(ShmWorldAllreduce, ARankThatNeverComesFailsTheOthersByTheTimeoutNamingItAndLaterCallsFailAtOnce) {
  auto world = make_world(3, 4096);
  std::vector<std::string> errors(2);
  testing::run_on_threads(2, [&](int r) {  // rank 2 never calls
    Tensor t = rank_input(DType::f32, r, 100);
    try {
      world[static_cast<size_t>(r)]->allreduce(t.raw(), 100, DType::f32, ReduceOp::sum, milliseconds(300));
    } catch (const CommError& e) {
      errors[static_cast<size_t>(r)] = e.what();
    }
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errors[static_cast<size_t>(r)].find("rank " + std::to_string(r) +
                                                  ": shared-memory allreduce timed out after 300 ms waiting for rank 2"),
              std::string::npos)
        << errors[static_cast<size_t>(r)];
  }
  Tensor t = rank_input(DType::f32, 0, 100);
  const auto start = std::chrono::steady_clock::now();
  try {
    world[0]->allreduce(t.raw(), 100, DType::f32, ReduceOp::sum, seconds(30));
    ADD_FAILURE() << "an allreduce after a failed one succeeded";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("an earlier one failed"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(1));
}

TEST(ShmWorldAllreduce, ARankThatLeavesFailsTheOthersPromptlyNamingIt) {
  auto world = make_world(3, 4096);
  world[1].reset();  // rank 1 closes its mapping, as a transport being destroyed does
  std::vector<std::string> errors(3);
  const auto start = std::chrono::steady_clock::now();
  testing::run_on_threads(3, [&](int r) {
    if (r == 1) return;
    Tensor t = rank_input(DType::f32, r, 100);
    try {
      world[static_cast<size_t>(r)]->allreduce(t.raw(), 100, DType::f32, ReduceOp::sum, seconds(30));
    } catch (const CommError& e) {
      errors[static_cast<size_t>(r)] = e.what();
    }
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  for (int r : {0, 2}) {
    EXPECT_NE(errors[static_cast<size_t>(r)].find("rank 1 closed its transport"), std::string::npos)
        << errors[static_cast<size_t>(r)];
  }
}

TEST(ShmWorldAllreduce, ASegmentThatIsNotOneForThisWorldIsRefused) {
  auto world = make_world(2, 4096);
  const std::string name = "/tern-test-world-mismatch-" + std::to_string(::getpid());
  auto three = ShmWorldAllreduce::create(name, 3, 4096, kPoll);
  EXPECT_THROW(ShmWorldAllreduce::open(name, 1, 2, kPoll), CommError);  // made for 3 ranks
  shm::Segment::unlink(name);
  EXPECT_THROW(ShmWorldAllreduce::open(name, 1, 3, kPoll), CommError);  // gone
}

// The shared-memory transport gives its world one, and the world communicator uses it: its
// allreduces (every op, avg included) match the reference, and a split of the same ranks — which
// must not use it — runs its own allreduces in between without disturbing them.
TEST(ShmWorldAllreduce, TheWorldCommunicatorOfASharedMemoryWorldUsesItAndSplitsDoNot) {
  auto store = make_memory_store();
  auto transports = testing::make_shm_world(3, *store, "shm-world-allreduce");
  for (auto& t : transports) ASSERT_NE(t->world_allreduce(), nullptr);
  std::vector<std::string> problems(3);
  testing::run_on_threads(3, [&](int r) {
    std::shared_ptr<Transport> transport = std::move(transports[static_cast<size_t>(r)]);
    CommOptions options = testing::short_timeouts();
    TransportCommunicator world(transport, {0, 1, 2}, 0, "tcp", options, /*world=*/true);
    auto split = world.split(0, r);
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      for (int64_t n : {int64_t{5}, int64_t{70001}}) {
        Tensor a = rank_input(DType::f32, r, n);
        Tensor b = rank_input(DType::bf16, r, n);
        auto wa = world.allreduce_async(a, op);
        auto wb = split->allreduce_async(b, op);
        wa->wait();
        wb->wait();
        if (first_mismatch(a, reference_reduce(DType::f32, op, 3, n)) >= 0 ||
            first_mismatch(b, reference_reduce(DType::bf16, op, 3, n)) >= 0)
          problems[static_cast<size_t>(r)] += std::string(reduce_op_name(op)) + " n=" + std::to_string(n) + "; ";
      }
    }
    const uint64_t floor = 2 * 70001 * 4 * 2 / 3;  // the 70001-element f32 sum alone
    if (world.bytes_sent() < floor || world.bytes_received() < floor) problems[static_cast<size_t>(r)] += "bytes";
  });
  for (const std::string& p : problems) EXPECT_EQ(p, "");
}

}  // namespace
}  // namespace tern
