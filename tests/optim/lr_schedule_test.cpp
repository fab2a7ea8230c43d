#include "optim/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>

#include "runtime/error.h"

namespace tern {
namespace {

TEST(LrSchedule, ConstantIsTheSameAtEveryStep) {
  ConstantLr s(0.05f);
  EXPECT_EQ(s.lr_at(0), 0.05f);
  EXPECT_EQ(s.lr_at(123456), 0.05f);
  EXPECT_THROW(s.lr_at(-1), Error);
}

TEST(LrSchedule, StepDecayMultipliesByGammaAtEachBoundary) {
  StepDecayLr s(0.8f, 3, 0.5f);
  EXPECT_EQ(s.lr_at(0), 0.8f);
  EXPECT_EQ(s.lr_at(2), 0.8f);  // last step before the first boundary
  EXPECT_EQ(s.lr_at(3), 0.4f);  // the boundary itself is already decayed
  EXPECT_EQ(s.lr_at(5), 0.4f);
  EXPECT_EQ(s.lr_at(6), 0.2f);
  EXPECT_FLOAT_EQ(s.lr_at(30), 0.8f / 1024);
}

TEST(LrSchedule, CosineGoesFromBaseThroughMidpointToMin) {
  CosineLr s(0.1f, 0.02f, 100);
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_at(50), 0.06f);  // (base + min) / 2
  EXPECT_FLOAT_EQ(s.lr_at(25), 0.02f + 0.08f * (1 + std::sqrt(0.5f)) / 2);
  EXPECT_FLOAT_EQ(s.lr_at(100), 0.02f);
  EXPECT_FLOAT_EQ(s.lr_at(1000), 0.02f);  // held at min, not climbing back
  EXPECT_GT(s.lr_at(99), 0.02f);
}

TEST(LrSchedule, WarmupRisesLinearlyFromZeroToTheWrappedScheduleStart) {
  WarmupLr s(std::make_unique<ConstantLr>(0.4f), 10);
  EXPECT_EQ(s.lr_at(0), 0.0f);
  EXPECT_FLOAT_EQ(s.lr_at(5), 0.2f);
  EXPECT_FLOAT_EQ(s.lr_at(9), 0.36f);
  EXPECT_EQ(s.lr_at(10), 0.4f);
  EXPECT_EQ(s.lr_at(500), 0.4f);
}

TEST(LrSchedule, WarmupFromAStartFactor) {
  WarmupLr s(std::make_unique<ConstantLr>(1.0f), 4, 0.2f);
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.2f);
  EXPECT_FLOAT_EQ(s.lr_at(2), 0.6f);
  EXPECT_EQ(s.lr_at(4), 1.0f);
}

TEST(LrSchedule, WarmupShiftsTheWrappedScheduleToStartAfterIt) {
  WarmupLr s(std::make_unique<StepDecayLr>(1.0f, 10, 0.1f), 5);
  EXPECT_EQ(s.lr_at(5), 1.0f);
  EXPECT_EQ(s.lr_at(14), 1.0f);
  EXPECT_FLOAT_EQ(s.lr_at(15), 0.1f);
}

TEST(LrSchedule, ParsesConstantAndStep) {
  EXPECT_EQ(make_lr_schedule("constant", 0.3f, 100)->lr_at(99), 0.3f);
  auto step = make_lr_schedule("step:size=1000,gamma=0.1", 0.5f, 0);
  EXPECT_EQ(step->lr_at(999), 0.5f);
  EXPECT_FLOAT_EQ(step->lr_at(1000), 0.05f);
  EXPECT_FLOAT_EQ(make_lr_schedule("step:size=2", 1.0f, 0)->lr_at(2), 0.1f);  // gamma 0.1
}

TEST(LrSchedule, ParsesCosineWithMinLrAndWarmup) {
  auto plain = make_lr_schedule("cosine", 0.1f, 200);
  EXPECT_FLOAT_EQ(plain->lr_at(100), 0.05f);
  EXPECT_EQ(plain->lr_at(200), 0.0f);
  auto with_min = make_lr_schedule("cosine:min_lr=1e-4", 0.1f, 200);
  EXPECT_FLOAT_EQ(with_min->lr_at(200), 1e-4f);
  // 500 warm-up steps, then cosine over the remaining 1000.
  auto warm = make_lr_schedule("cosine:warmup=500,min_lr=0.02", 0.1f, 1500);
  EXPECT_EQ(warm->lr_at(0), 0.0f);
  EXPECT_FLOAT_EQ(warm->lr_at(250), 0.05f);
  EXPECT_FLOAT_EQ(warm->lr_at(500), 0.1f);
  EXPECT_FLOAT_EQ(warm->lr_at(1000), 0.06f);
  EXPECT_FLOAT_EQ(warm->lr_at(1500), 0.02f);
  auto factor = make_lr_schedule("constant:warmup=10,start_factor=0.5", 2.0f, 0);
  EXPECT_FLOAT_EQ(factor->lr_at(0), 1.0f);
  EXPECT_FLOAT_EQ(factor->lr_at(10), 2.0f);
}

void expect_rejected(const std::string& spec, int64_t total_steps, const std::string& why) {
  try {
    make_lr_schedule(spec, 0.1f, total_steps);
    ADD_FAILURE() << "'" << spec << "' was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(why), std::string::npos) << msg;
    // Every rejection lists what is accepted.
    EXPECT_NE(msg.find("step:size=N"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cosine"), std::string::npos) << msg;
  }
}

TEST(LrSchedule, BadSpecsThrowListingWhatIsAccepted) {
  expect_rejected("linear", 100, "unknown kind 'linear'");
  expect_rejected("", 100, "unknown kind ''");
  expect_rejected("step", 100, "needs size");
  expect_rejected("step:size=0", 100, "size must be > 0");
  expect_rejected("step:size=2.5", 100, "whole number");
  expect_rejected("step:size=10,size=20", 100, "given twice");
  expect_rejected("step:size=10,gamma=-1", 100, "gamma");
  expect_rejected("cosine:min_lr=abc", 100, "not a number");
  expect_rejected("cosine:min_lr=", 100, "not a number");
  expect_rejected("cosine:foo=1", 100, "no option 'foo'");
  expect_rejected("constant:min_lr=0.1", 100, "no option 'min_lr'");
  expect_rejected("cosine:", 100, "empty");
  expect_rejected("cosine:warmup", 100, "key=value");
  expect_rejected("cosine:warmup=100", 100, "more total steps");
  expect_rejected("cosine:warmup=-5", 1000, "whole number");
  expect_rejected("cosine:start_factor=0.5", 100, "needs warmup");
  expect_rejected("constant:warmup=5,start_factor=2", 100, "start_factor");
}

}  // namespace
}  // namespace tern
