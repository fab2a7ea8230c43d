// Tern's collectives (TransportCommunicator, what make_tcp_communicator builds) over each of the tcp
// backend's links — TCP sockets and shared-memory rings (small, so every collective's messages wrap
// around them) — with ranks as threads of this process, 2 to 4 of them.
#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <numeric>
#include <thread>
#include <tuple>

#include "comm/tcp/shm_transport.h"
#include "comm/tcp/tcp_store.h"
#include "comm/tcp/tcp_transport.h"
#include "comm/transport_communicator.h"
#include "tests/comm/collective_reference.h"
#include "tests/support/threads.h"

namespace tern {
namespace {

using std::chrono::seconds;
using testing::first_mismatch;
using testing::rank_input;
using testing::reference_reduce;

enum class Link { sockets, shared_memory };

// (link, world size)
class TransportCollectives : public ::testing::TestWithParam<std::tuple<Link, int>> {
 protected:
  int world() const { return std::get<1>(GetParam()); }

  // Runs body on world() threads, each a rank of one job over the link; rethrows the first failure.
  void run(const std::string& job_id, const std::function<void(Communicator&)>& body) {
    TcpStoreServer server;
    CommOptions options;
    options.timeout = seconds(10);  // a broken transport fails the test, never hangs it
    const int n = world();
    testing::run_on_threads(n, [&](int r) {
      auto store = connect_tcp_store(server.address(), seconds(5));
      std::shared_ptr<Transport> transport;
      if (std::get<0>(GetParam()) == Link::sockets) {
        transport = std::make_shared<TcpTransport>(TcpWorld{r, n, job_id}, *store, options);
      } else {
        transport = std::make_shared<ShmTransport>(TcpWorld{r, n, job_id}, *store, options, size_t{256} << 10);
      }
      std::vector<int> group(static_cast<size_t>(n));
      std::iota(group.begin(), group.end(), 0);
      TransportCommunicator comm(std::move(transport), std::move(group), 0, "tcp", options);
      EXPECT_EQ(comm.size(), n);
      body(comm);
    });
  }
};

TEST_P(TransportCollectives, AllreduceMatchesSequentialReference) {
  const int world = this->world();
  const std::pair<DType, ReduceOp> cases[] = {{DType::f32, ReduceOp::sum},
                                              {DType::f32, ReduceOp::avg},
                                              {DType::bf16, ReduceOp::sum},
                                              {DType::i32, ReduceOp::max}};
  run("allreduce", [&](Communicator& comm) {
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

TEST_P(TransportCollectives, AllgatherConcatenatesEveryRanksInputInRankOrder) {
  const int world = this->world();
  run("allgather", [&](Communicator& comm) {
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

TEST_P(TransportCollectives, SixteenMegabyteAllreduceMatchesReference) {
  const int world = this->world();
  const int64_t n = int64_t{4} << 20;  // 16 MB of f32
  const Tensor expected = reference_reduce(DType::f32, ReduceOp::sum, world, n);
  run("large", [&](Communicator& comm) {
    Tensor t = rank_input(DType::f32, comm.rank(), n);
    comm.allreduce(t, ReduceOp::sum);
    EXPECT_EQ(first_mismatch(t, expected), -1) << "on rank " << comm.rank();
  });
}

INSTANTIATE_TEST_SUITE_P(LinksAndWorlds, TransportCollectives,
                         ::testing::Combine(::testing::Values(Link::sockets, Link::shared_memory),
                                            ::testing::Values(2, 3, 4)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == Link::sockets ? "Sockets" : "SharedMemory") +
                                  "Ranks" + std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace tern
