// tern_ondevice_bench: the fp32 reference of issue 7's transfer table. Fine-tunes a tern-train checkpoint
// in f32 (every layer, a new head for the new classes, SGD with momentum) with the trainer's own modules,
// and reports its test accuracy, steps/s and peak memory two ways: the memory planner's fp32 plan of one
// full-update step at batch 1 (4-byte activations and gradients, a momentum buffer per weight, the update
// after backward: the same engine as tern-finetune's int8 plans), and the process's max-RSS growth during
// training (allocator and batch included). bench/finetune_transfer.py runs it beside tern-finetune.
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "models/registry.h"
#include "ondevice/finetune.h"
#include "ondevice/quantize.h"
#include "ondevice/update_plan.h"
#include "optim/lr_schedule.h"
#include "optim/sgd.h"
#include "runtime/data/dataset.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/loss.h"
#include "runtime/rng.h"
#include "runtime/train/checkpoint.h"

namespace {

using namespace tern;

void declare(Flags& f) {
  f.add_string("checkpoint", "", "tern-train checkpoint: a file, or a --checkpoint-dir (its latest)");
  f.add_string("model", "cnn", "the checkpoint's model name in the zoo");
  f.add_float("width-mult", 1.0, "channel multiplier the model was trained with (mobilenetv2, mcunet)");
  f.add_string("dataset", "fashion-mnist", "dataset: fashion-mnist|synthetic");
  f.add_string("data-dir", kDefaultFashionMnistDir, "directory with the dataset's IDX files");
  f.add_int("class-lo", 5, "first new class");
  f.add_int("class-hi", 9, "last new class (a new head with hi-lo+1 outputs)");
  f.add_int("epochs", 1, "passes over the new classes' training images");
  f.add_int("batch-size", 32, "images per fp32 step");
  f.add_float("lr", 0.01, "SGD learning rate");
  f.add_float("momentum", 0.9, "SGD momentum");
  f.add_string("lr-schedule", "cosine",
               "constant | cosine[:min_lr=X] | step:size=N[,gamma=G] (any may add ,warmup=N)");
  f.add_int("limit-train", 0, "use only the first N training images of the new classes (0: all)");
  f.add_int("limit-test", 0, "evaluate on the first N test images of the new classes (0: all)");
  f.add_int("seed", 42, "seed for the new head and the shuffling");
  f.add_int("threads", 1, "compute threads (oneDNN/OpenMP)");
  f.add_bool("frozen-bn", false,
             "train with BatchNorm in eval mode (its pretrained statistics, as the int8 graph's folded ones)");
  f.add_string("metrics", "", "write one JSON line with the results to this file");
}

Dataset pick(const Dataset& d, int lo, int hi, int64_t limit) {
  const int64_t per = d.size() > 0 ? d.images.numel() / d.size() : 0;
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < d.size() && (limit == 0 || static_cast<int64_t>(keep.size()) < limit); ++i) {
    const int label = d.labels[static_cast<size_t>(i)];
    if (label >= lo && label <= hi) keep.push_back(i);
  }
  Dataset out;
  out.name = d.name;
  out.num_classes = hi - lo + 1;
  Shape shape = d.images.shape();
  shape[0] = static_cast<int64_t>(keep.size());
  out.images = Tensor::empty(shape);
  for (size_t j = 0; j < keep.size(); ++j) {
    std::copy_n(d.images.f32() + keep[j] * per, per, out.images.f32() + static_cast<int64_t>(j) * per);
    out.labels.push_back(d.labels[static_cast<size_t>(keep[j])] - lo);
  }
  return out;
}

// A batch of rows `idx` of d.
Tensor gather(const Dataset& d, const std::vector<int64_t>& idx, std::vector<int32_t>& labels) {
  const int64_t per = d.images.numel() / d.size();
  Shape shape = d.images.shape();
  shape[0] = static_cast<int64_t>(idx.size());
  Tensor x = Tensor::empty(shape);
  labels.clear();
  for (size_t j = 0; j < idx.size(); ++j) {
    std::copy_n(d.images.f32() + idx[j] * per, per, x.f32() + static_cast<int64_t>(j) * per);
    labels.push_back(d.labels[static_cast<size_t>(idx[j])]);
  }
  return x;
}

double evaluate(Sequential& net, const Dataset& test, bool frozen_bn) {
  net.eval();
  int64_t correct = 0;
  std::vector<int32_t> labels;
  for (int64_t b = 0; b < test.size(); b += 500) {
    std::vector<int64_t> idx(static_cast<size_t>(std::min<int64_t>(500, test.size() - b)));
    std::iota(idx.begin(), idx.end(), b);
    const Tensor x = gather(test, idx, labels);
    correct += softmax_cross_entropy(net.forward(x), labels, nullptr).correct;
  }
  if (!frozen_bn) net.train();
  return static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(1, test.size()));
}

size_t max_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<size_t>(u.ru_maxrss) * 1024;
}

int run(const Flags& f) {
  const int lo = static_cast<int>(f.get_int("class-lo")), hi = static_cast<int>(f.get_int("class-hi"));
  const int64_t epochs = f.get_int("epochs"), batch = f.get_int("batch-size");
  if (epochs < 1 || batch < 1) throw UsageError("--epochs and --batch-size must be at least 1");
  if (f.get_string("checkpoint").empty()) throw UsageError("--checkpoint is required (a tern-train checkpoint)");
  if (f.get_int("threads") < 1) throw UsageError("--threads must be at least 1");
  omp_set_num_threads(static_cast<int>(f.get_int("threads")));
  const std::string ckpt_path = f.get_string("checkpoint"), model_name = f.get_string("model");
  const CheckpointData ckpt = load_checkpoint_file_or_dir(ckpt_path);
  const Dataset full_train = load_dataset(f.get_string("dataset"), f.get_string("data-dir"), Split::train);
  const Dataset full_test = load_dataset(f.get_string("dataset"), f.get_string("data-dir"), Split::test);
  if (lo < 0 || hi < lo || hi >= full_train.num_classes) throw UsageError("--class-lo/--class-hi out of range");
  const Dataset train = pick(full_train, lo, hi, f.get_int("limit-train"));
  const Dataset test = pick(full_test, lo, hi, f.get_int("limit-test"));
  if (train.size() == 0 || test.size() == 0) throw Error("no images of the new classes");

  const Shape sample = train.sample_shape();
  ModelConfig mc;
  mc.in_channels = sample.at(0);
  mc.height = sample.at(1);
  mc.width = sample.at(2);
  mc.num_classes = full_train.num_classes;
  mc.width_mult = static_cast<float>(f.get_float("width-mult"));
  auto net = make_model(model_name, mc);
  restore_model(*net, ckpt, model_name);

  // The fp32 plan of one full-update step at batch 1, on the same layer chain tern-finetune plans.
  ondevice::QuantizedModel q = ondevice::quantize_model(*net, train.images.slice(0, std::min<int64_t>(64, train.size())));
  ondevice::replace_head(q, hi - lo + 1, ondevice::HeadInit::zeros, 0);
  const std::vector<ondevice::LayerSpec> layers = ondevice::layer_specs(q);
  ondevice::StepOptions fp32;
  fp32.activation_bytes = 4;
  fp32.trained_weight_bytes = 4;
  fp32.trained_bias_bytes = 4;
  fp32.working_weight_bytes = 0;  // fp32 kernels read the trained tensors themselves
  fp32.working_bias_bytes = 0;
  fp32.optimizer_states = f.get_float("momentum") > 0 ? 1 : 0;
  fp32.apply = ondevice::GradientApply::kAfterBackward;
  fp32.in_place_depthwise = false;
  fp32.in_place_depthwise_backward = false;
  fp32.hidden_group_bytes = 0;  // layer by layer, as a framework's autograd runs it
  fp32.fold_pool_backward = false;
  const size_t fp32_plan_peak =
      ondevice::plan_training_step(ondevice::with_update(layers, ondevice::full_update(layers)), fp32).peak;

  // A new head: the last module is the classifier.
  Sequential& seq = *net;
  const int64_t features = seq[seq.size() - 1].params().at(0)->value.shape().at(1);
  seq.take(seq.size() - 1, seq.size());
  Rng init(static_cast<uint64_t>(f.get_int("seed")), /*stream=*/13);
  seq.emplace<Linear>(features, hi - lo + 1, init);
  const bool frozen_bn = f.get_bool("frozen-bn");
  if (frozen_bn)
    net->eval();
  else
    net->train();
  SgdOptions so;
  so.lr = static_cast<float>(f.get_float("lr"));
  so.momentum = static_cast<float>(f.get_float("momentum"));
  Sgd sgd(net->params(), so);
  const int64_t steps_per_epoch = (train.size() + batch - 1) / batch;
  std::unique_ptr<LrSchedule> schedule;
  try {
    schedule = make_lr_schedule(f.get_string("lr-schedule"), so.lr, epochs * steps_per_epoch);
  } catch (const Error& e) {
    throw UsageError(std::string("--lr-schedule: ") + e.what());
  }

  const double initial = evaluate(*net, test, frozen_bn);
  const size_t rss_before = max_rss_bytes();
  std::vector<int64_t> order(static_cast<size_t>(train.size()));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(static_cast<uint64_t>(f.get_int("seed")), /*stream=*/11);
  std::vector<int32_t> labels;
  Tensor dlogits;
  int64_t steps = 0;
  double seconds = 0, accuracy = initial;
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    rng.shuffle(order);
    const auto start = std::chrono::steady_clock::now();
    for (size_t b = 0; b < order.size(); b += static_cast<size_t>(batch)) {
      const std::vector<int64_t> idx(order.begin() + static_cast<std::ptrdiff_t>(b),
                                     order.begin() + static_cast<std::ptrdiff_t>(
                                                         std::min(order.size(), b + static_cast<size_t>(batch))));
      const Tensor x = gather(train, idx, labels);
      net->zero_grad();
      softmax_cross_entropy(net->forward(x), labels, &dlogits);
      net->backward(dlogits);
      sgd.set_lr(schedule->lr_at(steps));
      sgd.step();
      ++steps;
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    accuracy = evaluate(*net, test, frozen_bn);
    std::printf("epoch %lld: test accuracy %.2f%%\n", static_cast<long long>(epoch + 1), 100 * accuracy);
  }
  const size_t rss_growth = max_rss_bytes() - rss_before;
  const double steps_per_s = seconds > 0 ? static_cast<double>(steps) / seconds : 0.0;
  std::printf("fp32 full fine-tuning of %s: test accuracy %.2f%% (before %.2f%%), batch %lld, lr %s, "
              "%.1f steps/s\n",
              model_name.c_str(), 100 * accuracy, 100 * initial, static_cast<long long>(batch),
              schedule->describe().c_str(), steps_per_s);
  std::printf("memory: fp32 plan of a batch-1 full-update step %zu bytes; max RSS growth while training %zu bytes\n",
              fp32_plan_peak, rss_growth);
  JsonlWriter metrics;
  if (!f.get_string("metrics").empty()) metrics.open(f.get_string("metrics"));
  JsonObject line;
  line.add("event", "final")
      .add("model", model_name)
      .add("scheme", "fp32 full")
      .add("initial_test_accuracy", initial)
      .add("test_accuracy", accuracy)
      .add("fp32_plan_peak_bytes", static_cast<int64_t>(fp32_plan_peak))
      .add("max_rss_growth_bytes", static_cast<int64_t>(rss_growth))
      .add("batch_size", batch)
      .add("epochs", epochs)
      .add("lr", static_cast<double>(so.lr))
      .add("lr_schedule", schedule->describe())
      .add("momentum", static_cast<double>(so.momentum))
      .add("frozen_bn", frozen_bn)
      .add("steps_per_s", steps_per_s)
      .add("samples_per_s", steps_per_s * static_cast<double>(batch));
  metrics.write(line);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tern::Flags flags("tern_ondevice_bench", "fp32 full fine-tuning of a tern-train checkpoint on new classes.");
  declare(flags);
  return tern::run_program(flags, argc, argv, [&] { return run(flags); });
}
