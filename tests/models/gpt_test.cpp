#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "models/registry.h"
#include "optim/factory.h"
#include "runtime/nn/loss.h"
#include "tests/support/gradcheck.h"

namespace tern {
namespace {

ModelConfig tiny(int64_t vocab, int64_t seq, int64_t d, int64_t layers, int64_t heads, uint64_t seed = 1) {
  ModelConfig mc;
  mc.vocab = vocab;
  mc.seq_len = seq;
  mc.d_model = d;
  mc.n_layer = layers;
  mc.n_head = heads;
  mc.seed = seed;
  return mc;
}

Tensor ids(const Shape& shape, uint64_t seed, int64_t vocab) {
  Rng rng(seed);
  Tensor t = Tensor::empty(shape, DType::i32);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<int32_t>()[i] = static_cast<int32_t>(rng.below(static_cast<uint32_t>(vocab)));
  return t;
}

// Mean next-token cross-entropy of logits [B, T, V] (nats per token), and its gradient.
LossResult lm_loss(const Tensor& logits, const std::vector<int32_t>& targets, Tensor* dlogits) {
  return softmax_cross_entropy(logits.reshape({-1, logits.dim(2)}), targets, dlogits);
}

TEST(GptTiny, IsAFlatSequentialOfEmbeddingBlocksAndHead) {
  auto m = make_model("gpt-tiny", tiny(11, 8, 16, 3, 4));
  ASSERT_EQ(m->size(), 5u);
  EXPECT_TRUE((*m)[0].describe().starts_with("Embedding(")) << (*m)[0].describe();
  for (size_t i = 1; i <= 3; ++i) EXPECT_TRUE((*m)[i].describe().starts_with("TransformerBlock(")) << i;
  EXPECT_TRUE((*m)[4].describe().starts_with("LmHead(")) << (*m)[4].describe();
  EXPECT_EQ(m->forward(ids({2, 8}, 1, 11)).shape(), (Shape{2, 8, 11}));
  EXPECT_EQ(m->forward(ids({3, 5}, 2, 11)).shape(), (Shape{3, 5, 11})) << "shorter sequences are fine";
  EXPECT_TRUE(model_takes_tokens("gpt-tiny"));
  EXPECT_FALSE(model_takes_tokens("cnn"));
}

TEST(GptTiny, ParameterCountMatchesTheArchitecture) {
  const int64_t V = 65, T = 64, C = 128, L = 4;
  // wte + wpe, per block 2 LayerNorms (4C) + qkv (3C^2 + 3C) + proj (C^2 + C) + MLP (8C^2 + 5C),
  // final LayerNorm (2C) and the untied head (C V).
  const int64_t want = V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C + C * V;
  EXPECT_EQ(make_model("gpt-tiny", tiny(V, T, C, L, 4))->param_count(), want);
  // The defaults train on a laptop CPU in minutes: under a million parameters.
  EXPECT_LT(make_model("gpt-tiny", ModelConfig{})->param_count(), 1'000'000);
}

TEST(GptTiny, BadShapesAreErrors) {
  EXPECT_THROW(make_model("gpt-tiny", tiny(11, 8, 18, 1, 4)), Error);  // 18 heads of 4.5
  EXPECT_THROW(make_model("gpt-tiny", tiny(0, 8, 16, 1, 4)), Error);
}

TEST(GptTiny, SameSeedSameWeights) {
  auto a = make_model("gpt-tiny", tiny(11, 8, 16, 1, 2, 3)),
       b = make_model("gpt-tiny", tiny(11, 8, 16, 1, 2, 3));
  auto c = make_model("gpt-tiny", tiny(11, 8, 16, 1, 2, 4));
  const auto pa = a->params(), pb = b->params(), pc = c->params();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i)
    for (int64_t j = 0; j < pa[i]->value.numel(); ++j)
      ASSERT_EQ(pa[i]->value.f32()[j], pb[i]->value.f32()[j]);
  EXPECT_NE(pa[0]->value.f32()[0], pc[0]->value.f32()[0]);
}

TEST(GptTiny, StartsNearTheUniformLossOfLogVocab) {
  // GPT-2's 0.02 head weights give logits of std ~0.02 sqrt(C) ~ 0.2 here; the expected loss
  // exceeds ln V by about half their variance (0.02), so 0.1 is a loose bound.
  const int64_t V = 50;
  auto m = make_model("gpt-tiny", tiny(V, 16, 64, 2, 4));
  Tensor x = ids({4, 16}, 5, V);
  Tensor y = ids({4, 16}, 6, V);
  const std::vector<int32_t> targets(y.data<int32_t>(), y.data<int32_t>() + y.numel());
  EXPECT_NEAR(lm_loss(m->forward(x), targets, nullptr).loss, std::log(static_cast<double>(V)), 0.1);
}

TEST(GptTiny, LogitsAtAPositionDependOnlyOnTokensUpToIt) {
  const int64_t V = 9, T = 7, changed = 4;
  auto m = make_model("gpt-tiny", tiny(V, T, 16, 2, 2));
  Tensor x = ids({2, T}, 7, V);
  Tensor before = m->forward(x).clone();
  for (int64_t b = 0; b < 2; ++b) {
    int32_t& id = x.data<int32_t>()[b * T + changed];
    id = (id + 1) % V;
  }
  Tensor after = m->forward(x);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < T; ++t) {
      bool same = true;
      for (int64_t v = 0; v < V; ++v)
        same &= before.f32()[(b * T + t) * V + v] == after.f32()[(b * T + t) * V + v];
      EXPECT_EQ(same, t < changed) << "batch " << b << " position " << t;
    }
}

TEST(GptTiny, GradientsMatchFiniteDifferences) {
  // The whole chain (embedding scatter, blocks, head) against central differences, with weights
  // larger than GPT-2's 0.02 so that every gradient is well above the check's absolute tolerance.
  auto m = make_model("gpt-tiny", tiny(7, 6, 8, 2, 2));
  uint64_t seed = 10;
  for (Param* p : m->params()) {
    p->value.copy_from(testing::random_tensor(p->value.shape(), seed++, -0.4f, 0.4f));
    const bool norm = p->name.find("ln") != std::string::npos || p->name.find("norm") != std::string::npos;
    if (norm && p->name.ends_with("weight"))
      for (int64_t i = 0; i < p->value.numel(); ++i) p->value.f32()[i] += 1.0f;
  }
  testing::GradCheckOptions o;
  o.check_input = false;
  o.max_checks = 10;
  testing::check_gradients(*m, ids({2, 5}, 11, 7), o);
}

TEST(GptTiny, LearnsARepeatingSequence) {
  // "0123401234...": after 150 Adam steps the next token is certain from the previous one; the
  // loss must fall from ln 5 = 1.61 to under 0.05 nats per token.
  const int64_t V = 5, T = 12, B = 4;
  auto m = make_model("gpt-tiny", tiny(V, T, 32, 1, 2));
  auto opt = make_optimizer("adam", m->params(), 1e-2f, 0, 0);
  Rng rng(3);
  Tensor dlogits;
  float first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    Tensor x = Tensor::empty({B, T}, DType::i32);
    std::vector<int32_t> targets(static_cast<size_t>(B * T));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t start = rng.below(static_cast<uint32_t>(V));
      for (int64_t t = 0; t < T; ++t) {
        x.data<int32_t>()[b * T + t] = static_cast<int32_t>((start + t) % V);
        targets[static_cast<size_t>(b * T + t)] = static_cast<int32_t>((start + t + 1) % V);
      }
    }
    m->zero_grad();
    const LossResult r = lm_loss(m->forward(x), targets, &dlogits);
    m->backward(dlogits.reshape({B, T, V}));
    opt->step();
    if (step == 0) first = r.loss;
    last = r.loss;
  }
  EXPECT_NEAR(first, std::log(5.0), 0.1);
  EXPECT_LT(last, 0.05f);
}

// Pipeline stages keep several micro-batches' forward caches at once (ForwardState): two
// forwards, then their backwards in reverse order with the caches swapped, must give the same
// gradients as running each micro-batch's forward and backward back to back.
TEST(GptTiny, SwappedForwardStatesGiveEachMicroBatchItsOwnGradients) {
  const ModelConfig mc = tiny(9, 6, 16, 2, 2);
  const Tensor xa = ids({2, 6}, 20, 9), xb = ids({3, 4}, 21, 9);
  const Tensor dya = testing::random_tensor({2, 6, 9}, 22), dyb = testing::random_tensor({3, 4, 9}, 23);

  auto serial = make_model("gpt-tiny", mc);
  serial->forward(xa);
  serial->backward(dya);
  serial->forward(xb);
  serial->backward(dyb);

  auto m = make_model("gpt-tiny", mc);
  std::vector<Module*> modules;
  m->visit([&](Module& mod) { modules.push_back(&mod); });
  std::vector<ForwardState> held_a(modules.size());
  auto swap_all = [&](std::vector<ForwardState>& states) {
    for (size_t i = 0; i < modules.size(); ++i) modules[i]->swap_forward_state(states[i]);
  };
  m->forward(xa);
  swap_all(held_a);  // a's caches out
  m->forward(xb);
  m->backward(dyb);
  swap_all(held_a);  // a's caches back in
  m->backward(dya);
  for (size_t i = 0; i < modules.size(); ++i)
    EXPECT_TRUE(held_a[i].supported()) << modules[i]->describe() << " does not say what it caches";

  const auto ps = serial->params(), pm = m->params();
  ASSERT_EQ(ps.size(), pm.size());
  for (size_t i = 0; i < ps.size(); ++i)
    for (int64_t j = 0; j < ps[i]->grad.numel(); ++j)
      ASSERT_NEAR(pm[i]->grad.f32()[j], ps[i]->grad.f32()[j], 1e-5 * (1 + std::fabs(ps[i]->grad.f32()[j])))
          << ps[i]->name << "[" << j << "]";
}

}  // namespace
}  // namespace tern
