// tern-finetune: on-device-style transfer learning (issue 7). Takes a checkpoint of tern-train, converts the
// model to int8, gives it a new head for new classes, plans one training step's memory under a budget and
// fine-tunes at batch 1 with the code paths the device runs, printing accuracy and memory.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "models/registry.h"
#include "ondevice/contribution.h"
#include "ondevice/finetune.h"
#include "ondevice/model_format.h"
#include "ondevice/quantize.h"
#include "optim/lr_schedule.h"
#include "runtime/data/dataset.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#include "runtime/io/progress.h"
#include "runtime/rng.h"
#include "runtime/train/checkpoint.h"

namespace {

using namespace tern;
using namespace tern::ondevice;

void declare(Flags& f) {
  f.add_string("checkpoint", "", "tern-train checkpoint: a file, or a --checkpoint-dir (its latest)");
  f.add_string("model", "cnn", "the checkpoint's model name in the zoo");
  f.add_float("width-mult", 1.0, "channel multiplier the model was trained with (mobilenetv2, mcunet)");
  f.add_string("dataset", "fashion-mnist", "dataset: fashion-mnist|synthetic");
  f.add_string("data-dir", kDefaultFashionMnistDir, "directory with the dataset's IDX files");
  f.add_string("classes", "5-9", "fine-tune on classes A-B (a new head with B-A+1 outputs)");
  f.add_string("update", "bias",
               "update scheme: full | bias | last=K | sections like bias:last=12;weight:conv21=1,conv36=0.125 "
               "(the new head always trains) | auto[:greedy|:evolution] (measure each part's contribution, "
               "then search for the most within --memory-budget)");
  f.add_string("qas", "on", "quantization-aware scaling of the gradients: on|off");
  f.add_string("memory-budget", "256KB", "refuse a step whose arena exceeds this (e.g. 256KB, 1MB; 0: none)");
  f.add_string(
      "hidden-group", "16KB",
      "f32 hidden gradient an inverted-residual block's backward holds at once, a group of hidden "
      "channels at a time (0: layer by layer, each hidden gradient whole; the results are the same)");
  f.add_int("epochs", 1, "passes over the new classes' training images");
  f.add_float("lr", 0.01, "SGD learning rate (with QAS: as for fp32 SGD at batch 1)");
  f.add_string("lr-schedule", "cosine",
               "constant | cosine[:min_lr=X] (to min_lr over the run) | step:size=N[,gamma=G]; any may add "
               ",warmup=N[,start_factor=F]");
  f.add_float("momentum", 0, "SGD momentum; above 0 the arena holds a velocity per trained value");
  f.add_string(
      "master", "f32",
      "how trained weights are kept between steps: f32 (4 bytes each, plus an int8 working copy while "
      "an op reads them) | int16 (int8 + 8 fraction bits, stochastic rounding: 2 bytes) | int8 (1 byte)");
  f.add_string("calibration", "minmax", "int8 activation ranges: minmax|mse");
  f.add_int("calibration-images", 256, "training images the int8 ranges are calibrated on");
  f.add_string("head-init", "zeros", "the new head's weights: zeros|random");
  f.add_int("limit-train", 0, "use only the first N training images of the new classes (0: all)");
  f.add_int("limit-test", 0, "evaluate on the first N test images of the new classes (0: all)");
  f.add_int("seed", 42, "seed for the head's initialisation and the shuffling");
  f.add_int("probe-images", 500,
            "--update auto: training images each contribution probe fine-tunes on, and at most as many held-out "
            "training images it is scored on");
  f.add_int("threads", 1, "--update auto: probes fine-tuned at once, one per thread (the result does not depend on it)");
  f.add_string("output", "", "write the fine-tuned int8 model here (the flat on-device format)");
  f.add_bool("show-plan", true, "print the per-layer memory table");
  f.add_string("metrics", "", "write JSON lines (one per epoch, one final) to this file");
}

struct ClassRange {
  int lo = 0, hi = 0;
  int count() const { return hi - lo + 1; }
};

ClassRange parse_classes(const std::string& text, int num_classes) {
  ClassRange r{-1, -1};
  char end = 0;
  if (std::sscanf(text.c_str(), "%d-%d%c", &r.lo, &r.hi, &end) != 2 || r.lo < 0 || r.hi < r.lo ||
      r.hi >= num_classes)
    throw UsageError(detail::concat("--classes '", text, "': expected A-B with 0 <= A <= B < ", num_classes));
  return r;
}

// The samples of classes lo..hi, relabelled 0..hi-lo, at most `limit` of them (0: all).
Dataset select_classes(const Dataset& d, ClassRange r, int64_t limit) {
  const int64_t per = d.size() > 0 ? d.images.numel() / d.size() : 0;
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < d.size() && (limit == 0 || static_cast<int64_t>(keep.size()) < limit); ++i)
    if (d.labels[static_cast<size_t>(i)] >= r.lo && d.labels[static_cast<size_t>(i)] <= r.hi) keep.push_back(i);
  Dataset out;
  out.name = d.name;
  out.num_classes = r.count();
  Shape shape = d.images.shape();
  shape[0] = static_cast<int64_t>(keep.size());
  out.images = Tensor::empty(shape);
  for (size_t j = 0; j < keep.size(); ++j) {
    std::copy_n(d.images.f32() + keep[j] * per, per, out.images.f32() + static_cast<int64_t>(j) * per);
    out.labels.push_back(d.labels[static_cast<size_t>(keep[j])] - r.lo);
  }
  return out;
}

// --update auto[:greedy|:evolution]: each part's contribution (contribution.h), fine-tuned on the first
// training images and scored on the last ones (never the test set), then the search under the budget.
UpdateScheme search_scheme(const std::string& spec, const QuantizedModel& q,
                           const std::vector<LayerSpec>& layers, const Dataset& train,
                           const FinetuneOptions& opt, size_t budget, int64_t probe_images, int threads) {
  const std::string method = spec == "auto" ? "greedy" : spec.substr(5);
  if (method != "greedy" && method != "evolution")
    throw UsageError("--update '" + spec + "': expected auto, auto:greedy or auto:evolution");
  if (budget == 0) throw UsageError("--update auto searches within --memory-budget: give one (e.g. 256KB)");
  if (probe_images < 1) throw UsageError("--probe-images must be at least 1");
  const int64_t held_out = std::min(probe_images, train.size() / 5);
  const int64_t fit = std::min(probe_images, train.size() - held_out);
  if (held_out < 1)
    throw Error(detail::concat("--update auto: ", train.size(), " training images are too few to hold some out"));
  const int64_t per = train.images.numel() / train.size();
  ProbeData data;
  data.train_images = train.images.f32();
  data.train_labels = train.labels.data();
  data.train_count = fit;
  data.validation_images = train.images.f32() + (train.size() - held_out) * per;
  data.validation_labels = train.labels.data() + (train.size() - held_out);
  data.validation_count = held_out;
  data.image_elems = per;
  ContributionOptions copt;
  copt.finetune = opt;
  copt.budget = budget;
  copt.threads = threads;
  std::printf("update search: measuring each part's contribution (%lld training images per probe, scored on "
              "%lld held-out ones; %d at a time)\n",
              static_cast<long long>(fit), static_cast<long long>(held_out), threads);
  std::unique_ptr<ProgressBar> bar;
  const ContributionReport report = measure_contributions(q, data, copt, [&](int done, int total) {
    if (!bar) bar = std::make_unique<ProgressBar>("contributions", total);
    bar->update(done);
  });
  if (bar) bar->finish(detail::concat(report.probes, " probes"));
  const SchemeCost cost = step_cost_with_head(q, opt.step);
  const SearchResult found = method == "greedy"
                                 ? greedy_search(layers, report.contributions, budget, cost)
                                 : evolutionary_search(layers, report.contributions, budget, cost);
  const UpdateScheme scheme = with_last_layer_trained(found.scheme, layers);
  std::printf("update search (%s): %s; %d probes (%d parts over the budget not probed), head alone %.2f%%, "
              "summed gains of its parts %+.2f points, planned peak %s\n",
              method.c_str(), describe(scheme, layers).c_str(), report.probes, report.skipped,
              100 * report.head_accuracy, 100 * found.contribution, format_bytes(cost(found.scheme)).c_str());
  return scheme;
}

double accuracy(const Finetuner& ft, const Dataset& test) {
  const int64_t per = test.images.numel() / std::max<int64_t>(1, test.size());
  int64_t correct = 0;
  for (int64_t i = 0; i < test.size(); ++i)
    correct += ft.predict(test.images.f32() + i * per) == test.labels[static_cast<size_t>(i)];
  return test.size() > 0 ? static_cast<double>(correct) / static_cast<double>(test.size()) : 0.0;
}

int run(const Flags& f) {
  const int64_t epochs = f.get_int("epochs");
  if (epochs < 1) throw UsageError("--epochs must be at least 1");
  if (f.get_float("lr") <= 0) throw UsageError("--lr must be positive");
  const double momentum = f.get_float("momentum");
  if (!(momentum >= 0 && momentum < 1))
    throw UsageError(detail::concat("--momentum must be in [0, 1), got ", momentum));
  if (f.get_int("calibration-images") < 1) throw UsageError("--calibration-images must be at least 1");
  if (f.get_int("threads") < 1) throw UsageError("--threads must be at least 1");
  if (f.get_int("limit-train") < 0 || f.get_int("limit-test") < 0)
    throw UsageError("--limit-train and --limit-test must be >= 0");
  const std::string qas_text = f.get_string("qas"), head_text = f.get_string("head-init");
  if (qas_text != "on" && qas_text != "off") throw UsageError("--qas must be on or off, got '" + qas_text + "'");
  if (head_text != "zeros" && head_text != "random")
    throw UsageError("--head-init must be zeros or random, got '" + head_text + "'");
  if (f.get_string("checkpoint").empty()) throw UsageError("--checkpoint is required (a tern-train checkpoint)");
  size_t budget = 0, hidden_group = 0;
  try {
    budget = parse_bytes(f.get_string("memory-budget"));
  } catch (const Error& e) {
    throw UsageError(std::string("--memory-budget: ") + e.what());
  }
  try {
    hidden_group = parse_bytes(f.get_string("hidden-group"));
  } catch (const Error& e) {
    throw UsageError(std::string("--hidden-group: ") + e.what());
  }
  MasterFormat master = MasterFormat::f32;
  try {
    master = parse_master_format(f.get_string("master"));
  } catch (const Error& e) {
    throw UsageError(std::string("--master: ") + e.what());
  }
  Calibration calibration;
  try {
    calibration = parse_calibration(f.get_string("calibration"));
  } catch (const Error& e) {
    throw UsageError(std::string("--calibration: ") + e.what());
  }

  // The pretrained f32 model.
  const std::string ckpt_path = f.get_string("checkpoint"), model_name = f.get_string("model");
  const CheckpointData ckpt = load_checkpoint_file_or_dir(ckpt_path);
  const std::string dataset = f.get_string("dataset"), dir = f.get_string("data-dir");
  const Dataset full_train = load_dataset(dataset, dir, Split::train);
  const Dataset full_test = load_dataset(dataset, dir, Split::test);
  const ClassRange classes = parse_classes(f.get_string("classes"), full_train.num_classes);
  const Dataset train = select_classes(full_train, classes, f.get_int("limit-train"));
  const Dataset test = select_classes(full_test, classes, f.get_int("limit-test"));
  if (train.size() == 0 || test.size() == 0) throw Error("no images of classes " + f.get_string("classes"));

  const Shape sample = train.sample_shape();
  ModelConfig mc;
  mc.in_channels = sample.at(0);
  mc.height = sample.at(1);
  mc.width = sample.at(2);
  mc.num_classes = full_train.num_classes;
  mc.width_mult = static_cast<float>(f.get_float("width-mult"));
  auto net = make_model(model_name, mc);
  restore_model(*net, ckpt, model_name);

  // int8 conversion, calibrated on the new task's images, and the new head.
  const int64_t n_calib = std::min<int64_t>(f.get_int("calibration-images"), train.size());
  QuantizeOptions qopt;
  qopt.calibration = calibration;
  QuantizedModel q = quantize_model(*net, train.images.slice(0, n_calib), qopt);
  const uint64_t seed = static_cast<uint64_t>(f.get_int("seed"));
  replace_head(q, classes.count(), head_text == "random" ? HeadInit::random : HeadInit::zeros, seed);
  const size_t flash_bytes = encode_model(q).size();

  const std::vector<LayerSpec> layers = layer_specs(q);
  FinetuneOptions opt;
  opt.lr = static_cast<float>(f.get_float("lr"));
  opt.qas = qas_text == "on";
  opt.momentum = static_cast<float>(momentum);
  opt.step.optimizer_states = momentum > 0 ? 1 : 0;
  opt.step.hidden_group_bytes = hidden_group;
  set_master_format(opt, master);
  const std::string update = f.get_string("update");
  const UpdateScheme scheme =
      update.rfind("auto", 0) == 0
          ? search_scheme(update, q, layers, train, opt, budget, f.get_int("probe-images"),
                          static_cast<int>(f.get_int("threads")))
          : with_last_layer_trained(parse_update_scheme(update, layers), layers);
  std::unique_ptr<LrSchedule> schedule;
  try {
    schedule = make_lr_schedule(f.get_string("lr-schedule"), opt.lr, epochs * train.size());
  } catch (const Error& e) {
    throw UsageError(std::string("--lr-schedule: ") + e.what());
  }
  const MemoryPlan plan = plan_finetune_step(q, scheme, opt.step);

  std::printf("tern-finetune: %s from %s, int8 (%s calibration on %lld images), classes %d-%d as a new head of %d\n",
              model_name.c_str(), ckpt_path.c_str(), calibration_name(calibration), static_cast<long long>(n_calib),
              classes.lo, classes.hi, classes.count());
  std::printf("update: %s, QAS %s, lr %s, momentum %g, %s master; %lld train / %lld test images\n",
              describe(scheme, layers).c_str(), qas_text.c_str(), schedule->describe().c_str(), opt.momentum,
              master_format_name(master), static_cast<long long>(train.size()),
              static_cast<long long>(test.size()));
  if (f.get_bool("show-plan")) std::printf("%s", format_memory_table(plan).c_str());
  std::printf("memory: planned peak %s (%zu bytes), budget %s, flash %s (%zu bytes)\n", format_bytes(plan.peak).c_str(),
              plan.peak, budget ? format_bytes(budget).c_str() : "none", format_bytes(flash_bytes).c_str(),
              flash_bytes);
  std::fflush(stdout);
  if (budget > 0) plan.require_fits(budget);

  Finetuner ft(std::move(q), scheme, opt);
  JsonlWriter metrics;
  if (!f.get_string("metrics").empty()) metrics.open(f.get_string("metrics"));
  const double initial_accuracy = accuracy(ft, test);
  std::printf("before fine-tuning: test accuracy %.2f%%\n", 100 * initial_accuracy);

  const int64_t per = train.images.numel() / train.size();
  std::vector<int64_t> order(static_cast<size_t>(train.size()));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed, /*stream=*/11);
  double train_seconds = 0, test_accuracy = initial_accuracy;
  int64_t steps = 0;
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    rng.shuffle(order);
    ProgressBar bar(detail::concat("epoch ", epoch + 1, "/", epochs), train.size());
    double loss_sum = 0;
    int64_t correct = 0;
    const auto start = std::chrono::steady_clock::now();
    for (size_t j = 0; j < order.size(); ++j) {
      const int64_t i = order[j];
      const int label = train.labels[static_cast<size_t>(i)];
      ft.set_lr(schedule->lr_at(steps));
      const StepResult r = ft.step(train.images.f32() + i * per, label);
      loss_sum += r.loss;
      correct += r.predicted == label;
      ++steps;
      if ((j & 255) == 0) bar.update(static_cast<int64_t>(j + 1), detail::concat("loss ", loss_sum / (j + 1)));
    }
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double n = static_cast<double>(train.size());
    test_accuracy = accuracy(ft, test);
    bar.finish(detail::concat("train loss ", loss_sum / n, ", test accuracy ", 100 * test_accuracy, "%"));
    std::printf("epoch %lld: train loss %.4f, train accuracy %.2f%%, test accuracy %.2f%%\n",
                static_cast<long long>(epoch + 1), loss_sum / n, 100 * correct / n, 100 * test_accuracy);
    std::fflush(stdout);
    JsonObject line;
    line.add("event", "epoch")
        .add("epoch", epoch + 1)
        .add("train_loss", loss_sum / n)
        .add("train_accuracy", correct / n)
        .add("test_accuracy", test_accuracy);
    metrics.write(line);
  }
  const double steps_per_s = train_seconds > 0 ? static_cast<double>(steps) / train_seconds : 0.0;
  std::printf("test accuracy: %.2f%% (before: %.2f%%), %.0f steps/s\n", 100 * test_accuracy, 100 * initial_accuracy,
              steps_per_s);
  std::printf("memory: planned peak %zu bytes, measured arena high-water %zu bytes%s, flash %zu bytes\n", plan.peak,
              ft.high_water(), ft.high_water() == plan.peak ? " (equal)" : " (DIFFERENT)", flash_bytes);
  if (!f.get_string("output").empty()) save_model(f.get_string("output"), ft.model());

  JsonObject final_line;
  final_line.add("event", "final")
      .add("model", model_name)
      .add("classes", f.get_string("classes"))
      .add("update", describe(scheme, layers))
      .add("update_requested", update)
      .add("qas", opt.qas)
      .add("epochs", epochs)
      .add("lr", opt.lr)
      .add("lr_schedule", schedule->describe())
      .add("momentum", static_cast<double>(opt.momentum))
      .add("master", master_format_name(master))
      .add("initial_test_accuracy", initial_accuracy)
      .add("test_accuracy", test_accuracy)
      .add("peak_memory_bytes", static_cast<int64_t>(ft.high_water()))
      .add("planned_peak_bytes", static_cast<int64_t>(plan.peak))
      .add("flash_bytes", static_cast<int64_t>(flash_bytes))
      .add("memory_budget_bytes", static_cast<int64_t>(budget))
      .add("steps_per_s", steps_per_s)
      .add("config", f.echo());
  metrics.write(final_line);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tern::Flags flags("tern-finetune",
                    "Convert a tern-train checkpoint to int8 and fine-tune it on new classes as a 256KB device would.");
  declare(flags);
  return tern::run_program(flags, argc, argv, [&] { return run(flags); });
}
