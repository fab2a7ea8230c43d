#include "runtime/nn/linear.h"

#include <gtest/gtest.h>

#include "runtime/nn/sequential.h"
#include "tests/support/gradcheck.h"

namespace tern {
namespace {

using testing::check_gradients;
using testing::random_tensor;

TEST(Linear, GradientsMatchFiniteDifferences) {
  Rng rng(1);
  Linear fc(7, 5, rng);
  fc.bias.value.copy_from(random_tensor({5}, 2));
  check_gradients(fc, random_tensor({3, 7}, 3));
}

TEST(Linear, WithoutBiasHasOnlyWeight) {
  Rng rng(1);
  Linear fc(4, 2, rng, /*bias=*/false);
  ASSERT_EQ(fc.params().size(), 1u);
  EXPECT_EQ(fc.params()[0]->name, "weight");
  check_gradients(fc, random_tensor({2, 4}, 3));
}

TEST(Linear, BackwardAccumulatesIntoGrads) {
  Rng rng(1);
  Linear fc(3, 2, rng);
  Tensor x = random_tensor({4, 3}, 5), dy = random_tensor({4, 2}, 6);
  fc.forward(x);
  fc.backward(dy);
  Tensor once = fc.weight.grad.clone();
  fc.forward(x);
  fc.backward(dy);
  for (int64_t i = 0; i < once.numel(); ++i) EXPECT_FLOAT_EQ(fc.weight.grad.f32()[i], 2 * once.f32()[i]);
}

TEST(Linear, RejectsWrongInputShapeWithTheExpectedShape) {
  Rng rng(1);
  Linear fc(3, 2, rng);
  try {
    fc.forward(Tensor::zeros({4, 5}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected input [N, 3]"), std::string::npos) << e.what();
  }
}

TEST(Sequential, ChainsAndNamesParamsByPosition) {
  Rng rng(1);
  Sequential net;
  net.emplace<Flatten>();
  net.emplace<Linear>(6, 4, rng);
  net.emplace<Linear>(4, 3, rng);
  const auto ps = net.params();
  ASSERT_EQ(ps.size(), 4u);
  EXPECT_EQ(ps[0]->name, "1.weight");
  EXPECT_EQ(ps[3]->name, "2.bias");
  EXPECT_EQ(net.param_count(), 6 * 4 + 4 + 4 * 3 + 3);
  check_gradients(net, random_tensor({2, 2, 3}, 9));
}

TEST(Sequential, SkipsTheInputGradientButKeepsEveryParamGradient) {
  Rng rng(1);
  Sequential net;
  net.emplace<Flatten>();
  net.emplace<Linear>(6, 4, rng);
  net.emplace<Linear>(4, 3, rng);
  Tensor x = random_tensor({2, 2, 3}, 9), dy = random_tensor({2, 3}, 10);
  net.forward(x);
  ASSERT_TRUE(net.backward(dy).defined());
  std::vector<Tensor> with_dx;
  for (Param* p : net.params()) with_dx.push_back(p->grad.clone());
  net.zero_grad();
  net.set_input_grad(false);
  EXPECT_FALSE(net[1].input_grad());  // nothing before it has parameters
  EXPECT_TRUE(net[2].input_grad());   // the first Linear's weights need its dx
  net.forward(x);
  EXPECT_FALSE(net.backward(dy).defined());
  const auto ps = net.params();
  for (size_t i = 0; i < ps.size(); ++i)
    for (int64_t j = 0; j < ps[i]->grad.numel(); ++j) EXPECT_EQ(ps[i]->grad.f32()[j], with_dx[i].f32()[j]);
}

TEST(Residual, IdentityShortcutGradients) {
  Rng rng(1);
  auto body = std::make_unique<Sequential>();
  body->emplace<Linear>(5, 5, rng);
  Residual res(std::move(body), nullptr, /*relu_after=*/false);
  check_gradients(res, random_tensor({3, 5}, 4));
}

TEST(Residual, ProjectionShortcutAndReluGradients) {
  Rng rng(2);
  auto body = std::make_unique<Linear>(4, 6, rng);
  auto shortcut = std::make_unique<Linear>(4, 6, rng, false);
  Residual res(std::move(body), std::move(shortcut), /*relu_after=*/true);
  EXPECT_EQ(res.params()[0]->name, "body.weight");
  EXPECT_EQ(res.params()[2]->name, "shortcut.weight");
  testing::GradCheckOptions o;
  o.eps = 1e-3;  // keep perturbations from crossing the ReLU's kink
  check_gradients(res, random_tensor({3, 4}, 4), o);
}

TEST(Residual, MismatchedShapesAreAnError) {
  Rng rng(1);
  Residual res(std::make_unique<Linear>(4, 3, rng), nullptr, false);
  EXPECT_THROW(res.forward(Tensor::zeros({2, 4})), Error);
}

}  // namespace
}  // namespace tern
