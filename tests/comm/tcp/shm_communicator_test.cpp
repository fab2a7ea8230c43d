// Tern's collectives over ShmTransports: ranks as threads of this process, one in-memory store, the
// same TransportCommunicator the tcp backend builds when all its ranks share a host.
#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <numeric>
#include <thread>

#include "comm/local/local.h"
#include "comm/tcp/shm_transport.h"
#include "comm/transport_communicator.h"
#include "tests/comm/collective_reference.h"
#include "tests/support/threads.h"

namespace tern {
namespace {

using std::chrono::seconds;
using testing::first_mismatch;
using testing::rank_input;
using testing::reference_reduce;

// Runs body on n threads, each a rank of one shared-memory world; rethrows the first failure.
void run_shm(int n, const std::string& job_id, const std::function<void(Communicator&)>& body) {
  auto store = make_memory_store();
  CommOptions options;
  options.timeout = seconds(10);  // a broken transport fails the test, never hangs it
  testing::run_on_threads(n, [&](int r) {
    // Small rings: every collective's messages wrap around them.
    auto transport =
        std::make_shared<ShmTransport>(TcpWorld{r, n, job_id}, *store, options, size_t{256} << 10);
    std::vector<int> group(static_cast<size_t>(n));
    std::iota(group.begin(), group.end(), 0);
    TransportCommunicator comm(std::move(transport), std::move(group), 0, "tcp", options);
    body(comm);
  });
}

class ShmCollectives : public ::testing::TestWithParam<int> {};

TEST_P(ShmCollectives, AllreduceMatchesSequentialReference) {
  const int world = GetParam();
  const std::pair<DType, ReduceOp> cases[] = {{DType::f32, ReduceOp::sum},
                                              {DType::f32, ReduceOp::avg},
                                              {DType::bf16, ReduceOp::sum},
                                              {DType::i32, ReduceOp::max}};
  run_shm(world, "shm-allreduce", [&](Communicator& comm) {
    for (const auto& [dtype, op] : cases) {
      for (int64_t n : {0, 1, 7, 13, 1000003}) {
        Tensor t = rank_input(dtype, comm.rank(), n);
        comm.allreduce(t, op);
        EXPECT_EQ(first_mismatch(t, reference_reduce(dtype, op, world, n)), -1)
            << dtype_name(dtype) << "[" << n << "] " << reduce_op_name(op) << " on rank " << comm.rank();
      }
    }
  });
}

TEST_P(ShmCollectives, AllgatherConcatenatesEveryRanksInputInRankOrder) {
  const int world = GetParam();
  run_shm(world, "shm-allgather", [&](Communicator& comm) {
    for (int64_t n : {0, 1, 7, 1000003}) {
      const Tensor in = rank_input(DType::f32, comm.rank(), n);
      Tensor out = Tensor::empty({n * world}, DType::f32);
      comm.allgather(in, out);
      for (int r = 0; r < world; ++r) {
        EXPECT_EQ(first_mismatch(out.slice(r * n, (r + 1) * n), rank_input(DType::f32, r, n)), -1)
            << "f32[" << n << "] block of rank " << r << " on rank " << comm.rank();
      }
    }
  });
}

TEST_P(ShmCollectives, SixteenMegabyteAllreduceMatchesReference) {
  const int world = GetParam();
  const int64_t n = int64_t{4} << 20;  // 16 MB of f32
  const Tensor expected = reference_reduce(DType::f32, ReduceOp::sum, world, n);
  run_shm(world, "shm-large", [&](Communicator& comm) {
    Tensor t = rank_input(DType::f32, comm.rank(), n);
    comm.allreduce(t, ReduceOp::sum);
    EXPECT_EQ(first_mismatch(t, expected), -1) << "on rank " << comm.rank();
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, ShmCollectives, ::testing::Values(2, 3, 4));

}  // namespace
}  // namespace tern
