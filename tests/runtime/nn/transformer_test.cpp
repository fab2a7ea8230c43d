#include "runtime/nn/transformer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/nn/init.h"
#include "tests/support/gradcheck.h"

namespace tern {
namespace {

using testing::check_gradients;
using testing::random_tensor;

// GPT-2's 0.02 weights make every gradient tiny next to the check's absolute tolerance; larger
// weights (and a non-identity LayerNorm affine) make the check see every path.
void randomise(Module& m, uint64_t seed, float scale) {
  for (Param* p : m.params()) {
    const bool norm_scale =
        p->name.find("ln") != std::string::npos || p->name.find("norm") != std::string::npos;
    p->value.copy_from(random_tensor(p->value.shape(), seed++, -scale, scale));
    if (norm_scale && p->name.ends_with("weight")) {
      float* w = p->value.f32();
      for (int64_t i = 0; i < p->value.numel(); ++i) w[i] += 1.0f;
    }
  }
}

// y[:, t] must not depend on x[:, t'] for t' > t.
void expect_causal(Module& m, int64_t B, int64_t T, int64_t C, int64_t changed) {
  Tensor x = random_tensor({B, T, C}, 40);
  Tensor y = m.forward(x).clone();
  // Not a constant shift: LayerNorm would erase that, and the later positions would not change.
  Tensor delta = random_tensor({C}, 41);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) x.f32()[(b * T + changed) * C + c] += delta.f32()[c];
  Tensor y2 = m.forward(x);
  const int64_t out = y.dim(2);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      bool same = true;
      for (int64_t c = 0; c < out; ++c)
        same &= y.f32()[(b * T + t) * out + c] == y2.f32()[(b * T + t) * out + c];
      EXPECT_EQ(same, t < changed) << "batch " << b << " position " << t;
    }
}

TEST(CausalSelfAttention, GradientsMatchFiniteDifferences) {
  Rng rng(1);
  CausalSelfAttention attn(8, 2, rng);
  randomise(attn, 2, 0.5f);
  check_gradients(attn, random_tensor({2, 5, 8}, 3));
}

TEST(CausalSelfAttention, OutputsDependOnlyOnEarlierPositions) {
  Rng rng(4);
  CausalSelfAttention attn(12, 3, rng);
  randomise(attn, 5, 0.5f);
  expect_causal(attn, 2, 7, 12, 4);
}

TEST(CausalSelfAttention, WidthMustDivideIntoHeads) {
  Rng rng(6);
  EXPECT_THROW(CausalSelfAttention(10, 4, rng), Error);
}

TEST(TransformerBlock, RegistersItsPartsInForwardOrder) {
  Rng rng(7);
  TransformerBlock block(16, 4, rng, gpt_residual_std(4));
  std::vector<std::string> names;
  for (Param* p : block.params()) names.push_back(p->name);
  const std::vector<std::string> want{
      "ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
      "ln2.weight", "ln2.bias", "fc.weight",       "fc.bias",       "proj.weight",      "proj.bias"};
  EXPECT_EQ(names, want);
  // 2 LayerNorms (2C each) + qkv (3C^2 + 3C) + attn proj (C^2 + C) + fc (4C^2 + 4C) + proj (4C^2 + C)
  EXPECT_EQ(block.param_count(), 2 * 32 + (768 + 48) + (256 + 16) + (1024 + 64) + (1024 + 16));
  EXPECT_EQ(block.fc.weight.value.shape(), (Shape{64, 16}));
}

TEST(TransformerBlock, ResidualProjectionsStartSmallerWithDepth) {
  // GPT-2: the two projections into the residual stream are N(0, (0.02 / sqrt(2L))^2). For L = 8
  // that is 0.005; the sample std of 256 and 1024 values is within 15% (over 3 sigma).
  Rng rng(8);
  TransformerBlock block(16, 2, rng, gpt_residual_std(8));
  auto rms = [](const Tensor& t) {
    double sq = 0;
    for (int64_t i = 0; i < t.numel(); ++i) sq += double(t.f32()[i]) * t.f32()[i];
    return std::sqrt(sq / static_cast<double>(t.numel()));
  };
  EXPECT_NEAR(rms(block.attn.proj.weight.value), 0.005, 0.00075);
  EXPECT_NEAR(rms(block.proj.weight.value), 0.005, 0.00075);
  EXPECT_NEAR(rms(block.fc.weight.value), 0.02, 0.003);
  EXPECT_NEAR(rms(block.attn.qkv.weight.value), 0.02, 0.003);
}

TEST(TransformerBlock, GradientsMatchFiniteDifferences) {
  Rng rng(9);
  TransformerBlock block(8, 2, rng);
  randomise(block, 10, 0.4f);
  testing::GradCheckOptions o;
  o.max_checks = 24;
  check_gradients(block, random_tensor({2, 4, 8}, 11), o);
}

TEST(TransformerBlock, OutputsDependOnlyOnEarlierPositions) {
  Rng rng(12);
  TransformerBlock block(8, 2, rng);
  randomise(block, 13, 0.4f);
  expect_causal(block, 2, 6, 8, 3);
}

TEST(TransformerBlock, ReturnsNoInputGradientWhenNotAsked) {
  Rng rng(14);
  TransformerBlock block(8, 2, rng);
  block.forward(random_tensor({1, 3, 8}, 15));
  block.set_input_grad(false);
  EXPECT_FALSE(block.backward(random_tensor({1, 3, 8}, 16)).defined());
  EXPECT_NE(block.proj.weight.grad.f32()[0], 0.0f) << "parameter gradients are still computed";
}

TEST(LmHead, MapsPositionsToVocabularyLogitsWithoutBias) {
  Rng rng(17);
  LmHead head(8, 11, rng);
  ASSERT_EQ(head.params().size(), 3u);  // norm.weight, norm.bias, out.weight
  EXPECT_EQ(head.params()[2]->name, "out.weight");
  EXPECT_EQ(head.forward(random_tensor({2, 3, 8}, 18)).shape(), (Shape{2, 3, 11}));
}

TEST(LmHead, GradientsMatchFiniteDifferences) {
  Rng rng(19);
  LmHead head(6, 9, rng);
  randomise(head, 20, 0.5f);
  check_gradients(head, random_tensor({2, 3, 6}, 21, -2.0f, 2.0f));
}

}  // namespace
}  // namespace tern
