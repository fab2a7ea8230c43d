// Every collective of the local backend against a sequential reference, for world sizes 1-4 and
// element counts 0, 1, 7, 13 (prime) and 1000003 (prime, not divisible by any world size > 1).
// 13 elements take allreduce's recursive-doubling path and 1000003 its ring path.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>

#include "comm/local/local.h"
#include "tests/comm/collective_reference.h"

namespace tern {
namespace {

using testing::first_mismatch;
using testing::rank_input;
using testing::reference_reduce;

constexpr int64_t kCounts[] = {0, 1, 7, 13, 1000003};
constexpr DType kReducible[] = {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64};
constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max};

CommOptions test_options() {
  CommOptions options;
  options.timeout = std::chrono::seconds(10);  // a broken algorithm fails the test, never hangs it
  return options;
}

std::string where(DType dtype, int64_t n, int rank, int64_t bad) {
  return detail::concat(dtype_name(dtype), "[", n, "] on rank ", rank, ": first wrong element ", bad);
}

// The concatenation, in rank order, of rank_input(dtype, r, counts[r]).
Tensor reference_gather(DType dtype, const std::vector<int64_t>& counts) {
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  Tensor out = Tensor::empty({total}, dtype);
  int64_t at = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    out.slice(at, at + counts[r]).copy_from(rank_input(dtype, static_cast<int>(r), counts[r]));
    at += counts[r];
  }
  return out;
}

class Collectives : public ::testing::TestWithParam<int> {};

TEST_P(Collectives, AllreduceMatchesSequentialReferenceForEveryDtypeOpAndSize) {
  const int world = GetParam();
  for (DType dtype : kReducible) {
    for (ReduceOp op : kOps) {
      for (int64_t n : kCounts) {
        const Tensor expected = reference_reduce(dtype, op, world, n);
        run_local(
            world,
            [&](Communicator& comm) {
              Tensor t = rank_input(dtype, comm.rank(), n);
              comm.allreduce(t, op);
              const int64_t bad = first_mismatch(t, expected);
              EXPECT_EQ(bad, -1) << reduce_op_name(op) << " " << where(dtype, n, comm.rank(), bad);
            },
            test_options());
      }
    }
  }
}

TEST_P(Collectives, ReduceScatterGivesEachRankItsEvenShareOfTheReduction) {
  const int world = GetParam();
  const std::pair<DType, ReduceOp> cases[] = {{DType::f32, ReduceOp::sum}, {DType::f32, ReduceOp::avg},
                                              {DType::f32, ReduceOp::max}, {DType::bf16, ReduceOp::sum},
                                              {DType::f16, ReduceOp::avg}, {DType::i32, ReduceOp::avg},
                                              {DType::i64, ReduceOp::max}};
  for (const auto& [dtype, op] : cases) {
    for (int64_t n : kCounts) {
      const Tensor expected = reference_reduce(dtype, op, world, n);
      const std::vector<int64_t> counts = even_counts(n, world);
      run_local(
          world,
          [&](Communicator& comm) {
            const Tensor in = rank_input(dtype, comm.rank(), n);
            Tensor out = Tensor::empty({counts[static_cast<size_t>(comm.rank())]}, dtype);
            comm.reduce_scatter(in, out, op);
            int64_t begin = 0;
            for (int r = 0; r < comm.rank(); ++r) begin += counts[static_cast<size_t>(r)];
            const int64_t bad = first_mismatch(out, expected.slice(begin, begin + out.numel()));
            EXPECT_EQ(bad, -1) << reduce_op_name(op) << " " << where(dtype, n, comm.rank(), bad);
            // The input is the caller's and stays untouched.
            EXPECT_EQ(first_mismatch(in, rank_input(dtype, comm.rank(), n)), -1);
          },
          test_options());
    }
  }
}

TEST_P(Collectives, AllgatherConcatenatesEveryRanksInputInRankOrder) {
  const int world = GetParam();
  for (DType dtype : {DType::f32, DType::u8}) {
    for (int64_t n : kCounts) {
      const Tensor expected = reference_gather(dtype, std::vector<int64_t>(static_cast<size_t>(world), n));
      run_local(
          world,
          [&](Communicator& comm) {
            const Tensor in = rank_input(dtype, comm.rank(), n);
            Tensor out = Tensor::empty({n * world}, dtype);
            comm.allgather(in, out);
            const int64_t bad = first_mismatch(out, expected);
            EXPECT_EQ(bad, -1) << where(dtype, n, comm.rank(), bad);
          },
          test_options());
    }
  }
}

TEST_P(Collectives, AllgathervConcatenatesUnequalAndZeroCounts) {
  const int world = GetParam();
  for (int64_t n : kCounts) {
    std::vector<int64_t> counts;
    for (int r = 0; r < world; ++r) counts.push_back(r % 2 == 1 ? 0 : n + r);  // odd ranks send nothing
    const Tensor expected = reference_gather(DType::f32, counts);
    run_local(
        world,
        [&](Communicator& comm) {
          const Tensor in = rank_input(DType::f32, comm.rank(), counts[static_cast<size_t>(comm.rank())]);
          Tensor out = Tensor::empty({expected.numel()}, DType::f32);
          comm.allgatherv(in, out, counts);
          const int64_t bad = first_mismatch(out, expected);
          EXPECT_EQ(bad, -1) << where(DType::f32, n, comm.rank(), bad);
        },
        test_options());
  }
}

TEST_P(Collectives, BroadcastGivesEveryRankTheRootsTensor) {
  const int world = GetParam();
  for (DType dtype : {DType::f32, DType::i64}) {
    for (int64_t n : kCounts) {
      for (int root = 0; root < world; ++root) {
        const Tensor expected = rank_input(dtype, root, n);
        run_local(
            world,
            [&](Communicator& comm) {
              Tensor t = rank_input(dtype, comm.rank(), n);
              comm.broadcast(t, root);
              const int64_t bad = first_mismatch(t, expected);
              EXPECT_EQ(bad, -1) << "root " << root << " " << where(dtype, n, comm.rank(), bad);
            },
            test_options());
      }
    }
  }
}

TEST_P(Collectives, NoRankLeavesABarrierBeforeEveryRankEnteredIt) {
  const int world = GetParam();
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> entered{0};
    run_local(
        world,
        [&](Communicator& comm) {
          entered.fetch_add(1);
          comm.barrier();
          EXPECT_EQ(entered.load(), world)
              << "rank " << comm.rank() << " left barrier round " << round << " early";
        },
        test_options());
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, Collectives, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return "world" + std::to_string(info.param);
                         });

// At least 16 MB per buffer, where the ring is cut into many chunks.
class LargeCollectives : public ::testing::TestWithParam<int> {};

TEST_P(LargeCollectives, SixteenMegabyteAllreduceMatchesReference) {
  const int world = GetParam();
  const int64_t n = 4194319;  // prime, 16.8 MB of f32
  const Tensor expected = reference_reduce(DType::f32, ReduceOp::sum, world, n);
  run_local(
      world,
      [&](Communicator& comm) {
        Tensor t = rank_input(DType::f32, comm.rank(), n);
        comm.allreduce(t, ReduceOp::sum);
        const int64_t bad = first_mismatch(t, expected);
        EXPECT_EQ(bad, -1) << where(DType::f32, n, comm.rank(), bad);
      },
      test_options());
}

TEST_P(LargeCollectives, SixteenMegabyteAllgatherMatchesReference) {
  const int world = GetParam();
  const int64_t n = 4194319 / world + 1;  // the gathered buffer is >= 16 MB
  const Tensor expected = reference_gather(DType::f32, std::vector<int64_t>(static_cast<size_t>(world), n));
  run_local(
      world,
      [&](Communicator& comm) {
        const Tensor in = rank_input(DType::f32, comm.rank(), n);
        Tensor out = Tensor::empty({n * world}, DType::f32);
        comm.allgather(in, out);
        const int64_t bad = first_mismatch(out, expected);
        EXPECT_EQ(bad, -1) << where(DType::f32, n, comm.rank(), bad);
      },
      test_options());
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, LargeCollectives, ::testing::Values(2, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return "world" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace tern
