#include "runtime/train/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace tern {
namespace {

constexpr ScheduleKind kTrainKinds[] = {ScheduleKind::gpipe, ScheduleKind::one_f_one_b};

TEST(PipelineSchedule, GpipeRunsEveryForwardThenEveryBackward) {
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::gpipe, 3, 0, 3)),
            "F0 SA0 F1 SA1 F2 SA2 RG0 B0 RG1 B1 RG2 B2");
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::gpipe, 3, 1, 2)),
            "RA0 F0 SA0 RA1 F1 SA1 RG0 B0 SG0 RG1 B1 SG1");
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::gpipe, 3, 2, 2)), "RA0 F0 RA1 F1 B0 SG0 B1 SG1");
}

TEST(PipelineSchedule, OneFOneBWarmsUpAlternatesAndCoolsDown) {
  // 4 stages, 6 micro-batches. Stage 0: 3 warm-up forwards, 3 (F, B) pairs, 3 cool-down backwards.
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::one_f_one_b, 4, 0, 6)),
            "F0 SA0 F1 SA1 F2 SA2 "
            "F3 SA3 RG0 B0 F4 SA4 RG1 B1 F5 SA5 RG2 B2 "
            "RG3 B3 RG4 B4 RG5 B5");
  // Stage 2: one warm-up forward.
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::one_f_one_b, 4, 2, 3)),
            "RA0 F0 SA0 RA1 F1 SA1 RG0 B0 SG0 RA2 F2 SA2 RG1 B1 SG1 RG2 B2 SG2");
  // The last stage has no warm-up: each forward is followed by its backward.
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::one_f_one_b, 4, 3, 2)), "RA0 F0 B0 SG0 RA1 F1 B1 SG1");
  // Fewer micro-batches than warm-up slots: all forwards, then all backwards.
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::one_f_one_b, 4, 0, 2)), "F0 SA0 F1 SA1 RG0 B0 RG1 B1");
}

TEST(PipelineSchedule, ForwardOnlyHasNoBackward) {
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::forward_only, 3, 1, 2)), "RA0 F0 SA0 RA1 F1 SA1");
  EXPECT_EQ(actions_str(make_schedule(ScheduleKind::forward_only, 1, 0, 2)), "F0 F1");
}

TEST(PipelineSchedule, EveryMicroBatchRunsForwardAndBackwardOnceOnEveryStage) {
  for (ScheduleKind kind : kTrainKinds) {
    for (int P : {1, 2, 3, 4, 5}) {
      for (int M : {1, 2, 3, 4, 7, 8, 16}) {
        for (int s = 0; s < P; ++s) {
          std::vector<int> f(static_cast<size_t>(M)), b(static_cast<size_t>(M));
          for (const Action& a : make_schedule(kind, P, s, M)) {
            if (a.kind == ActionKind::forward) ++f[static_cast<size_t>(a.micro_batch)];
            if (a.kind == ActionKind::backward) ++b[static_cast<size_t>(a.micro_batch)];
          }
          for (int i = 0; i < M; ++i)
            EXPECT_TRUE(f[static_cast<size_t>(i)] == 1 && b[static_cast<size_t>(i)] == 1)
                << schedule_name(kind) << " P=" << P << " M=" << M << " stage " << s << " micro-batch " << i;
        }
      }
    }
  }
}

// The simulator executes the lists with sends that never block: it fails on any receive without
// its send, any send never received, a message taken out of order, an action before what it needs
// (forward before its input, backward before its gradient) and a deadlock.
TEST(PipelineSchedule, EverySendMeetsItsReceiveWithoutDeadlock) {
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::forward_only}) {
    for (int P : {1, 2, 3, 4, 6, 8}) {
      for (int M : {1, 2, 3, 4, 5, 8, 13, 32}) {
        const ScheduleSimulation sim = simulate_schedule(make_all_schedules(kind, P, M));
        EXPECT_TRUE(sim.ok) << schedule_name(kind) << " P=" << P << " M=" << M << ": " << sim.error;
      }
    }
  }
}

TEST(PipelineSchedule, SimulatorCatchesBrokenLists) {
  auto lists = make_all_schedules(ScheduleKind::one_f_one_b, 3, 4);
  // A stage that never sends its last gradient leaves its neighbour waiting: a deadlock.
  auto missing = lists;
  for (size_t k = 0; k < missing[1].size(); ++k) {
    if (missing[1][k] == Action{ActionKind::send_grad, 3}) {
      missing[1].erase(missing[1].begin() + static_cast<std::ptrdiff_t>(k));
      break;
    }
  }
  ScheduleSimulation sim = simulate_schedule(missing);
  EXPECT_FALSE(sim.ok);
  EXPECT_NE(sim.error.find("deadlock"), std::string::npos) << sim.error;

  // Receiving micro-batches out of the order they were sent.
  auto swapped = lists;
  for (auto& a : swapped[2]) {
    if (a == Action{ActionKind::recv_activation, 0})
      a.micro_batch = 1;
    else if (a == Action{ActionKind::recv_activation, 1})
      a.micro_batch = 0;
  }
  sim = simulate_schedule(swapped);
  EXPECT_FALSE(sim.ok);
  EXPECT_NE(sim.error.find("order"), std::string::npos) << sim.error;

  // A backward before its forward.
  auto early = lists;
  std::swap(early[2][0], early[2][2]);  // "B0" before "RA0 F0"
  sim = simulate_schedule(early);
  EXPECT_FALSE(sim.ok) << actions_str(early[2]);

  // Both neighbours waiting for each other's message first: stage 0 receives a gradient before
  // it ever sends an activation.
  auto cycle = make_all_schedules(ScheduleKind::gpipe, 2, 1);
  cycle[0] = {{ActionKind::recv_grad, 0},
              {ActionKind::forward, 0},
              {ActionKind::send_activation, 0},
              {ActionKind::backward, 0}};
  sim = simulate_schedule(cycle);
  EXPECT_FALSE(sim.ok);
}

TEST(PipelineSchedule, OneFOneBHoldsAtMostStagesMinusRankMicroBatches) {
  for (int P : {2, 3, 4, 8}) {
    for (int M : {1, 2, 4, 8, 16, 32}) {
      for (int s = 0; s < P; ++s) {
        EXPECT_EQ(peak_in_flight(make_schedule(ScheduleKind::one_f_one_b, P, s, M)), std::min(P - s, M))
            << "P=" << P << " M=" << M << " stage " << s;
        EXPECT_EQ(peak_in_flight(make_schedule(ScheduleKind::gpipe, P, s, M)), M)
            << "P=" << P << " M=" << M << " stage " << s;
      }
    }
  }
}

// With equal stages (forward 1, backward 2) both schedules take (M + P - 1) * 3: the bubble is
// exactly (P - 1) / (M + P - 1), and 1F1B's lower memory costs no time.
TEST(PipelineSchedule, EqualStagesHaveTheIdealBubble) {
  for (ScheduleKind kind : kTrainKinds) {
    for (int P : {1, 2, 4, 8}) {
      for (int M : {1, 2, 4, 8, 16, 32}) {
        const ScheduleSimulation sim = simulate_schedule(make_all_schedules(kind, P, M), 1.0, 2.0);
        ASSERT_TRUE(sim.ok) << sim.error;
        EXPECT_DOUBLE_EQ(sim.makespan, 3.0 * (M + P - 1)) << schedule_name(kind) << " P=" << P << " M=" << M;
        EXPECT_NEAR(sim.bubble(), ideal_bubble(P, M), 1e-12)
            << schedule_name(kind) << " P=" << P << " M=" << M;
        for (int s = 0; s < P; ++s) EXPECT_DOUBLE_EQ(sim.busy[static_cast<size_t>(s)], 3.0 * M);
      }
    }
  }
}

TEST(PipelineSchedule, NamesParseAndUnknownOnesAreErrors) {
  EXPECT_EQ(parse_schedule("gpipe"), ScheduleKind::gpipe);
  EXPECT_EQ(parse_schedule("1f1b"), ScheduleKind::one_f_one_b);
  EXPECT_STREQ(schedule_name(parse_schedule("1f1b")), "1f1b");
  try {
    parse_schedule("interleaved");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gpipe, 1f1b"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_schedule(ScheduleKind::gpipe, 2, 2, 4), Error);
  EXPECT_THROW(make_schedule(ScheduleKind::gpipe, 2, 0, 0), Error);
}

}  // namespace
}  // namespace tern
