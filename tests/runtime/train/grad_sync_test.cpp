#include "runtime/train/grad_sync.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "comm/local/local.h"
#include "tests/support/recording_communicator.h"

namespace tern {
namespace {

using testing::RecordingCommunicator;

// Params named p0, p1, ... with the given sizes, in registration order.
struct ParamSet {
  std::vector<std::unique_ptr<Param>> owned;
  std::vector<Param*> list;
  explicit ParamSet(const std::vector<int64_t>& sizes) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      owned.push_back(std::make_unique<Param>(Tensor::zeros({sizes[i]})));
      owned.back()->name = detail::concat("p", i);
      list.push_back(owned.back().get());
    }
  }
  Param& operator[](size_t i) { return *owned[i]; }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GradSync, BucketsFollowReverseRegistrationOrderWithinTheCap) {
  // 128 floats per bucket; slots start on 16-float boundaries.
  ParamSet ps({10, 100, 5, 300, 2, 7});
  ps[5].trainable = false;  // frozen: not bucketed
  auto comm = make_single_communicator();
  GradSync sync(ps.list, *comm, 128 * sizeof(float));
  ASSERT_EQ(sync.bucket_count(), 4u);
  EXPECT_EQ(sync.bucket_param_names(0), (std::vector<std::string>{"p4"}));
  EXPECT_EQ(sync.bucket_param_names(1), (std::vector<std::string>{"p3"}));  // larger than the cap: alone
  EXPECT_EQ(sync.bucket_param_names(2), (std::vector<std::string>{"p2", "p1"}));
  EXPECT_EQ(sync.bucket_param_names(3), (std::vector<std::string>{"p0"}));
  EXPECT_EQ(sync.bucket_bytes(1), 300 * sizeof(float));
  EXPECT_EQ(sync.bucket_bytes(2), (16 + 100) * sizeof(float));
  for (size_t b : {0u, 2u, 3u}) EXPECT_LE(sync.bucket_bytes(b), 128 * sizeof(float));
}

TEST(GradSync, KeepsGradientValuesWhenTheyMoveIntoBuckets) {
  ParamSet ps({3, 5});
  ps[0].grad.fill(1.5);
  ps[1].grad.fill(-2.0);
  auto comm = make_single_communicator();
  GradSync sync(ps.list, *comm, 1 << 20);
  EXPECT_EQ(ps[0].grad.shape(), Shape{3});
  EXPECT_EQ(ps[0].grad.f32()[2], 1.5f);
  EXPECT_EQ(ps[1].grad.f32()[4], -2.0f);
  EXPECT_TRUE(ps[0].grad.shares_storage(ps[1].grad));  // one bucket, one buffer
}

TEST(GradSync, AveragesGradientsAcrossRanks) {
  for (int world : {2, 4}) {
    run_local(world, [&](Communicator& comm) {
      ParamSet ps({6, 40, 3});
      GradSync sync(ps.list, comm, 48 * sizeof(float));
      for (int step = 0; step < 2; ++step) {
        for (size_t i = 0; i < 3; ++i) {
          float* g = ps[i].grad.f32();
          for (int64_t j = 0; j < ps[i].grad.numel(); ++j)
            g[j] = static_cast<float>(comm.rank() * 10 + j + step);
        }
        for (size_t i = 3; i-- > 0;) sync.mark_ready(ps[i]);
        sync.wait();
        // mean over r of (10 r + j + step) = 10 (W - 1) / 2 + j + step
        for (size_t i = 0; i < 3; ++i) {
          for (int64_t j = 0; j < ps[i].grad.numel(); ++j) {
            ASSERT_FLOAT_EQ(ps[i].grad.f32()[j], 5.0f * (world - 1) + j + step)
                << "world " << world << " p" << i << "[" << j << "]";
          }
        }
      }
    });
  }
}

TEST(GradSync, LaunchesEachBucketWhenItAndAllEarlierOnesAreComplete) {
  ParamSet ps({8, 8, 8});  // one param per bucket: buckets hold p2, p1, p0
  auto single = make_single_communicator();
  std::vector<std::string> log;
  RecordingCommunicator comm(*single, log);
  GradSync sync(ps.list, comm, 8 * sizeof(float));
  ASSERT_EQ(sync.bucket_count(), 3u);
  sync.mark_ready(ps[1]);  // bucket 1 is complete, but bucket 0 is not launched yet
  EXPECT_EQ(sync.buckets_launched(), 0u);
  EXPECT_TRUE(log.empty());
  sync.mark_ready(ps[2]);  // bucket 0, then the waiting bucket 1, at once
  EXPECT_EQ(sync.buckets_launched(), 2u);
  EXPECT_EQ(log, (std::vector<std::string>{"allreduce 8 avg", "allreduce 8 avg"}));
  sync.mark_ready(ps[0]);
  EXPECT_EQ(sync.buckets_launched(), 3u);
  sync.wait();
  EXPECT_EQ(sync.buckets_launched(), 0u);  // the next step starts
  EXPECT_EQ(sync.stats().buckets_launched_in_backward, 3);
}

TEST(GradSync, UnannouncedParamsDoNotDeadlockAndAreStillAveraged) {
  run_local(2, [](Communicator& comm) {
    ParamSet ps({4, 4, 4});
    GradSync sync(ps.list, comm, 4 * sizeof(float));
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0; i < 3; ++i) ps[i].grad.fill(comm.rank() == 0 ? 1.0 : 3.0);
      // p1 (the middle bucket) is never announced, as if unused in this forward; on rank 1,
      // p0 is not announced either, so the ranks launch at different moments.
      sync.mark_ready(ps[2]);
      if (comm.rank() == 0) sync.mark_ready(ps[0]);
      sync.wait();
      for (size_t i = 0; i < 3; ++i) EXPECT_EQ(ps[i].grad.f32()[3], 2.0f) << "p" << i;
    }
  });
}

TEST(GradSync, AnnouncingAParamTwiceInOneStepIsAnError) {
  ParamSet ps({4, 4});
  auto comm = make_single_communicator();
  GradSync sync(ps.list, *comm, 1 << 20);
  sync.mark_ready(ps[0]);
  const std::string message = error_of([&] { sync.mark_ready(ps[0]); });
  EXPECT_NE(message.find("'p0'"), std::string::npos) << message;
  EXPECT_NE(message.find("twice"), std::string::npos) << message;
  sync.wait();
  sync.mark_ready(ps[0]);  // a new step: fine again
  sync.wait();
}

TEST(GradSync, AReplacedGradTensorIsStillAveragedAndBecomesAViewAgain) {
  run_local(2, [](Communicator& comm) {
    ParamSet ps({5, 5});
    GradSync sync(ps.list, comm, 1 << 20);
    ps[0].grad = Tensor::full({5}, comm.rank() == 0 ? 2.0 : 4.0);  // e.g. restored from elsewhere
    ps[1].grad.fill(1.0);
    sync.mark_ready(ps[1]);
    sync.mark_ready(ps[0]);
    sync.wait();
    EXPECT_EQ(ps[0].grad.f32()[4], 3.0f);
    EXPECT_TRUE(ps[0].grad.shares_storage(ps[1].grad));
  });
}

TEST(GradSync, IgnoresParamsItDoesNotBucket) {
  ParamSet ps({4, 4});
  ps[1].trainable = false;
  auto comm = make_single_communicator();
  GradSync sync(ps.list, *comm, 1 << 20);
  Param stranger(Tensor::zeros({2}));
  sync.mark_ready(ps[1]);
  sync.mark_ready(stranger);
  EXPECT_EQ(sync.buckets_launched(), 0u);
  sync.mark_ready(ps[0]);
  EXPECT_EQ(sync.buckets_launched(), 1u);
  sync.wait();
}

TEST(GradSync, RejectsNonF32Params) {
  Param p(Tensor::zeros({4}, DType::f16));
  p.name = "half";
  auto comm = make_single_communicator();
  const std::string message = error_of([&] { GradSync sync({&p}, *comm); });
  EXPECT_NE(message.find("'half'"), std::string::npos) << message;
}

TEST(GradSync, CountsStepsBucketsBytesAndCommunicationTime) {
  run_local(2, [](Communicator& comm) {
    ParamSet ps({1000, 1000});
    GradSync sync(ps.list, comm, 1000 * sizeof(float));
    for (int step = 0; step < 3; ++step) {
      sync.mark_ready(ps[1]);
      sync.mark_ready(ps[0]);
      sync.wait();
    }
    const GradSyncStats s = sync.stats();
    EXPECT_EQ(s.steps, 3);
    EXPECT_EQ(s.buckets, 6);
    EXPECT_EQ(s.buckets_launched_in_backward, 6);
    // Each step each rank sends at least its half of each bucket (ring) or all of it.
    EXPECT_GE(s.bytes_sent, 3u * 2u * 500u * sizeof(float));
    EXPECT_GE(s.bytes_received, 3u * 2u * 500u * sizeof(float));
    EXPECT_GT(s.comm_seconds, 0.0);
    EXPECT_GE(s.hidden_fraction(), 0.0);
    EXPECT_LE(s.hidden_fraction(), 1.0);
    sync.reset_stats();
    EXPECT_EQ(sync.stats().steps, 0);
  });
}

}  // namespace
}  // namespace tern
