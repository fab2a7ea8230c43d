#include "ondevice/finetune.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/registry.h"
#include "ondevice/qas.h"
#include "ondevice/quantize.h"
#include "runtime/error.h"
#include "runtime/nn/loss.h"
#include "runtime/rng.h"

namespace tern::ondevice {
namespace {

Tensor random_images(Rng& rng, int64_t n, int64_t c, int64_t h, int64_t w) {
  Tensor t = Tensor::empty({n, c, h, w});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.normal();
  return t;
}

// Running statistics near the batch statistics, so an untrained net has normalised activations.
void settle_batch_norm(Sequential& net, const Tensor& x) {
  net.train();
  for (int i = 0; i < 15; ++i) net.forward(x.slice(0, std::min<int64_t>(8, x.dim(0))));
  net.eval();
}

struct Fixture {
  std::unique_ptr<Sequential> net;
  Tensor images;
  QuantizedModel q;
};

Fixture make_fixture(const std::string& model, uint64_t seed) {
  ModelConfig cfg;
  if (model == "mobilenetv2") cfg.width_mult = 0.35f;
  Fixture f;
  f.net = make_model(model, cfg);
  Rng rng(seed);
  f.images = random_images(rng, model == "mobilenetv2" ? 8 : 32, 1, 28, 28);
  settle_batch_norm(*f.net, f.images);
  f.q = quantize_model(*f.net, f.images);
  return f;
}

// MobileNetV2 is slow to build and calibrate on a busy CPU: one instance serves the tests that only read it.
const Fixture& mobilenet() {
  static const Fixture f = make_fixture("mobilenetv2", 2);
  return f;
}

const float* image(const Tensor& images, int64_t i) { return images.f32() + i * 28 * 28; }

size_t op_named(const QuantizedModel& q, const std::string& name) {
  for (size_t k = 0; k < q.ops.size(); ++k)
    if (q.ops[k].name == name) return k;
  throw Error("no op " + name);
}

const Buffer* planned(const MemoryPlan& plan, const std::string& name) {
  const auto it =
      std::find_if(plan.buffers.begin(), plan.buffers.end(), [&](const Buffer& b) { return b.name == name; });
  return it == plan.buffers.end() ? nullptr : &*it;
}

TEST(Finetune, LayerSpecsFollowTheOpsAndMergeResidualAdds) {
  const Fixture cnn = make_fixture("cnn", 1);
  const std::vector<LayerSpec> layers = layer_specs(cnn.q);
  ASSERT_EQ(layers.size(), 6u);
  const std::vector<LayerKind> kinds = {LayerKind::kConv, LayerKind::kAvgPool, LayerKind::kConv,
                                        LayerKind::kAvgPool, LayerKind::kLinear, LayerKind::kLinear};
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ(layers[i].kind, kinds[i]) << i;
    EXPECT_EQ(layers[i].name, cnn.q.ops[i].name);
    EXPECT_EQ(layers[i].residual_from, -1);
  }
  EXPECT_EQ(layers[0].output_elems, 28u * 28 * 32);
  EXPECT_EQ(layers[0].weight_elems, 32u * 9);
  EXPECT_TRUE(layers[0].relu);
  EXPECT_FALSE(layers[5].relu);
  EXPECT_EQ(layers[5].output_elems, 10u);

  const Fixture& mb = mobilenet();
  const std::vector<LayerSpec> ml = layer_specs(mb.q);
  int adds = 0;
  for (const QuantOp& op : mb.q.ops) adds += op.kind == QuantOpKind::add;
  EXPECT_EQ(ml.size(), mb.q.ops.size() - static_cast<size_t>(adds));
  int residuals = 0;
  for (size_t i = 0; i < ml.size(); ++i) {
    if (ml[i].residual_from < 0) continue;
    ++residuals;
    // An inverted residual adds the block's input: the tensor three layers back (expand, depthwise,
    // project), of the same size as the projection's output.
    EXPECT_EQ(ml[i].residual_from, static_cast<int>(i) - 2) << ml[i].name;
  }
  EXPECT_EQ(residuals, adds);
  EXPECT_NO_THROW(check_layers(ml));
}

// The arena's measured high-water mark equals the plan's peak for every scheme, on a chain (cnn) and on
// a network with residuals, in-place depthwise convolutions and stride-2 depthwise backward (MobileNetV2).
TEST(Finetune, ArenaHighWaterEqualsPlannedPeak) {
  for (const std::string model : {"cnn", "mobilenetv2"}) {
    const Fixture cnn = model == "cnn" ? make_fixture(model, 3) : Fixture{};
    const Fixture& f = model == "cnn" ? cnn : mobilenet();
    const std::vector<LayerSpec> layers = layer_specs(f.q);
    std::vector<std::string> schemes = {"none", "bias", "full", "last=1", "last=3", "bias:last=4"};
    schemes.push_back(model == "cnn" ? "bias:all;weight:4=0.25,9=0.125" : "bias:last=12;weight:8.body.0=0.5");
    for (const std::string& text : schemes) {
      SCOPED_TRACE(model + " " + text);
      const UpdateScheme scheme = parse_update_scheme(text, layers);
      FinetuneOptions opt;
      opt.lr = 0.01f;
      Finetuner ft(f.q, scheme, opt);
      EXPECT_NO_THROW(validate(ft.plan()));
      EXPECT_EQ(plan_finetune_step(f.q, scheme, opt.step).peak, ft.plan().peak);
      for (int i = 0; i < 2; ++i) {
        const StepResult r = ft.step(image(f.images, i), i % 10);
        EXPECT_TRUE(std::isfinite(r.loss));
      }
      EXPECT_EQ(ft.high_water(), ft.plan().peak);
      EXPECT_GT(ft.plan().peak, 0u);
    }
  }
}

// The real-valued bias gradient of op k from one QAS step at learning rate lr: the master copy moves by
// -lr * G_b / (s_W * s_x) quantised units and the int32 bias by that rounded, so
// G_b = -(b_after - b_before) * s_W * s_x / lr, to within 0.5 * s_W * s_x / lr.
std::vector<float> bias_grad_from_step(const QuantizedModel& before, const QuantizedModel& after, size_t k,
                                       float lr) {
  const QuantOp& a = before.ops[k];
  const QuantOp& b = after.ops[k];
  const float s_x = before.tensors[static_cast<size_t>(a.input)].scale;
  std::vector<float> g(a.bias.size());
  for (size_t c = 0; c < g.size(); ++c)
    g[c] = -static_cast<float>(static_cast<double>(b.bias[c]) - a.bias[c]) * a.weight_scale[c] * s_x / lr;
  return g;
}

double cosine(const std::vector<float>& a, const float* b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb + 1e-30);
}

// The int8 step's bias gradients against the f32 model's (autograd in eval mode, where a folded
// BatchNorm's bias gradient is that of its beta), through every layer of the cnn: masks, max-pool
// routing, the flatten permutation and QAS's units must all be right for them to agree. Measured over 4
// images: cosine >= 0.96 for every layer, norm ratio within 7%; the bounds (0.9, 25%) are for
// int8 noise, and a wrong routing or unit gives cosines near 0 or ratios off by orders of magnitude.
TEST(Finetune, BiasGradientsMatchTheFloatModel) {
  Fixture f = make_fixture("cnn", 4);
  const std::vector<LayerSpec> layers = layer_specs(f.q);
  const UpdateScheme scheme = parse_update_scheme("bias", layers);
  const float lr = 100.0f;
  std::map<std::string, std::string> f32_bias = {{"0", "1.bias"}, {"4", "5.bias"}, {"9", "9.bias"},
                                                 {"11", "11.bias"}};
  std::map<std::string, Param*> params;
  for (Param* p : f.net->params()) params[p->name] = p;
  f.net->eval();
  for (int64_t i = 0; i < 4; ++i) {
    const int label = static_cast<int>(i * 3 % 10);
    FinetuneOptions opt;
    opt.lr = lr;
    Finetuner ft(f.q, scheme, opt);
    ft.step(image(f.images, i), label);

    f.net->zero_grad();
    const Tensor x = f.images.slice(i, i + 1);
    const Tensor logits = f.net->forward(x);
    Tensor dlogits;
    softmax_cross_entropy(logits, {label}, &dlogits);
    f.net->backward(dlogits);
    for (const auto& [op_name, param] : f32_bias) {
      SCOPED_TRACE(detail::concat("image ", i, " op ", op_name));
      const size_t k = op_named(f.q, op_name);
      const std::vector<float> got = bias_grad_from_step(f.q, ft.model(), k, lr);
      const Tensor& want = params.at(param)->grad;
      ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel());
      double ng = 0, nw = 0;
      for (size_t c = 0; c < got.size(); ++c) {
        ng += static_cast<double>(got[c]) * got[c];
        nw += static_cast<double>(want.f32()[c]) * want.f32()[c];
      }
      const double cos = cosine(got, want.f32()), ratio = std::sqrt(ng / nw);
      std::printf("[ grad ] image %lld op %-3s cosine %.4f norm ratio %.4f\n", static_cast<long long>(i),
                  op_name.c_str(), cos, ratio);
      EXPECT_GE(cos, 0.9);
      EXPECT_NEAR(ratio, 1.0, 0.25);
    }
  }
}

// QAS multiplies the bias gradient by (s_W * s_x)^-2; with it off, the same update needs a learning rate
// larger by that factor. On a new head every row has one scale, so the factor is one number.
TEST(Finetune, QasOffWithRescaledLearningRateMatchesQasOn) {
  Fixture f = make_fixture("cnn", 5);
  replace_head(f.q, 5, HeadInit::random, 9);
  const std::vector<LayerSpec> layers = layer_specs(f.q);
  const UpdateScheme scheme = parse_update_scheme("last=1", layers);
  const size_t head = f.q.ops.size() - 1;
  const float s_w = f.q.ops[head].weight_scale[0];
  const float s_x = f.q.tensors[static_cast<size_t>(f.q.ops[head].input)].scale;
  FinetuneOptions on;
  on.lr = 1.0f;
  FinetuneOptions off = on;
  off.qas = false;
  off.lr = on.lr * qas_bias_factor(s_w, s_x);
  Finetuner a(f.q, scheme, on), b(f.q, scheme, off);
  a.step(image(f.images, 0), 2);
  b.step(image(f.images, 0), 2);
  int moved = 0;
  for (size_t c = 0; c < 5; ++c) {
    EXPECT_NEAR(a.model().ops[head].bias[c], b.model().ops[head].bias[c], 1) << c;
    moved += a.model().ops[head].bias[c] != f.q.ops[head].bias[c];
  }
  EXPECT_EQ(moved, 5);
  // With QAS off at the QAS learning rate the bias barely moves: (s_W * s_x)^2 is tiny.
  FinetuneOptions raw = on;
  raw.qas = false;
  Finetuner c(f.q, scheme, raw);
  c.step(image(f.images, 0), 2);
  for (size_t k = 0; k < 5; ++k) EXPECT_EQ(c.model().ops[head].bias[k], f.q.ops[head].bias[k]);
}

// A sparse update changes only the chosen channels (the largest weight norms) of the layers it names,
// and nothing that is frozen.
TEST(Finetune, SparseUpdateTouchesOnlyChosenChannelsAndTrainedParts) {
  Fixture f = make_fixture("cnn", 6);
  const std::vector<LayerSpec> layers = layer_specs(f.q);
  const UpdateScheme scheme = parse_update_scheme("bias:last=1;weight:4=0.25", layers);
  FinetuneOptions opt;
  opt.lr = 0.5f;
  Finetuner ft(f.q, scheme, opt);
  const size_t conv = op_named(f.q, "4");
  const std::vector<int32_t>& ch = ft.trained_channels(2);
  ASSERT_EQ(ch.size(), 16u);  // a quarter of 64
  const QuantOp& op = f.q.ops[conv];
  const std::vector<int> want = select_channels_by_norm(op.weight, op.weight_scale, 64, 0.25f);
  EXPECT_EQ(std::vector<int>(ch.begin(), ch.end()), want);
  for (int i = 0; i < 8; ++i) ft.step(image(f.images, i), i % 10);
  const size_t cols = op.weight.size() / 64;
  int changed_rows = 0;
  for (int32_t c = 0; c < 64; ++c) {
    bool changed = false;
    for (size_t e = 0; e < cols; ++e)
      changed |= ft.model().ops[conv].weight[static_cast<size_t>(c) * cols + e] != op.weight[static_cast<size_t>(c) * cols + e];
    const bool chosen = std::find(ch.begin(), ch.end(), c) != ch.end();
    if (!chosen) {
      EXPECT_FALSE(changed) << "channel " << c;
    }
    changed_rows += changed;
  }
  EXPECT_GT(changed_rows, 8);
  for (size_t k = 0; k < f.q.ops.size(); ++k) {
    const bool head = k + 1 == f.q.ops.size();
    EXPECT_EQ(ft.model().ops[k].bias != f.q.ops[k].bias, head) << f.q.ops[k].name;  // bias:last=1
    if (k != conv) {
      EXPECT_EQ(ft.model().ops[k].weight, f.q.ops[k].weight) << f.q.ops[k].name;
    }
  }
}

// Fine-tuning a new head plus the biases learns a small task: three classes, each an image prototype
// plus noise (sigma 0.5). Chance is 1/3; after 4 passes over 60 images the held-out accuracy is
// measured at 100% for both schemes with f32, int16 and int8 master copies; the bound is 80%.
TEST(Finetune, NewHeadLearnsATaskAboveChance) {
  Fixture f = make_fixture("cnn", 7);
  replace_head(f.q, 3, HeadInit::zeros, 1);
  EXPECT_EQ(f.q.num_classes(), 3);
  Rng rng(70);
  const Tensor protos = random_images(rng, 3, 1, 28, 28);
  auto sample = [&](int label, std::vector<float>& img) {
    img.resize(28 * 28);
    for (size_t p = 0; p < img.size(); ++p) img[p] = protos.f32()[label * 784 + static_cast<int64_t>(p)] + 0.5f * rng.normal();
  };
  const std::vector<LayerSpec> layers = layer_specs(f.q);
  for (const MasterFormat master : {MasterFormat::f32, MasterFormat::int16, MasterFormat::int8})
    for (const std::string text : {"bias:all;weight:11=1", "bias:last=2;weight:4=0.125,9=0.25,11=1"}) {
      SCOPED_TRACE(text + " master " + master_format_name(master));
      FinetuneOptions opt;
      opt.lr = 0.01f;
      set_master_format(opt, master);
      Finetuner ft(f.q, parse_update_scheme(text, layers), opt);
      std::vector<float> img;
      for (int epoch = 0; epoch < 4; ++epoch)
        for (int i = 0; i < 60; ++i) {
          sample(i % 3, img);
          ft.step(img.data(), i % 3);
        }
      int correct = 0;
      for (int i = 0; i < 60; ++i) {
        sample(i % 3, img);
        correct += ft.predict(img.data()) == i % 3;
      }
      std::printf("[ task ] %s, %s master: %d / 60\n", text.c_str(), master_format_name(master), correct);
      EXPECT_GE(correct, 48);
      EXPECT_EQ(ft.high_water(), ft.plan().peak);
    }
}

// set_lr changes the step size of the steps after it: a Finetuner built at another rate and set to `lr`
// takes exactly the steps of one built at `lr`, and a rate of 0 leaves the model as it is.
TEST(Finetune, SetLrChangesTheStepSizeOfLaterSteps) {
  Fixture f = make_fixture("cnn", 9);
  replace_head(f.q, 5, HeadInit::random, 3);
  const UpdateScheme scheme = parse_update_scheme("bias:last=2;weight:11=1", layer_specs(f.q));
  FinetuneOptions at, other;
  at.lr = 0.05f;
  other.lr = 3.0f;
  Finetuner a(f.q, scheme, at), b(f.q, scheme, other);
  b.set_lr(0.05f);
  EXPECT_EQ(b.lr(), 0.05f);
  for (int i = 0; i < 3; ++i) {
    a.step(image(f.images, i), i % 5);
    b.step(image(f.images, i), i % 5);
  }
  for (size_t k = 0; k < f.q.ops.size(); ++k) {
    EXPECT_EQ(a.model().ops[k].weight, b.model().ops[k].weight) << k;
    EXPECT_EQ(a.model().ops[k].bias, b.model().ops[k].bias) << k;
  }
  const size_t head = f.q.ops.size() - 1;
  EXPECT_NE(a.model().ops[head].bias, f.q.ops[head].bias);  // the steps did move it
  const QuantOp before = b.model().ops[head];
  b.set_lr(0);
  b.step(image(f.images, 5), 1);
  EXPECT_EQ(b.model().ops[head].weight, before.weight);
  EXPECT_EQ(b.model().ops[head].bias, before.bias);
  EXPECT_THROW(b.set_lr(-0.1f), Error);
  EXPECT_THROW(b.set_lr(std::nanf("")), Error);
}

// Momentum keeps one f32 velocity per trained value in the arena: the plan's optimizer-state bytes are
// 4 x (trained weight values + trained biases), they add to the peak, and the measured high-water mark
// still equals it.
// What the device does: steps on images it receives already quantised, and predictions from the
// step's own forward pass (the trained parameters as the executor rebuilds them, not the model's).
TEST(Finetune, QuantisedImagesAndTheStepsForwardPassAgreeWithTheHostPaths) {
  Fixture f = make_fixture("cnn", 12);
  replace_head(f.q, 5, HeadInit::random, 4);
  const UpdateScheme scheme = parse_update_scheme("bias:all;weight:4=0.25,11=1", layer_specs(f.q));
  FinetuneOptions options;
  options.lr = 0.05f;
  Finetuner from_f32(f.q, scheme, options), from_int8(f.q, scheme, options);
  for (int i = 0; i < 6; ++i) {
    const StepResult a = from_f32.step(image(f.images, i), i % 5);
    const StepResult b = from_int8.step(f.q.quantize_input(image(f.images, i)).data(), i % 5);
    EXPECT_EQ(a.loss, b.loss) << i;
    EXPECT_EQ(a.predicted, b.predicted) << i;
  }
  for (size_t k = 0; k < f.q.ops.size(); ++k) EXPECT_EQ(from_f32.model().ops[k].weight, from_int8.model().ops[k].weight);
  const size_t peak = from_int8.high_water();
  int changed = 0;
  for (int i = 6; i < 30; ++i) {
    const int host = from_int8.predict(image(f.images, i));
    EXPECT_EQ(from_int8.predict_quantized(f.q.quantize_input(image(f.images, i)).data()), host) << i;
    changed += host != Finetuner(f.q, scheme, options).predict(image(f.images, i));
  }
  EXPECT_GT(changed, 0);  // the steps moved some predictions: the forward pass read trained values
  EXPECT_EQ(from_int8.high_water(), peak);  // a forward pass stays inside the step's plan
}

TEST(Finetune, MomentumPlansOneVelocityPerTrainedValue) {
  const Fixture f = make_fixture("cnn", 10);
  const std::vector<LayerSpec> layers = layer_specs(f.q);
  const UpdateScheme scheme = parse_update_scheme("bias:last=2;weight:9=0.25,11=1", layers);
  FinetuneOptions plain, heavy;
  heavy.momentum = 0.9f;
  heavy.step.optimizer_states = 1;
  Finetuner a(f.q, scheme, plain), b(f.q, scheme, heavy);
  size_t trained = 0;
  for (const LayerSpec& l : b.layers()) {
    if (l.train.bias) trained += l.bias_elems;
    if (l.train.weight_ratio > 0)
      trained += l.weight_elems / static_cast<size_t>(l.out_channels) *
                 static_cast<size_t>(channels_for_ratio(l.out_channels, l.train.weight_ratio));
  }
  auto state_bytes = [](const MemoryPlan& p) {
    size_t n = 0;
    for (const Buffer& buf : p.buffers) n += buf.kind == BufferKind::kOptimizerState ? buf.size : 0;
    return n;
  };
  EXPECT_EQ(state_bytes(a.plan()), 0u);
  EXPECT_EQ(state_bytes(b.plan()), 4 * trained);
  EXPECT_GE(b.plan().peak, a.plan().peak + 4 * trained);  // the velocities live through the whole step
  for (int i = 0; i < 3; ++i) b.step(image(f.images, i), i % 10);
  EXPECT_EQ(b.high_water(), b.plan().peak);
}

// The heavy-ball recurrence v = mu * v + g, master -= lr * v: the first step equals plain SGD's (v = g),
// and the second moves by plain SGD's second step plus mu times its first. Checked on the head's biases,
// whose quantised unit (s_W * s_x) is fine enough that each rounding costs at most half a unit.
TEST(Finetune, MomentumFollowsTheHeavyBallRecurrence) {
  Fixture f = make_fixture("cnn", 11);
  replace_head(f.q, 5, HeadInit::random, 5);
  const UpdateScheme scheme = parse_update_scheme("last=1", layer_specs(f.q));
  const size_t head = f.q.ops.size() - 1;
  FinetuneOptions plain;
  plain.lr = 0.5f;
  FinetuneOptions heavy = plain;
  heavy.momentum = 0.5f;
  heavy.step.optimizer_states = 1;
  Finetuner a(f.q, scheme, plain), b(f.q, scheme, heavy);
  const std::vector<int32_t> b0 = f.q.ops[head].bias;
  a.step(image(f.images, 0), 1);
  b.step(image(f.images, 0), 1);
  const std::vector<int32_t> a1 = a.model().ops[head].bias;
  EXPECT_EQ(b.model().ops[head].bias, a1);
  EXPECT_EQ(b.model().ops[head].weight, a.model().ops[head].weight);
  a.step(image(f.images, 1), 3);
  b.step(image(f.images, 1), 3);
  const std::vector<int32_t>& a2 = a.model().ops[head].bias;
  const std::vector<int32_t>& b2 = b.model().ops[head].bias;
  double largest_push = 0;
  for (size_t c = 0; c < 5; ++c) {
    const double plain_step = static_cast<double>(a2[c]) - a1[c], first = static_cast<double>(a1[c]) - b0[c];
    const double heavy_step = static_cast<double>(b2[c]) - a1[c];
    EXPECT_NEAR(heavy_step, plain_step + 0.5 * first, 2.0) << c;
    largest_push = std::max(largest_push, std::abs(0.5 * first));
  }
  EXPECT_GT(largest_push, 20.0);  // the momentum term is far above the rounding
}

// Three steps of a and b on the same images give the same losses and the same int8 models, which
// moved; a's arena reaches exactly its plan.
void expect_same_steps(Finetuner& a, Finetuner& b, const Fixture& f) {
  for (int i = 0; i < 3; ++i) {
    const StepResult ra = a.step(image(f.images, i), i % 10), rb = b.step(image(f.images, i), i % 10);
    EXPECT_EQ(ra.loss, rb.loss) << "step " << i;
  }
  EXPECT_EQ(a.high_water(), a.plan().peak);
  bool moved = false;
  for (size_t k = 0; k < f.q.ops.size(); ++k) {
    EXPECT_EQ(a.model().ops[k].bias, b.model().ops[k].bias) << f.q.ops[k].name;
    EXPECT_EQ(a.model().ops[k].weight, b.model().ops[k].weight) << f.q.ops[k].name;
    moved |= a.model().ops[k].bias != f.q.ops[k].bias || a.model().ops[k].weight != f.q.ops[k].weight;
  }
  EXPECT_TRUE(moved);
}

// Backward across an inverted-residual block as one op, a group of hidden channels at a time, computes
// every value with the same terms in the same order as layer by layer: the models after a few steps
// with momentum are equal to the last bit, for schemes whose first trained layer is below every block
// (all biases, alone or with weights training in all three layers of a block), is a block's expansion,
// or is its depthwise conv, and for groups of one channel; and with int16 masters, whose stochastic
// rounding draws per element, not in update order. The fused plan holds no whole hidden gradient.
TEST(Finetune, FusedBlocksGiveTheLayerByLayerStepBitForBit) {
  const Fixture& f = mobilenet();
  const std::vector<LayerSpec> layers = layer_specs(f.q);
  // A block with an expansion and a residual, to train weights in.
  const std::vector<FusedBlock> all =
      fused_blocks(with_update(layers, bias_only_update(layers)), StepOptions{});
  const auto block = std::find_if(all.begin(), all.end(), [&](const FusedBlock& b) {
    return b.has_expansion() && layers[static_cast<size_t>(b.project)].residual_from == b.first;
  });
  ASSERT_NE(block, all.end());
  ASSERT_TRUE(std::any_of(all.begin(), all.end(), [](const FusedBlock& b) { return !b.has_expansion(); }));
  const std::string e = layers[static_cast<size_t>(block->first)].name;
  const std::string d = layers[static_cast<size_t>(block->first + 1)].name;
  const std::string p = layers[static_cast<size_t>(block->project)].name;
  const std::vector<std::string> schemes = {
      "bias", "bias:all;weight:" + e + "=0.5," + d + "=0.25," + p + "=0.125",
      "bias:" + e + ";weight:" + e + "=0.25", "bias:" + d + ";weight:" + d + "=1"};
  for (const std::string& text : schemes) {
    for (const auto& [group_bytes, master] :
         {std::pair{size_t{16 * 1024}, MasterFormat::f32}, std::pair{size_t{1}, MasterFormat::f32},
          std::pair{size_t{16 * 1024}, MasterFormat::int16}}) {
      SCOPED_TRACE(text + " group bytes " + std::to_string(group_bytes) + " master " +
                   master_format_name(master));
      const UpdateScheme scheme = parse_update_scheme(text, layers);
      FinetuneOptions fused;
      fused.lr = 0.5f;
      fused.momentum = 0.9f;
      fused.step.optimizer_states = 1;
      fused.step.hidden_group_bytes = group_bytes;
      set_master_format(fused, master);
      FinetuneOptions layer_by_layer = fused;
      layer_by_layer.step.hidden_group_bytes = 0;
      Finetuner a(f.q, scheme, fused), b(f.q, scheme, layer_by_layer);
      ASSERT_FALSE(fused_blocks(a.layers(), fused.step).empty());
      EXPECT_LE(a.plan().peak, b.plan().peak);
      if (text == "bias") {
        EXPECT_LT(a.plan().peak, b.plan().peak);
      }
      for (const Buffer& buf : a.plan().buffers) {  // no gradient of the hidden tensors
        const std::string name = "|" + buf.name + "|";
        EXPECT_TRUE(name.find("|" + e + ".out.grad|") == std::string::npos &&
                    name.find("|" + d + ".out.grad|") == std::string::npos)
            << buf.name;
      }
      expect_same_steps(a, b, f);
    }
  }
}

// A global average pool's backward folded into the 1x1 conv before it (update_plan.h's folded_pools)
// builds the conv's output gradient a row or a few columns at a time with the values the pool's backward
// wrote whole: the models after a few steps are equal to the last bit, whether the conv trains its bias,
// its weight rows, both, or is the first trained layer; and the plan holds no gradient of its output.
TEST(Finetune, FoldedPoolBackwardGivesTheUnfoldedStepBitForBit) {
  const Fixture& f = mobilenet();
  const std::vector<LayerSpec> layers = layer_specs(f.q);
  const auto pool =
      std::find_if(layers.begin(), layers.end(), [](const LayerSpec& l) { return l.global_pool; });
  ASSERT_NE(pool, layers.end());
  const int g = static_cast<int>(pool - layers.begin());
  const std::string conv = layers[static_cast<size_t>(g - 1)].name;
  ASSERT_TRUE(layers[static_cast<size_t>(g - 1)].pointwise);
  for (const std::string& text : {std::string("bias"), "bias:last=3;weight:" + conv + "=0.25",
                                  "weight:" + conv + "=1", "bias:all;weight:" + conv + "=0.125"}) {
    for (const MasterFormat master : {MasterFormat::f32, MasterFormat::int8}) {
      SCOPED_TRACE(text + " master " + master_format_name(master));
      const UpdateScheme scheme = parse_update_scheme(text, layers);
      FinetuneOptions folded;
      folded.lr = 0.5f;
      folded.momentum = 0.9f;
      folded.step.optimizer_states = 1;
      set_master_format(folded, master);
      FinetuneOptions whole = folded;
      whole.step.fold_pool_backward = false;
      Finetuner a(f.q, scheme, folded), b(f.q, scheme, whole);
      ASSERT_EQ(folded_pools(a.layers(), folded.step), std::vector<int>{g});
      EXPECT_TRUE(folded_pools(b.layers(), whole.step).empty());
      EXPECT_EQ(planned(a.plan(), conv + ".out.grad"), nullptr);
      EXPECT_NE(planned(b.plan(), conv + ".out.grad"), nullptr);
      EXPECT_LE(a.plan().peak, b.plan().peak);
      expect_same_steps(a, b, f);
    }
  }
}

TEST(Finetune, RefusesOptionsItDoesNotImplement) {
  const Fixture f = make_fixture("cnn", 8);
  const UpdateScheme scheme = bias_only_update(layer_specs(f.q));
  FinetuneOptions opt;
  opt.step.apply = GradientApply::kAfterBackward;
  EXPECT_THROW(Finetuner(f.q, scheme, opt), Error);
  opt = {};
  opt.step.optimizer_states = 1;
  EXPECT_THROW(Finetuner(f.q, scheme, opt), Error);
  opt = {};
  opt.lr = -1;
  EXPECT_THROW(Finetuner(f.q, scheme, opt), Error);
  opt = {};
  opt.momentum = 0.9f;  // without a planned velocity buffer
  EXPECT_THROW(Finetuner(f.q, scheme, opt), Error);
  opt.step.optimizer_states = 1;
  EXPECT_NO_THROW(Finetuner(f.q, scheme, opt));
  opt.momentum = 1.0f;
  EXPECT_THROW(Finetuner(f.q, scheme, opt), Error);
  opt.step.optimizer_states = 2;  // Adam's two moments: not implemented
  opt.momentum = 0.9f;
  EXPECT_THROW(Finetuner(f.q, scheme, opt), Error);
  opt = {};
  opt.master_format = MasterFormat::int16;  // without the plan's sizes for it
  EXPECT_THROW(Finetuner(f.q, scheme, opt), Error);
  opt.step.trained_weight_bytes = 2;  // still read through working copies
  EXPECT_THROW(Finetuner(f.q, scheme, opt), Error);
  set_master_format(opt, MasterFormat::int16);
  EXPECT_NO_THROW(Finetuner(f.q, scheme, opt));
  EXPECT_EQ(parse_master_format("int8"), MasterFormat::int8);
  EXPECT_THROW(parse_master_format("int4"), Error);
}

// A fixed-point master copy is planned at its 2 or 1 bytes per trained weight, and a conv or linear
// layer's kernels read its int8 plane in place: no working copies of its rows (a depthwise layer keeps
// its whole-weight one), nor a fused block's copy of its expansion's rows of a group. The arena's
// high-water mark equals the plan, which is below the f32 one.
TEST(Finetune, FixedPointMastersPlanTheirBytesAndNoWorkingRows) {
  const Fixture cnn = make_fixture("cnn", 3);
  for (const std::string model : {"cnn", "mobilenetv2"}) {
    const Fixture& f = model == "cnn" ? cnn : mobilenet();
    const std::vector<LayerSpec> layers = layer_specs(f.q);
    const std::string text = model == "cnn" ? "bias:all;weight:4=0.25,9=0.125"
                                            : "bias:last=12;weight:8.body.0=0.5,8.body.3=1,9.0=0.25";
    const UpdateScheme scheme = with_last_layer_trained(parse_update_scheme(text, layers), layers);
    FinetuneOptions f32;
    f32.lr = 0.05f;
    const Finetuner reference(f.q, scheme, f32);
    for (const MasterFormat master : {MasterFormat::int16, MasterFormat::int8}) {
      SCOPED_TRACE(model + " master " + master_format_name(master));
      FinetuneOptions opt = f32;
      set_master_format(opt, master);
      Finetuner ft(f.q, scheme, opt);
      EXPECT_LT(ft.plan().peak, reference.plan().peak);
      EXPECT_EQ(plan_finetune_step(f.q, scheme, opt.step).peak, ft.plan().peak);
      EXPECT_NO_THROW(validate(ft.plan()));
      int trained_layers = 0;
      for (size_t i = 0; i < ft.layers().size(); ++i) {
        const LayerSpec& l = ft.layers()[i];
        if (l.train.weight_ratio == 0) continue;
        ++trained_layers;
        const size_t rows = ft.trained_channels(static_cast<int>(i)).size();
        const size_t bytes =
            rows * (l.weight_elems / static_cast<size_t>(l.out_channels)) * static_cast<size_t>(master);
        const Buffer* master_copy = planned(ft.plan(), l.name + ".weight");
        ASSERT_NE(master_copy, nullptr) << l.name;
        EXPECT_EQ(master_copy->size, bytes) << l.name;
        const bool depthwise = l.kind == LayerKind::kDepthwiseConv;
        EXPECT_EQ(planned(ft.plan(), l.name + ".weight.working") != nullptr, depthwise) << l.name;
      }
      EXPECT_GE(trained_layers, 3);
      // A fused block's group buffer holds no copy of its expansion's trained rows (read in place).
      int smaller_groups = 0;
      for (const Buffer& b : ft.plan().buffers) {
        if (b.name.find(".hidden_grad_group") == std::string::npos) continue;
        const Buffer* with_f32 = planned(reference.plan(), b.name);
        ASSERT_NE(with_f32, nullptr) << b.name;
        EXPECT_LE(b.size, with_f32->size) << b.name;
        smaller_groups += b.size < with_f32->size;
      }
      EXPECT_EQ(smaller_groups, model == "cnn" ? 0 : 2);  // the blocks of 8.body.0 and 9.0
      for (int i = 0; i < 3; ++i) EXPECT_TRUE(std::isfinite(ft.step(image(f.images, i), i % 10).loss));
      EXPECT_EQ(ft.high_water(), ft.plan().peak);
    }
  }
}

}  // namespace
}  // namespace tern::ondevice
