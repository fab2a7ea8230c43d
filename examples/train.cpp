// tern-train: trains a model from the zoo on a dataset and reports test accuracy per epoch.
// The program a new user runs first (`make demo`); later it grows data-parallel flags.
#include <omp.h>

#include <cstdio>
#include <memory>
#include <string>

#include "models/registry.h"
#include "optim/factory.h"
#include "optim/lr_schedule.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/dataset.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#include "runtime/io/progress.h"
#include "runtime/train/trainer.h"

namespace {

using namespace tern;

void declare(Flags& f) {
  std::string models;
  for (const auto& n : model_names()) models += (models.empty() ? "" : "|") + n;
  f.add_string("model", "cnn", "model: " + models);
  f.add_string("dataset", "fashion-mnist", "dataset: fashion-mnist|synthetic");
  f.add_string("data-dir", kDefaultFashionMnistDir, "directory with the dataset's IDX files");
  f.add_int("epochs", 3, "passes over the training set");
  f.add_int("batch-size", 64, "samples per step");
  f.add_int("eval-batch-size", 500, "samples per evaluation batch");
  f.add_float("lr", 0.05, "learning rate (peak, when a schedule is used)");
  f.add_string("lr-schedule", "cosine", "constant | step:size=N,gamma=G | cosine[:min_lr=X] (add ,warmup=N)");
  f.add_string("optimizer", "sgd", "sgd|adam|adamw");
  f.add_float("momentum", 0.9, "SGD momentum");
  f.add_bool("nesterov", false, "Nesterov momentum (SGD)");
  f.add_float("weight-decay", 5e-4, "weight decay (not applied to biases and norm scales)");
  f.add_float("clip-grad-norm", 0, "clip the global gradient norm to this (0: off)");
  f.add_float("width-mult", 1.0, "channel multiplier for resnet20 and mobilenetv2");
  f.add_int("limit-train", 0, "use only the first N training samples (0: all)");
  f.add_int("seed", 42, "seed for initialisation and shuffling");
  f.add_int("threads", 1, "compute threads (oneDNN/OpenMP)");
  f.add_string("metrics", "", "write JSON lines (one per epoch, one final) to this file");
}

int run(const Flags& f) {
  const int64_t epochs = f.get_int("epochs"), batch = f.get_int("batch-size");
  const int64_t threads = f.get_int("threads"), eval_batch = f.get_int("eval-batch-size");
  if (epochs < 1) throw UsageError("--epochs must be at least 1");
  if (batch < 1 || eval_batch < 1) throw UsageError("--batch-size and --eval-batch-size must be at least 1");
  if (threads < 1) throw UsageError("--threads must be at least 1");
  if (f.get_float("lr") <= 0) throw UsageError("--lr must be positive");
  if (f.get_int("limit-train") < 0) throw UsageError("--limit-train must be >= 0");
  omp_set_num_threads(static_cast<int>(threads));

  const std::string dataset = f.get_string("dataset"), dir = f.get_string("data-dir");
  Dataset train = load_dataset(dataset, dir, Split::train);
  const Dataset test = load_dataset(dataset, dir, Split::test);
  if (const int64_t limit = f.get_int("limit-train"); limit > 0 && limit < train.size()) {
    train.images = train.images.slice(0, limit);
    train.labels.resize(static_cast<size_t>(limit));
  }

  const Shape sample = train.sample_shape();
  ModelConfig mc;
  if (sample.size() == 3) {
    mc.in_channels = sample[0];
    mc.height = sample[1];
    mc.width = sample[2];
  } else {
    throw Error("dataset '" + dataset + "' has samples of shape " + shape_str(sample) +
                "; the zoo's models take [C, H, W] images");
  }
  mc.num_classes = train.num_classes;
  mc.width_mult = static_cast<float>(f.get_float("width-mult"));
  mc.seed = static_cast<uint64_t>(f.get_int("seed"));
  auto model = make_model(f.get_string("model"), mc);

  DataLoader loader(train, batch, /*shuffle=*/true, mc.seed);
  const int64_t total_steps = loader.num_batches() * epochs;
  const auto lr = static_cast<float>(f.get_float("lr"));
  auto optimizer = make_optimizer(f.get_string("optimizer"), model->params(), lr,
                                  static_cast<float>(f.get_float("momentum")),
                                  static_cast<float>(f.get_float("weight-decay")), f.get_bool("nesterov"));
  auto schedule = make_lr_schedule(f.get_string("lr-schedule"), lr, total_steps);
  TrainerOptions topts;
  topts.clip_grad_norm = static_cast<float>(f.get_float("clip-grad-norm"));
  Trainer trainer(*model, *optimizer, schedule.get(), topts);

  JsonlWriter metrics;
  if (!f.get_string("metrics").empty()) metrics.open(f.get_string("metrics"));

  std::printf("tern-train: %s (%lld params) on %s: %lld train / %lld test samples, batch %lld, %s, %s, %lld thread%s\n",
              f.get_string("model").c_str(), static_cast<long long>(model->param_count()), dataset.c_str(),
              static_cast<long long>(train.size()), static_cast<long long>(test.size()),
              static_cast<long long>(batch), optimizer->name().c_str(), schedule->describe().c_str(),
              static_cast<long long>(threads), threads == 1 ? "" : "s");
  std::fflush(stdout);

  EpochStats last_test;
  double train_seconds = 0;
  int64_t train_samples = 0;
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    loader.start_epoch(epoch);
    char label[64];
    std::snprintf(label, sizeof label, "epoch %lld/%lld", static_cast<long long>(epoch + 1),
                  static_cast<long long>(epochs));
    ProgressBar bar(label, train.size());
    const EpochStats tr = trainer.train_epoch(loader, [&](int64_t done, double loss) {
      char extra[32];
      std::snprintf(extra, sizeof extra, "loss %.4f", loss);
      bar.update(done, extra);
    });
    last_test = trainer.evaluate(test, eval_batch);
    train_seconds += tr.seconds;
    train_samples += tr.samples;
    char summary[160];
    std::snprintf(summary, sizeof summary,
                  "train_loss %.4f  train_acc %.2f%%  test_loss %.4f  test_acc %.2f%%  %.0f samples/s  %s",
                  tr.loss, 100 * tr.accuracy, last_test.loss, 100 * last_test.accuracy, tr.samples_per_s(),
                  format_duration(tr.seconds).c_str());
    if (bar.active()) {
      bar.finish(summary);
    } else {
      std::printf("%s  %s\n", label, summary);
      std::fflush(stdout);
    }
    metrics.write(JsonObject()
                      .add("event", "epoch")
                      .add("epoch", epoch + 1)
                      .add("train_loss", tr.loss)
                      .add("train_accuracy", tr.accuracy)
                      .add("test_loss", last_test.loss)
                      .add("test_accuracy", last_test.accuracy)
                      .add("samples_per_s", tr.samples_per_s())
                      .add("seconds", tr.seconds)
                      .add("lr", static_cast<double>(optimizer->lr())));
  }
  const double sps = train_seconds > 0 ? static_cast<double>(train_samples) / train_seconds : 0.0;
  std::printf("test accuracy: %.2f%% (test loss %.4f), %.0f samples/s, %s training\n", 100 * last_test.accuracy,
              last_test.loss, sps, format_duration(train_seconds).c_str());
  metrics.write(JsonObject()
                    .add("event", "final")
                    .add("model", f.get_string("model"))
                    .add("dataset", dataset)
                    .add("epochs", epochs)
                    .add("test_loss", last_test.loss)
                    .add("test_accuracy", last_test.accuracy)
                    .add("samples_per_s", sps)
                    .add("seconds", train_seconds)
                    .add("params", model->param_count())
                    .add("config", f.echo()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tern::Flags flags("tern-train", "Train a model from Tern's zoo on one process and report test accuracy.");
  declare(flags);
  try {
    if (!flags.parse(argc, argv)) {
      std::fputs(flags.usage().c_str(), stdout);
      return 0;
    }
    return run(flags);
  } catch (const tern::UsageError& e) {
    std::fprintf(stderr, "tern-train: %s\n\n%s", e.what(), flags.usage().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern-train: error: %s\n", e.what());
    return 1;
  }
}
