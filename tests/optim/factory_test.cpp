#include "optim/factory.h"

#include <gtest/gtest.h>

#include "optim/adam.h"
#include "optim/sgd.h"

namespace tern {
namespace {

TEST(MakeOptimizer, BuildsEachNamedOptimizerWithTheGivenOptions) {
  Param p(Tensor::from({1}, {1.0f}));
  auto sgd = make_optimizer("sgd", {&p}, 0.1f, 0.9f, 5e-4f, true);
  EXPECT_EQ(sgd->name(), "sgd");
  EXPECT_EQ(sgd->lr(), 0.1f);
  const auto* s = dynamic_cast<Sgd*>(sgd.get());
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->options().momentum, 0.9f);
  EXPECT_EQ(s->options().weight_decay, 5e-4f);
  EXPECT_TRUE(s->options().nesterov);

  auto adam = make_optimizer("adam", {&p}, 1e-3f, 0.9f, 0.01f);
  EXPECT_EQ(adam->name(), "adam");
  EXPECT_FALSE(dynamic_cast<Adam*>(adam.get())->options().decoupled);
  auto adamw = make_optimizer("adamw", {&p}, 1e-3f, 0.0f, 0.01f);
  EXPECT_EQ(adamw->name(), "adamw");
  ASSERT_NE(dynamic_cast<AdamW*>(adamw.get()), nullptr);
  EXPECT_EQ(dynamic_cast<Adam*>(adamw.get())->options().weight_decay, 0.01f);
}

TEST(MakeOptimizer, UnknownNameThrowsListingTheChoices) {
  Param p(Tensor::from({1}, {1.0f}));
  try {
    make_optimizer("rmsprop", {&p}, 0.1f, 0, 0);
    FAIL() << "expected tern::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rmsprop"), std::string::npos) << msg;
    EXPECT_NE(msg.find("sgd, adam, adamw"), std::string::npos) << msg;
  }
}

TEST(MakeOptimizer, NesterovIsOnlyForSgd) {
  Param p(Tensor::from({1}, {1.0f}));
  EXPECT_THROW(make_optimizer("adam", {&p}, 0.1f, 0.9f, 0, true), Error);
  EXPECT_THROW(make_optimizer("sgd", {&p}, 0.1f, 0.0f, 0, true), Error);  // needs momentum
}

}  // namespace
}  // namespace tern
