// The tcp backend end to end: Tern's collectives over TcpTransports, ranks as threads of this
// process, each with its own client of one TcpStoreServer (as separate processes would have).
#include "comm/tcp/tcp_communicator.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "comm/tcp/tcp_store.h"
#include "tests/comm/collective_reference.h"
#include "tests/support/threads.h"

namespace tern {
namespace {

using std::chrono::seconds;
using testing::first_mismatch;
using testing::rank_input;
using testing::reference_reduce;

CommOptions test_options() {
  CommOptions options;
  options.timeout = seconds(10);  // a broken backend fails the test, never hangs it
  return options;
}

// Runs body on n threads, each rank of one tcp job; rethrows the first failure.
void run_tcp(int n, const std::string& job_id, const std::function<void(Communicator&)>& body) {
  TcpStoreServer server;
  testing::run_on_threads(n, [&](int r) {
    auto comm = make_tcp_communicator(TcpWorld{r, n, job_id},
                                      connect_tcp_store(server.address(), seconds(5)), test_options());
    body(*comm);
  });
}

// The collectives themselves are tested over each link in transport_collectives_test.cpp; here,
// the communicator make_tcp_communicator builds (on one host: its shared-memory path).
TEST(TcpCommunicator, BuildsATcpBackendCommunicatorWhoseAllreduceMatchesTheReference) {
  run_tcp(3, "one-host", [&](Communicator& comm) {
    EXPECT_EQ(comm.backend(), "tcp");
    EXPECT_EQ(comm.size(), 3);
    Tensor t = rank_input(DType::f32, comm.rank(), 1000003);
    comm.allreduce(t, ReduceOp::sum);
    EXPECT_EQ(first_mismatch(t, reference_reduce(DType::f32, ReduceOp::sum, 3, 1000003)), -1);
  });
}

// The names of this process's threads, from /proc (what top -H, gdb and perf show).
std::multiset<std::string> thread_names() {
  std::multiset<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream in(task.path() / "comm");
    std::string name;
    if (std::getline(in, name)) names.insert(name);
  }
  return names;
}

TEST(TcpCommunicator, CommunicationThreadsCarryNames) {
  std::multiset<std::string> during;  // written by rank 0 only, read after the ranks are joined
  run_tcp(2, "thread-names", [&](Communicator& comm) {
    Tensor t = rank_input(DType::f32, comm.rank(), 10);
    comm.allreduce_async(t, ReduceOp::sum)->wait();  // starts the communication thread
    comm.barrier();
    if (comm.rank() == 0) during = thread_names();
    comm.barrier();
  });
  EXPECT_EQ(during.count("tern-store"), 1u);
  EXPECT_GE(during.count("tern-comm"), 1u);
  // On one host each rank has a receiver thread per peer: rank 0's for rank 1, rank 1's for rank 0.
  EXPECT_EQ(during.count("tern-shm-r1"), 1u);
  EXPECT_EQ(during.count("tern-shm-r0"), 1u);
}

TEST(TcpCommunicator, RecvsOfEverySizePollUnlessTurnedOff) {
  CommOptions options;
  options.poll_max_bytes = 1000;
  EXPECT_EQ(polled_recv_limit(options), std::numeric_limits<size_t>::max());
  options.poll_every_size = false;
  EXPECT_EQ(polled_recv_limit(options), 1000u);
}

TEST(TcpCommunicator, SendsReadWhatCameInOnlyWhileEachRankHasACore) {
  CommOptions options;
  options.read_after_send_bytes = 5000;
  EXPECT_EQ(read_after_send_limit(options, 2, 2), 5000u);
  EXPECT_EQ(read_after_send_limit(options, 1, 8), 5000u);
  EXPECT_EQ(read_after_send_limit(options, 4, 2), 0u);
  options.read_after_send_bytes = 0;
  EXPECT_EQ(read_after_send_limit(options, 2, 2), 0u);
}

TEST(TcpCommunicator, RingChunksGrowOnlyWithMoreRanksThanCoresUnlessChosen) {
  CommOptions options;
  EXPECT_EQ(ring_chunk_for_host(options, 2, 2), 0u);  // comm/algorithms.h's default
  EXPECT_EQ(ring_chunk_for_host(options, 4, 2), kOversubscribedRingChunkBytes);
  options.ring_chunk_bytes = 4096;
  EXPECT_EQ(ring_chunk_for_host(options, 4, 2), 4096u);
  EXPECT_EQ(ring_chunk_for_host(options, 1, 8), 4096u);
}

TEST(TcpCommunicator, RingChunksGrowWithTheBlocksOnlyWithACorePerRankUnlessChosen) {
  CommOptions options;
  EXPECT_EQ(ring_chunk_max_for_host(options, 2, 2), static_cast<int64_t>(kRingChunkMaxBytes));
  EXPECT_EQ(ring_chunk_max_for_host(options, 1, 8), static_cast<int64_t>(kRingChunkMaxBytes));
  EXPECT_EQ(ring_chunk_max_for_host(options, 4, 2), 0);  // fixed (large) chunks there
  options.ring_chunk_bytes = 4096;                         // a chosen chunk stays fixed
  EXPECT_EQ(ring_chunk_max_for_host(options, 2, 2), 0);
  options.ring_chunk_max_bytes = 65536;  // unless a maximum is chosen too
  EXPECT_EQ(ring_chunk_max_for_host(options, 2, 2), 65536);
  EXPECT_EQ(ring_chunk_max_for_host(options, 4, 2), 65536);
  options.ring_chunk_max_bytes = 0;
  EXPECT_EQ(ring_chunk_max_for_host(options, 2, 2), 0);
}

TEST(TcpCommunicator, HalvingDoublingOnlyWithMoreRanksThanCoresUnlessChosen) {
  CommOptions options;
  EXPECT_EQ(halving_doubling_for_host(options, 2, 2), 0);
  EXPECT_EQ(halving_doubling_for_host(options, 4, 2), kOversubscribedHalvingDoublingBytes);
  options.halving_doubling_max_bytes = 0;
  EXPECT_EQ(halving_doubling_for_host(options, 4, 2), 0);
  options.halving_doubling_max_bytes = 4096;
  EXPECT_EQ(halving_doubling_for_host(options, 1, 8), 4096);
}

TEST(TcpCommunicator, SplitGroupsReduceSeparatelyOverTheSameConnections) {
  run_tcp(4, "split", [](Communicator& comm) {
    auto half = comm.split(comm.rank() % 2, comm.rank());
    ASSERT_NE(half, nullptr);
    EXPECT_EQ(half->size(), 2);
    Tensor t = Tensor::full({5}, comm.rank() + 1);
    half->allreduce(t, ReduceOp::sum);
    const float expected = comm.rank() % 2 == 0 ? 1 + 3 : 2 + 4;
    EXPECT_EQ(t.f32()[4], expected) << "on rank " << comm.rank();
    comm.barrier();
  });
}

// Sets environment variables for one test and puts the previous values back.
class ScopedEnv {
 public:
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }
  void set(const std::string& name, const std::optional<std::string>& value) {
    if (saved_.find(name) == saved_.end()) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value) {
      setenv(name.c_str(), value->c_str(), 1);
    } else {
      unsetenv(name.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

TEST(TcpCommunicator, FromEnvironmentJoinsTheJobTheVariablesDescribe) {
  TcpStoreServer server;
  ScopedEnv env;
  env.set("TERN_RANK", "0");
  env.set("TERN_WORLD_SIZE", "1");
  env.set("TERN_STORE_ADDR", server.address());
  env.set("TERN_JOB_ID", "from_env");
  auto comm = make_tcp_communicator_from_env(test_options());
  EXPECT_EQ(comm->backend(), "tcp");
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  Tensor t = Tensor::full({3}, 2.0);
  comm->allreduce(t, ReduceOp::sum);
  EXPECT_EQ(t.f32()[0], 2.0f);
}

TEST(TcpCommunicator, MissingOrMalformedVariableIsAnErrorNamingIt) {
  TcpStoreServer server;
  const std::pair<std::string, std::optional<std::string>> cases[] = {
      {"TERN_RANK", std::nullopt},       {"TERN_RANK", "one"},          {"TERN_RANK", "-1"},
      {"TERN_WORLD_SIZE", std::nullopt}, {"TERN_WORLD_SIZE", "0"},      {"TERN_STORE_ADDR", std::nullopt},
      {"TERN_STORE_ADDR", "nowhere"},    {"TERN_JOB_ID", std::nullopt},
  };
  for (const auto& [name, value] : cases) {
    ScopedEnv env;
    env.set("TERN_RANK", "0");
    env.set("TERN_WORLD_SIZE", "1");
    env.set("TERN_STORE_ADDR", server.address());
    env.set("TERN_JOB_ID", "bad_env");
    env.set(name, value);
    try {
      make_tcp_communicator_from_env(test_options());
      ADD_FAILURE() << name << "=" << value.value_or("(unset)") << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  ScopedEnv env;
  env.set("TERN_RANK", "2");
  env.set("TERN_WORLD_SIZE", "2");
  env.set("TERN_STORE_ADDR", server.address());
  env.set("TERN_JOB_ID", "bad_env");
  EXPECT_THROW(make_tcp_communicator_from_env(test_options()), Error);
}

}  // namespace
}  // namespace tern
