#include "comm/tcp/shm_transport.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <exception>
#include <thread>
#include <vector>

#include "comm/local/local.h"
#include "comm/tcp/shm_ring.h"
#include "tests/comm/tcp/tcp_test_support.h"
#include "tests/support/threads.h"

namespace tern {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr milliseconds kRecvTimeout = seconds(10);

using testing::kTestRingBytes;
using testing::make_shm_world;
using testing::short_timeouts;

class ShmTransportWorld : public ::testing::Test {
 protected:
  std::shared_ptr<Store> store_ = make_memory_store();
};

TEST_F(ShmTransportWorld, APeerThatGoesAwayFailsRecvsFromItPromptlyNamingIt) {
  auto world = make_shm_world(3, *store_, "shm-gone", short_timeouts(seconds(30)));
  const int sent = 5;
  world[1]->send(0, 0, 1, &sent, sizeof(sent));
  world[1].reset();  // rank 1 leaves after sending one message
  int value = 0;
  world[0]->recv(1, 0, 1, &value, sizeof(value), kRecvTimeout);  // what it sent still arrives
  EXPECT_EQ(value, 5);
  const auto start = std::chrono::steady_clock::now();
  try {
    world[0]->recv(1, 0, 2, &value, sizeof(value), seconds(30));
    FAIL() << "recv from a departed rank returned";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("peer rank 1"), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(20)) << "failed by the timeout, not the close";
  EXPECT_THROW(world[2]->send(1, 0, 1, &sent, sizeof(sent)), CommError);
  // The others are unaffected.
  world[2]->send(0, 0, 3, &sent, sizeof(sent));
  world[0]->recv(2, 0, 3, &value, sizeof(value), kRecvTimeout);
  EXPECT_EQ(value, 5);
}

TEST_F(ShmTransportWorld, LeavesNoSegmentsInDevShmOnceSetUp) {
  auto world = make_shm_world(2, *store_, "shm-unlinked");
  for (int src = 0; src < 2; ++src) {
    const std::string path =
        "/dev/shm" + shm::ring_name("shm-unlinked", 1, src, 1 - src, static_cast<long>(::getpid()));
    struct stat info {};
    EXPECT_NE(::stat(path.c_str(), &info), 0) << path << " still exists";
  }
}

TEST_F(ShmTransportWorld, ARankThatNeverArrivesFailsSetupByTheTimeoutNamingIt) {
  try {
    ShmTransport alone(TcpWorld{0, 2, "shm-alone"}, *store_, short_timeouts(milliseconds(300)),
                       kTestRingBytes);
    FAIL() << "set up a world of 2 with one rank";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 1 did not arrive"), std::string::npos) << what;
  }
}

TEST(ShmHost, ThreadsOfOneProcessAllCountThemselvesOnTheirHost) {
  auto store = make_memory_store();
  std::vector<int> answers(3, -1);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      answers[static_cast<size_t>(r)] = ranks_on_this_host(TcpWorld{r, 3, "host"}, *store, seconds(10));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(answers, std::vector<int>({3, 3, 3}));
}

TEST(ShmHost, ARankOnAnotherHostIsNotCounted) {
  auto store = make_memory_store();
  // Rank 1 "lives" elsewhere: it published a different identity under the key rank 0 reads.
  store->add("tern/elsewhere/shm/host_checks_by/1", 1);
  store->set("tern/elsewhere/shm/1/host/1", "another-host|boot|ipc");
  EXPECT_EQ(ranks_on_this_host(TcpWorld{0, 2, "elsewhere"}, *store, seconds(10)), 1);
}

}  // namespace
}  // namespace tern
