#include "comm/tcp/shm_transport.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <exception>
#include <limits>
#include <thread>
#include <vector>

#include "comm/local/local.h"
#include "comm/tcp/shm_ring.h"
#include "comm/tcp/shm_segment.h"
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

TEST(ShmSegment, ASegmentDevShmCannotHoldIsRefusedByNameAndLeavesNothingBehind) {
  // More than the whole of /dev/shm: ftruncate alone would accept it (tmpfs pages come on first
  // touch) and a later write would kill the process with SIGBUS.
  struct statvfs info {};
  ASSERT_EQ(::statvfs(shm::kDirectory, &info), 0);
  const size_t too_big = static_cast<size_t>(info.f_blocks) * info.f_frsize + (size_t{64} << 20);
  const std::string name = shm::ring_name("shm-too-big", 1, 0, 1, static_cast<long>(::getpid()));
  try {
    shm::Segment::create(name, too_big);
    FAIL() << "a segment of " << too_big << " bytes was created";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cannot reserve"), std::string::npos) << what;
    EXPECT_NE(what.find("/dev/shm"), std::string::npos) << what;
    EXPECT_NE(what.find("free there"), std::string::npos) << what;
  }
  struct stat left {};
  EXPECT_NE(::stat(("/dev/shm" + name).c_str(), &left), 0) << name << " was left in /dev/shm";
  shm::Segment::unlink(name);  // should the test fail, not even then
}

TEST(ShmSizes, ShrinkRingsAndSlotsTogetherUntilTheWorldFitsInHalfOfDevShm) {
  constexpr size_t MB = size_t{1} << 20, KB = size_t{1} << 10;
  const ShmSizes wanted{ShmTransport::kDefaultRingBytes, 1 * MB};
  // Plenty of room (or none measured): what was asked.
  for (size_t free : {size_t{24} << 30, std::numeric_limits<size_t>::max()}) {
    const auto sizes = shm_sizes_for_space(free, 4, wanted);
    ASSERT_TRUE(sizes.has_value());
    EXPECT_EQ(sizes->ring_bytes, 4 * MB);
    EXPECT_EQ(sizes->slot_bytes, 1 * MB);
  }
  // A default Docker container (64 MB): 4 ranks' 12 rings of 4 MB and 5 slots need ~53 MB > 32.
  auto docker = shm_sizes_for_space(64 * MB, 4, wanted);
  ASSERT_TRUE(docker.has_value());
  EXPECT_EQ(docker->ring_bytes, 2 * MB);
  EXPECT_EQ(docker->slot_bytes, 512 * KB);
  EXPECT_LE(shm_bytes_needed(4, *docker), 32 * MB);
  EXPECT_GT(shm_bytes_needed(4, {4 * MB, 1 * MB}), 32 * MB);
  // 8 ranks there: 56 rings.
  auto eight = shm_sizes_for_space(64 * MB, 8, wanted);
  ASSERT_TRUE(eight.has_value());
  EXPECT_EQ(eight->ring_bytes, 512 * KB);
  EXPECT_LE(shm_bytes_needed(8, *eight), 32 * MB);
  // Slots stop at their minimum while rings shrink on; rings stop at theirs, and below that no size fits.
  auto tight = shm_sizes_for_space(4 * MB, 4, wanted);
  ASSERT_TRUE(tight.has_value());
  EXPECT_EQ(tight->ring_bytes, 128 * KB);
  EXPECT_EQ(tight->slot_bytes, ShmTransport::kMinSlotBytes);
  EXPECT_FALSE(shm_sizes_for_space(1 * MB, 4, wanted).has_value());
  // No collectives segment: nothing counted for it, and none made.
  EXPECT_EQ(shm_bytes_needed(2, {64 * KB, 0}), 2 * (64 * KB + 4096));
  EXPECT_EQ(shm_sizes_for_space(64 * MB, 4, {4 * MB, 0})->slot_bytes, 0u);
  // Rings asked smaller than the minimum are kept when they fit.
  EXPECT_EQ(shm_sizes_for_space(64 * MB, 2, {4 * KB, 0})->ring_bytes, 4 * KB);
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
