// models/mcunet.cpp: what issue 7 needs of it — it converts to int8 with ondevice/quantize.h, its int8
// forward agrees with the f32 model, and the training steps of bias-only and a sparse update fit 256 KB
// while a full update does not.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "models/registry.h"
#include "ondevice/finetune.h"
#include "ondevice/quantize.h"
#include "ondevice/update_plan.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace tern {
namespace {

struct Converted {
  std::unique_ptr<Sequential> net;
  Tensor images;
  ondevice::QuantizedModel q;
};

Converted convert(uint64_t seed, float width_mult = 1.0f) {
  Converted c;
  c.net = make_model("mcunet", ModelConfig{.width_mult = width_mult});
  Rng rng(seed);
  c.images = Tensor::empty({16, 1, 28, 28});
  for (int64_t i = 0; i < c.images.numel(); ++i) c.images.f32()[i] = rng.normal();
  c.net->train();  // running statistics near the batch statistics, so activations are normalised
  for (int i = 0; i < 15; ++i) c.net->forward(c.images.slice(0, 8));
  c.net->eval();
  c.q = ondevice::quantize_model(*c.net, c.images);
  return c;
}

TEST(Mcunet, ConvertsToInt8AndAgreesWithTheFloatModel) {
  Converted c = convert(3);
  const Tensor logits = c.net->forward(c.images);
  // int8 rounding through ~26 layers: the int8 argmax must match the f32 one on most random images
  // (measured 16/16 at this seed; random inputs have small logit margins, so allow 4 misses).
  int agree = 0;
  for (int64_t i = 0; i < 16; ++i) {
    const float* row = logits.f32() + i * 10;
    const int f32_class = static_cast<int>(std::max_element(row, row + 10) - row);
    const std::vector<float> q = c.q.forward(c.images.f32() + i * 28 * 28);
    agree += std::max_element(q.begin(), q.end()) - q.begin() == f32_class;
  }
  EXPECT_GE(agree, 12);
}

TEST(Mcunet, BiasOnlyAndSparseStepsFit256KBAndFullDoesNot) {
  Converted c = convert(5);
  ondevice::replace_head(c.q, 5, ondevice::HeadInit::zeros, 1);
  const std::vector<ondevice::LayerSpec> layers = ondevice::layer_specs(c.q);
  const ondevice::StepOptions step;
  auto peak = [&](const char* spec) {
    return ondevice::plan_finetune_step(c.q, ondevice::parse_update_scheme(spec, layers), step).peak;
  };
  EXPECT_LE(peak("bias"), 256u * 1024);
  // bench/finetune_transfer.py's sparse plan for mcunet.
  EXPECT_LE(peak("bias:last=12;weight:11=0.25,10.6=0.25,10.0=0.125,9.body.6=0.25"), 256u * 1024);
  EXPECT_GT(peak("full"), 256u * 1024);
}

// --width-mult widens the 7x7 and 4x4 stages and the head only: the 28x28 and 14x14 layers keep their
// shapes (their f32 gradients are what a step's arena holds when backward reaches them).
TEST(Mcunet, WidthMultWidensOnlyTheLateStages) {
  Converted narrow = convert(7), wide = convert(7, 4.0f);
  const std::vector<ondevice::LayerSpec> a = ondevice::layer_specs(narrow.q), b = ondevice::layer_specs(wide.q);
  ASSERT_EQ(a.size(), b.size());
  size_t same = 0, widened = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].name, b[i].name);
    if (a[i].weight_elems == 0) continue;  // pooling
    if (a[i].weight_elems == b[i].weight_elems) {
      ++same;
    } else {
      ++widened;
      EXPECT_GE(b[i].weight_elems, 4 * a[i].weight_elems) << a[i].name;
    }
  }
  // The stem, blocks 3-5 and block 6's expansion and depthwise (1 + 2 + 3 + 3 + 2); block 6's projection
  // and everything after it (4 blocks of 3, 1 of 3, the head conv and the linear head: 1 + 12 + 2).
  EXPECT_EQ(same, 11u);
  EXPECT_EQ(widened, 15u);
  EXPECT_THROW(make_model("mcunet", ModelConfig{.width_mult = 0.5f}), Error);
}

}  // namespace
}  // namespace tern
