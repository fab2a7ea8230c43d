#include "models/registry.h"

#include <gtest/gtest.h>

#include "tests/support/gradcheck.h"

namespace tern {
namespace {

TEST(Models, EveryRegisteredModelMapsABatchToClassLogits) {
  for (const std::string& name : model_names()) {
    if (model_takes_tokens(name)) continue;  // gpt-tiny: tests/models/gpt_test.cpp
    ModelConfig mc;  // 1x28x28, 10 classes
    mc.width_mult = name == "mobilenetv2" ? 0.35f : 1.0f;
    auto m = make_model(name, mc);
    Tensor y = m->forward(testing::random_tensor({2, 1, 28, 28}, 1));
    EXPECT_EQ(y.shape(), (Shape{2, 10})) << name;
    Tensor dx = m->backward(testing::random_tensor({2, 10}, 2));
    EXPECT_EQ(dx.shape(), (Shape{2, 1, 28, 28})) << name;
  }
}

TEST(Models, ParameterCountsMatchTheArchitectures) {
  ModelConfig mc;
  // 784*512+512 + 512*256+256 + 256*10+10
  EXPECT_EQ(make_model("mlp", mc)->param_count(), 535818);
  // conv 1*32*9 + BN 2*32 + conv 32*64*9 + BN 2*64 + fc 3136*128+128 + fc 128*10+10
  EXPECT_EQ(make_model("cnn", mc)->param_count(), 288 + 64 + 18432 + 128 + 401536 + 1290);
  // ResNet-20 on 3x32x32, 10 classes: 0.27M as in the paper (+ the two 1x1 projection shortcuts).
  mc.in_channels = 3;
  mc.height = mc.width = 32;
  const int64_t resnet = make_model("resnet20", mc)->param_count();
  EXPECT_GT(resnet, 270000);
  EXPECT_LT(resnet, 280000);
}

TEST(Models, UnknownNameListsTheKnownOnes) {
  try {
    make_model("resnet1000", ModelConfig{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cnn"), std::string::npos) << e.what();
  }
}

TEST(Models, SameSeedSameWeights) {
  ModelConfig mc;
  mc.seed = 9;
  auto a = make_model("cnn", mc), b = make_model("cnn", mc);
  mc.seed = 10;
  auto c = make_model("cnn", mc);
  EXPECT_EQ(a->params()[0]->value.f32()[5], b->params()[0]->value.f32()[5]);
  EXPECT_NE(a->params()[0]->value.f32()[5], c->params()[0]->value.f32()[5]);
}

// The whole network's backward wiring (residual adds, shortcuts, pooling, head) against finite
// differences. In eval mode BatchNorm is a fixed affine map, so the network is piecewise linear
// and well conditioned; train-mode BatchNorm backward is checked per layer and per block
// (tests/runtime/nn), where tiny batches do not make the check ill-conditioned.
void check_model_in_eval_mode(const std::string& name, float width_mult) {
  ModelConfig mc;
  mc.in_channels = 2;
  mc.height = mc.width = 8;
  mc.num_classes = 3;
  mc.width_mult = width_mult;
  auto m = make_model(name, mc);
  for (int i = 0; i < 3; ++i) m->forward(testing::random_tensor({4, 2, 8, 8}, 10 + i));  // running stats
  m->eval();
  testing::GradCheckOptions o;
  o.max_checks = 6;
  o.eps = 1e-3;
  o.rtol = 3e-2;
  o.atol = 3e-3;
  testing::check_gradients(*m, testing::random_tensor({2, 2, 8, 8}, 4), o);
}

TEST(Models, ResNet20GradientsMatchFiniteDifferences) { check_model_in_eval_mode("resnet20", 0.25f); }
TEST(Models, MobileNetV2GradientsMatchFiniteDifferences) { check_model_in_eval_mode("mobilenetv2", 0.1f); }
TEST(Models, CnnGradientsMatchFiniteDifferences) { check_model_in_eval_mode("cnn", 1.0f); }

}  // namespace
}  // namespace tern
