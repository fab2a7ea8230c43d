#include "comm/tcp/shm_collectives.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "comm/local/local.h"
#include "comm/tcp/shm_segment.h"
#include "comm/transport_communicator.h"
#include "runtime/rng.h"
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
std::vector<std::unique_ptr<ShmCollectives>> make_world(int n, size_t slot_bytes) {
  static int serial = 0;
  const std::string name = "/tern-test-world-" + std::to_string(::getpid()) + "-" + std::to_string(++serial);
  std::vector<std::unique_ptr<ShmCollectives>> world;
  world.push_back(std::make_unique<ShmCollectives>(ShmCollectives::create(name, n, slot_bytes, kPoll)));
  for (int r = 1; r < n; ++r) {
    world.push_back(std::make_unique<ShmCollectives>(ShmCollectives::open(name, r, n, kPoll)));
  }
  shm::Segment::unlink(name);
  return world;
}

std::string first_problem(const std::vector<std::string>& problems) {
  for (const std::string& p : problems) {
    if (!p.empty()) return p;
  }
  return "";
}

// Every rank reduces rank_input(dtype, rank, n) with `op` (avg is the caller's: it sums here).
std::string check_allreduce(std::vector<std::unique_ptr<ShmCollectives>>& world, DType dtype, ReduceOp op,
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
  return first_problem(problems);
}

TEST(ShmCollectives, MatchesTheReferenceForEveryDtypeOpSizeAndWorldSize) {
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

TEST(ShmCollectives, ABufferOfManyDefaultSlotsMatchesTheReference) {
  auto world = make_world(3, ShmCollectives::kDefaultSlotBytes);
  // 17 MB of f32: 17 pieces, the last one partial.
  EXPECT_EQ(check_allreduce(world, DType::f32, ReduceOp::sum, (int64_t{17} << 20) / 4 + 5), "");
}

TEST(ShmCollectives, ManyConsecutiveAllreducesOfVaryingSizesStayInStep) {
  auto world = make_world(4, 8192);
  for (int i = 0; i < 60; ++i) {
    const int64_t n = (i * 7919) % 5000;  // 0 .. 4999 elements: 0 to 3 pieces each
    ASSERT_EQ(check_allreduce(world, DType::i32, ReduceOp::sum, n), "") << "allreduce " << i << ", n=" << n;
  }
}

// Each rank contributes counts[r] bytes of its own pattern; out must hold them all in rank order.
std::string check_allgatherv(std::vector<std::unique_ptr<ShmCollectives>>& world, const std::vector<int64_t>& counts,
                             bool in_place) {
  const int size = static_cast<int>(world.size());
  std::vector<int64_t> offset(counts.size() + 1, 0);
  for (size_t r = 0; r < counts.size(); ++r) offset[r + 1] = offset[r] + counts[r];
  auto byte = [](int r, int64_t i) { return static_cast<uint8_t>((r * 131 + i * 7 + i / 251) & 0xFF); };
  std::vector<std::string> problems(static_cast<size_t>(size));
  testing::run_on_threads(size, [&](int r) {
    std::vector<uint8_t> in(static_cast<size_t>(counts[static_cast<size_t>(r)]));
    for (size_t i = 0; i < in.size(); ++i) in[i] = byte(r, static_cast<int64_t>(i));
    std::vector<uint8_t> out(static_cast<size_t>(offset.back()), 0xEE);
    const void* from = in.data();
    if (in_place) {
      std::copy(in.begin(), in.end(), out.begin() + offset[static_cast<size_t>(r)]);
      from = out.data() + offset[static_cast<size_t>(r)];
    }
    world[static_cast<size_t>(r)]->allgatherv(from, out.data(), counts, 1, seconds(30));
    for (int k = 0; k < size && problems[static_cast<size_t>(r)].empty(); ++k) {
      for (int64_t i = 0; i < counts[static_cast<size_t>(k)]; ++i) {
        if (out[static_cast<size_t>(offset[static_cast<size_t>(k)] + i)] != byte(k, i)) {
          problems[static_cast<size_t>(r)] = "rank " + std::to_string(r) + ": rank " + std::to_string(k) +
                                             "'s byte " + std::to_string(i) + " differs";
          break;
        }
      }
    }
  });
  return first_problem(problems);
}

TEST(ShmCollectives, AllgathervDeliversEveryRanksBytesWhateverTheCounts) {
  for (int ranks = 1; ranks <= 4; ++ranks) {
    auto world = make_world(ranks, 4096);
    std::vector<std::vector<int64_t>> cases = {std::vector<int64_t>(static_cast<size_t>(ranks), 0),
                                               std::vector<int64_t>(static_cast<size_t>(ranks), 1),
                                               std::vector<int64_t>(static_cast<size_t>(ranks), 16411)};
    std::vector<int64_t> uneven;  // zero, one, a slot and a bit, many slots
    for (int r = 0; r < ranks; ++r) uneven.push_back(std::vector<int64_t>{0, 1, 4097, 50021}[static_cast<size_t>(r)]);
    cases.push_back(uneven);
    for (const auto& counts : cases) {
      for (bool in_place : {false, true}) {
        EXPECT_EQ(check_allgatherv(world, counts, in_place), "")
            << ranks << " ranks, counts[last] " << counts.back() << (in_place ? ", in place" : "");
      }
    }
  }
}

TEST(ShmCollectives, AllreducesAndAllgathersInterleavedStayInStep) {
  auto world = make_world(3, 4096);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(check_allreduce(world, DType::f32, ReduceOp::sum, (i * 977) % 3000), "") << i;
    ASSERT_EQ(check_allgatherv(world, {(i * 131) % 9000, 0, (i * 7919) % 12000}, i % 2 == 0), "") << i;
  }
}

// Each rank runs its calls back to back, pausing now and then, so ranks reach each call — of another
// size or collective than the last, of 0 to 4 pieces — at their own pace, some while others still
// read the last one. Every result must be right and no call mistaken for another.
TEST(ShmCollectives, RanksRunningMixedCallsBackToBackAtTheirOwnPaceKeepEveryResult) {
  constexpr int kRanks = 3, kCalls = 40;
  auto world = make_world(kRanks, 4096);
  std::vector<std::string> problems(kRanks);
  testing::run_on_threads(kRanks, [&](int r) {
    ShmCollectives& me = *world[static_cast<size_t>(r)];
    auto byte = [](int call, int rank, int64_t i) { return static_cast<uint8_t>((call * 31 + rank * 131 + i * 7) & 0xFF); };
    for (int call = 0; call < kCalls && problems[static_cast<size_t>(r)].empty(); ++call) {
      if ((call + r) % 5 == 0) std::this_thread::sleep_for(milliseconds(2));
      if (call % 3 == 2) {
        const int64_t n = 1000 + (call * 977) % 4000;  // 1-4 pieces of 4 KB
        Tensor t = rank_input(DType::f32, r, n);
        me.allreduce(t.raw(), n, DType::f32, ReduceOp::sum, seconds(30));
        if (first_mismatch(t, reference_reduce(DType::f32, ReduceOp::sum, kRanks, n)) >= 0)
          problems[static_cast<size_t>(r)] = "allreduce " + std::to_string(call);
        continue;
      }
      std::vector<int64_t> counts(kRanks);
      for (int k = 0; k < kRanks; ++k) counts[static_cast<size_t>(k)] = (call * 1237 + k * 4099) % 13000;  // 0-4 pieces
      std::vector<uint8_t> in(static_cast<size_t>(counts[static_cast<size_t>(r)]));
      for (size_t i = 0; i < in.size(); ++i) in[i] = byte(call, r, static_cast<int64_t>(i));
      std::vector<uint8_t> out(static_cast<size_t>(std::accumulate(counts.begin(), counts.end(), int64_t{0})));
      me.allgatherv(in.data(), out.data(), counts, 1, seconds(30));
      int64_t at = 0;
      for (int k = 0; k < kRanks; ++k) {
        for (int64_t i = 0; i < counts[static_cast<size_t>(k)]; ++i, ++at) {
          if (out[static_cast<size_t>(at)] != byte(call, k, i)) {
            problems[static_cast<size_t>(r)] = "allgather " + std::to_string(call) + ": rank " + std::to_string(k) +
                                               "'s byte " + std::to_string(i);
            break;
          }
        }
      }
    }
  });
  EXPECT_EQ(first_problem(problems), "");
}

// Float sums depend on their order. Whichever rank comes first, every element must be summed in rank
// order — the same bits in every run (a resumed run continues bit for bit), and the bits of a plain
// loop over the ranks.
TEST(ShmCollectives, AnF32SumIsTheRankOrderSumBitForBitWhateverOrderTheRanksArriveIn) {
  constexpr int kRanks = 4;
  constexpr int64_t n = 3000;  // 3 pieces of 4 KB
  auto world = make_world(kRanks, 4096);
  std::vector<std::vector<float>> inputs(kRanks, std::vector<float>(n));
  Rng rng(5, 1);
  for (auto& in : inputs) {
    for (float& v : in) v = (rng.uniform() - 0.5f) * std::pow(10.0f, 6.0f * rng.uniform() - 3.0f);
  }
  std::vector<float> expected(n);
  for (int64_t i = 0; i < n; ++i) {
    float acc = inputs[0][static_cast<size_t>(i)];
    for (int r = 1; r < kRanks; ++r) acc += inputs[static_cast<size_t>(r)][static_cast<size_t>(i)];
    expected[static_cast<size_t>(i)] = acc;
  }
  for (int trial = 0; trial < 12; ++trial) {
    std::vector<std::vector<float>> got(kRanks);
    testing::run_on_threads(kRanks, [&](int r) {
      // A different rank late each time, so the inputs arrive in many orders.
      if (r == trial % kRanks) std::this_thread::sleep_for(milliseconds(3));
      if (r == (trial / kRanks) % kRanks) std::this_thread::sleep_for(milliseconds(1));
      got[static_cast<size_t>(r)] = inputs[static_cast<size_t>(r)];
      world[static_cast<size_t>(r)]->allreduce(got[static_cast<size_t>(r)].data(), n, DType::f32, ReduceOp::sum,
                                               seconds(30));
    });
    for (int r = 0; r < kRanks; ++r) {
      ASSERT_EQ(std::memcmp(got[static_cast<size_t>(r)].data(), expected.data(), n * sizeof(float)), 0)
          << "trial " << trial << ", rank " << r;
    }
  }
}

TEST(ShmCollectives, CountsTwoTimesPMinusOneOverPOfTheBufferEachWay) {
  auto world = make_world(4, 4096);
  std::vector<WorldCollectives::Moved> moved(4);
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

TEST(ShmCollectives, ARankThatNeverComesFailsTheOthersByTheTimeoutNamingItAndLaterCallsFailAtOnce) {
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
    EXPECT_NE(std::string(e.what()).find("an earlier collective failed"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(1));
}

TEST(ShmCollectives, ARankThatLeavesFailsTheOthersPromptlyNamingIt) {
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

// Every rank reads the others' inputs by its own sizes: calls that differ must fail on every rank,
// naming the rank and both calls, instead of reducing or copying what was never written.
TEST(ShmCollectives, RanksThatCallDifferentCollectivesOrSizesAllFailNamingBothCalls) {
  struct Case {
    const char* what;
    std::function<void(ShmCollectives&, int)> call;  // rank r's call
    const char* rank1_called;                         // in the error rank 0 sees
  };
  auto allreduce = [](ShmCollectives& c, int64_t n, DType dtype, ReduceOp op) {
    Tensor t = rank_input(dtype, 0, n);
    c.allreduce(t.raw(), n, dtype, op, seconds(10));
  };
  auto allgather = [](ShmCollectives& c, std::vector<int64_t> counts) {
    int64_t total = 0;
    for (int64_t k : counts) total += k;
    std::vector<float> out(static_cast<size_t>(total));
    std::vector<float> in(static_cast<size_t>(std::max<int64_t>(counts[0], counts[1])));
    c.allgatherv(in.data(), out.data(), counts, sizeof(float), seconds(10));
  };
  const std::vector<Case> cases = {
      {"sizes", [&](ShmCollectives& c, int r) { allreduce(c, r == 1 ? 2000 : 1000, DType::f32, ReduceOp::sum); },
       "rank 1 called allreduce(sum) of f32[2000] where this rank called allreduce(sum) of f32[1000]"},
      {"sizes within one piece",
       [&](ShmCollectives& c, int r) { allreduce(c, r == 1 ? 8 : 7, DType::f32, ReduceOp::sum); },
       "rank 1 called allreduce(sum) of f32[8]"},
      {"dtypes", [&](ShmCollectives& c, int r) { allreduce(c, 64, r == 1 ? DType::i32 : DType::f32, ReduceOp::sum); },
       "rank 1 called allreduce(sum) of i32[64]"},
      {"ops", [&](ShmCollectives& c, int r) { allreduce(c, 64, DType::f32, r == 1 ? ReduceOp::max : ReduceOp::sum); },
       "rank 1 called allreduce(max) of f32[64]"},
      {"collectives",
       [&](ShmCollectives& c, int r) {
         if (r == 1) return allgather(c, {16, 16, 16});
         allreduce(c, 12, DType::f32, ReduceOp::sum);  // 48 bytes, as the allgather's output
       },
       "rank 1 called allgather of 192 bytes in all where this rank called allreduce(sum) of f32[12]"},
      {"allgatherv counts",
       [&](ShmCollectives& c, int r) { allgather(c, r == 1 ? std::vector<int64_t>{5, 3, 4} : std::vector<int64_t>{3, 5, 4}); },
       "rank 1 called allgather of 48 bytes in all where this rank called allgather of 48 bytes in all"},
  };
  for (const Case& c : cases) {
    auto world = make_world(3, 4096);
    std::vector<std::string> errors(3);
    testing::run_on_threads(3, [&](int r) {
      try {
        c.call(*world[static_cast<size_t>(r)], r);
      } catch (const CommError& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
    EXPECT_NE(errors[0].find(c.rank1_called), std::string::npos) << c.what << ": " << errors[0];
    EXPECT_NE(errors[1].find("where this rank called"), std::string::npos) << c.what << ": " << errors[1];
    EXPECT_NE(errors[2].find("rank 1 called"), std::string::npos) << c.what << ": " << errors[2];
    // and no rank goes on as if nothing happened
    try {
      allreduce(*world[0], 4, DType::f32, ReduceOp::sum);
      ADD_FAILURE() << c.what << ": an allreduce after the mismatch succeeded";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("an earlier collective failed"), std::string::npos) << e.what();
    }
  }
}

TEST(ShmCollectives, ASegmentThatIsNotOneForThisWorldIsRefused) {
  auto world = make_world(2, 4096);
  const std::string name = "/tern-test-world-mismatch-" + std::to_string(::getpid());
  auto three = ShmCollectives::create(name, 3, 4096, kPoll);
  EXPECT_THROW(ShmCollectives::open(name, 1, 2, kPoll), CommError);  // made for 3 ranks
  shm::Segment::unlink(name);
  EXPECT_THROW(ShmCollectives::open(name, 1, 3, kPoll), CommError);  // gone
}

// The shared-memory transport gives its world one, and the world communicator uses it: its
// allreduces (every op, avg included) and allgathers match the reference, and a split of the same
// ranks — which must not use it — runs its own collectives in between without disturbing them.
TEST(ShmCollectives, TheWorldCommunicatorOfASharedMemoryWorldUsesItAndSplitsDoNot) {
  auto store = make_memory_store();
  auto transports = testing::make_shm_world(3, *store, "shm-world-allreduce");
  for (auto& t : transports) ASSERT_NE(t->world_collectives(), nullptr);
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
    for (int64_t n : {int64_t{3}, int64_t{300007}}) {  // allgather through the segment, allgatherv in a split
      Tensor in = rank_input(DType::i32, r, n);
      Tensor all = Tensor::empty({3 * n}, DType::i32);
      Tensor some = Tensor::empty({n + 2}, DType::i32);
      const std::vector<int64_t> counts = {n, 0, 2};
      Tensor mine = rank_input(DType::i32, r, counts[static_cast<size_t>(r)]);
      auto wa = world.allgather_async(in, all);
      auto wb = split->allgatherv_async(mine, some, counts);
      wa->wait();
      wb->wait();
      for (int k = 0; k < 3; ++k) {
        if (first_mismatch(all.slice(k * n, (k + 1) * n), rank_input(DType::i32, k, n)) >= 0)
          problems[static_cast<size_t>(r)] += "allgather from " + std::to_string(k) + "; ";
      }
      if (first_mismatch(some.slice(0, n), rank_input(DType::i32, 0, n)) >= 0 ||
          first_mismatch(some.slice(n, n + 2), rank_input(DType::i32, 2, 2)) >= 0)
        problems[static_cast<size_t>(r)] += "allgatherv; ";
    }
    const uint64_t floor = 2 * 70001 * 4 * 2 / 3;  // the 70001-element f32 sum alone
    if (world.bytes_sent() < floor || world.bytes_received() < floor) problems[static_cast<size_t>(r)] += "bytes";
  });
  for (const std::string& p : problems) EXPECT_EQ(p, "");
}

}  // namespace
}  // namespace tern
