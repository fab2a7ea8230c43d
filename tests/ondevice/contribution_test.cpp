// ondevice/contribution.h: every contribution is the probe's accuracy minus the head-alone baseline,
// recomputed here with probe_accuracy; parts over the budget are not probed; bias:last=k between the
// probed k is linear; and the search over the measured contributions picks a scheme that fits.
#include "ondevice/contribution.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "models/registry.h"
#include "ondevice/quantize.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace tern::ondevice {
namespace {

constexpr int kClasses = 3;
constexpr int64_t kPixels = 28 * 28;

// The cnn converted to int8 with a new 3-class head, and a task it can learn: noisy copies of three
// random prototypes, 24 images to train each probe on and 24 held out to score it.
struct Task {
  QuantizedModel q;
  std::vector<float> images;
  std::vector<int32_t> labels;
  ProbeData data;
};

std::unique_ptr<Task> make_task() {
  auto t = std::make_unique<Task>();
  auto net = make_model("cnn", ModelConfig{});
  Rng rng(11);
  Tensor calib = Tensor::empty({16, 1, 28, 28});
  for (int64_t i = 0; i < calib.numel(); ++i) calib.f32()[i] = rng.normal();
  net->train();
  for (int i = 0; i < 10; ++i) net->forward(calib.slice(0, 8));
  net->eval();
  t->q = quantize_model(*net, calib);
  replace_head(t->q, kClasses, HeadInit::zeros, 1);
  std::vector<float> protos(kClasses * kPixels);
  for (float& v : protos) v = rng.normal();
  const int n = 48;
  t->images.resize(static_cast<size_t>(n * kPixels));
  for (int i = 0; i < n; ++i) {
    t->labels.push_back(i % kClasses);
    for (int64_t p = 0; p < kPixels; ++p)
      t->images[static_cast<size_t>(i * kPixels + p)] =
          protos[static_cast<size_t>((i % kClasses) * kPixels + p)] + 0.8f * rng.normal();
  }
  t->data = ProbeData{
      t->images.data(), t->labels.data(), 24, t->images.data() + 24 * kPixels, t->labels.data() + 24, 24,
      kPixels};
  return t;
}

FinetuneOptions probe_options() {
  FinetuneOptions o;
  o.lr = 0.02f;
  return o;
}

TEST(Contribution, EachGainIsItsProbeMinusTheHeadAlone) {
  const auto t = make_task();
  const std::vector<LayerSpec> layers = layer_specs(t->q);
  ContributionOptions opt;
  opt.finetune = probe_options();
  opt.bias_probes = 2;
  int calls = 0, last_total = 0;
  const ContributionReport r = measure_contributions(t->q, t->data, opt, [&](int done, int total) {
    EXPECT_EQ(done, ++calls);
    last_total = total;
  });
  EXPECT_EQ(r.probes, calls);
  EXPECT_EQ(r.probes, last_total);
  EXPECT_EQ(r.skipped, 0);
  auto with_head = [&](UpdateScheme s) { return with_last_layer_trained(std::move(s), layers); };
  const float head = probe_accuracy(t->q, with_head(no_update(layers)), t->data, opt.finetune);
  EXPECT_EQ(r.head_accuracy, head);

  // cnn: conv, pool, conv, pool, fc, fc (the head). Three weights at four ratios, four biases.
  const Contributions& c = r.contributions;
  ASSERT_EQ(c.weight.size(), layers.size());
  EXPECT_EQ(r.probes, 1 + 3 * 4 + 2);
  for (size_t i : {0u, 2u, 4u}) {
    for (int ratio : {1, 4}) {
      UpdateScheme s = no_update(layers);
      s.layers[i].weight_ratio = kUpdateRatios[static_cast<size_t>(ratio)];
      EXPECT_EQ(c.weight[i][static_cast<size_t>(ratio)],
                probe_accuracy(t->q, with_head(s), t->data, opt.finetune) - head)
          << layers[i].name << " at ratio " << kUpdateRatios[static_cast<size_t>(ratio)];
    }
  }
  for (size_t i : {1u, 3u, 5u})  // no weight, or the head's (it always trains)
    for (float g : c.weight[i]) EXPECT_EQ(g, 0.0f) << layers[i].name;

  // bias_last: probed at k = 2 and 4 (the largest); k = 1 and 3 halfway.
  ASSERT_EQ(c.bias_last.size(), 5u);
  EXPECT_EQ(c.bias_last[0], 0.0f);
  auto bias_gain = [&](int k) {
    return probe_accuracy(t->q, with_head(parse_update_scheme("bias:last=" + std::to_string(k), layers)),
                          t->data, opt.finetune) -
           head;
  };
  EXPECT_EQ(c.bias_last[2], bias_gain(2));
  EXPECT_EQ(c.bias_last[4], bias_gain(4));
  EXPECT_FLOAT_EQ(c.bias_last[1], c.bias_last[2] / 2);
  EXPECT_FLOAT_EQ(c.bias_last[3], (c.bias_last[2] + c.bias_last[4]) / 2);
  // The task is learnable and training more than the head helps somewhere.
  EXPECT_GT(head, 1.0f / kClasses);
}

TEST(Contribution, PartsOverTheBudgetAreNotProbedAndTheSearchFits) {
  const auto t = make_task();
  const std::vector<LayerSpec> layers = layer_specs(t->q);
  auto peak = [&](const UpdateScheme& s) {
    return plan_finetune_step(t->q, with_last_layer_trained(s, layers), StepOptions{}).peak;
  };
  // A budget between the first conv's weight at 1/8 and all of it: the large ratios of the big layers
  // cannot fit.
  UpdateScheme small = no_update(layers), whole = no_update(layers);
  small.layers[0].weight_ratio = 0.125f;
  whole.layers[4].weight_ratio = 1.0f;
  ASSERT_LT(peak(small), peak(whole));
  ContributionOptions opt;
  opt.finetune = probe_options();
  opt.budget = peak(small);
  const ContributionReport r = measure_contributions(t->q, t->data, opt);
  EXPECT_GT(r.skipped, 0);
  for (size_t i = 0; i + 1 < layers.size(); ++i) {
    for (size_t ratio = 1; ratio < kUpdateRatios.size(); ++ratio) {
      UpdateScheme s = no_update(layers);
      if (layers[i].weight_elems == 0) continue;
      s.layers[i].weight_ratio = kUpdateRatios[ratio];
      if (peak(s) > opt.budget) {
        EXPECT_EQ(r.contributions.weight[i][ratio], 0.0f) << layers[i].name;
      }
    }
  }
  // Every weight ratio is probed or skipped; bias:last=k at each k up to the largest that fits (<= 8).
  const int max_k = static_cast<int>(r.contributions.bias_last.size()) - 1;
  EXPECT_EQ(r.probes + r.skipped, 1 + 3 * 4 + max_k);
  const SchemeCost cost = [&](const UpdateScheme& s) { return peak(s); };
  for (const SearchResult& found : {greedy_search(layers, r.contributions, opt.budget, cost),
                                    evolutionary_search(layers, r.contributions, opt.budget, cost)})
    EXPECT_LE(peak(found.scheme), opt.budget);
}

// The probes are independent runs: on three threads they give the same contributions, exactly, and
// the progress calls still count 1..total one at a time.
TEST(Contribution, ThreadsDoNotChangeTheContributions) {
  const auto t = make_task();
  ContributionOptions opt;
  opt.finetune = probe_options();
  opt.bias_probes = 2;
  const ContributionReport one = measure_contributions(t->q, t->data, opt);
  opt.threads = 3;
  int calls = 0;
  const ContributionReport three = measure_contributions(t->q, t->data, opt, [&](int done, int total) {
    EXPECT_EQ(done, ++calls);
    EXPECT_EQ(total, one.probes);
  });
  EXPECT_EQ(calls, one.probes);
  EXPECT_EQ(three.probes, one.probes);
  EXPECT_EQ(three.head_accuracy, one.head_accuracy);
  EXPECT_EQ(three.contributions.weight, one.contributions.weight);
  EXPECT_EQ(three.contributions.bias_last, one.contributions.bias_last);
  opt.threads = 0;
  EXPECT_THROW(measure_contributions(t->q, t->data, opt), Error);
}

TEST(Contribution, RefusesEmptyDataAndAHeadOverTheBudget) {
  const auto t = make_task();
  ContributionOptions opt;
  ProbeData empty = t->data;
  empty.validation_count = 0;
  EXPECT_THROW(measure_contributions(t->q, empty, opt), Error);
  opt.budget = 64;  // bytes: not even the head's step
  EXPECT_THROW(measure_contributions(t->q, t->data, opt), Error);
}

}  // namespace
}  // namespace tern::ondevice
