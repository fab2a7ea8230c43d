// The int8 model against the f32 model it was converted from, on real Fashion-MNIST test images:
// the CNN is trained briefly here (so the test needs no checkpoint), converted with min-max and
// MSE calibration on 256 training images, and both are run on 1000 test images.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "models/registry.h"
#include "ondevice/model_format.h"
#include "ondevice/quantize.h"
#include "optim/sgd.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/dataset.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/trainer.h"

namespace tern::ondevice {
namespace {

bool have_fashion_mnist() {
  return std::filesystem::exists(std::filesystem::path(kDefaultFashionMnistDir) /
                                 "train-images-idx3-ubyte.gz");
}

Dataset head(const Dataset& d, int64_t n) {
  Dataset out;
  out.name = d.name;
  out.images = d.images.slice(0, n);
  out.labels.assign(d.labels.begin(), d.labels.begin() + n);
  out.num_classes = d.num_classes;
  return out;
}

int64_t argmax(const float* v, int64_t k) { return std::max_element(v, v + k) - v; }

struct Agreement {
  double agreement = 0, f32_accuracy = 0, int8_accuracy = 0, max_logit_error = 0, logit_range = 0;
};

Agreement compare(Sequential& net, const QuantizedModel& q, const Dataset& test) {
  net.eval();
  const Tensor logits = net.forward(test.images);
  const int64_t n = test.size(), k = logits.dim(1), per = test.images.numel() / n;
  Agreement a;
  int64_t agree = 0, right32 = 0, right8 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<float> l8 = q.forward(test.images.f32() + i * per);
    const float* l32 = logits.f32() + i * k;
    const int64_t p8 = argmax(l8.data(), k), p32 = argmax(l32, k);
    agree += p8 == p32;
    right8 += p8 == test.labels[static_cast<size_t>(i)];
    right32 += p32 == test.labels[static_cast<size_t>(i)];
    for (int64_t j = 0; j < k; ++j) {
      a.max_logit_error =
          std::max(a.max_logit_error, static_cast<double>(std::fabs(l8[static_cast<size_t>(j)] - l32[j])));
      a.logit_range = std::max(a.logit_range, static_cast<double>(std::fabs(l32[j])));
    }
  }
  a.agreement = static_cast<double>(agree) / static_cast<double>(n);
  a.f32_accuracy = static_cast<double>(right32) / static_cast<double>(n);
  a.int8_accuracy = static_cast<double>(right8) / static_cast<double>(n);
  return a;
}

TEST(Int8FashionMnist, CnnInt8PredictionsAgreeWithTheFloatModel) {
  if (!have_fashion_mnist())
    GTEST_SKIP() << "Fashion-MNIST not installed in " << kDefaultFashionMnistDir
                 << " (Debian: dataset-fashion-mnist)";
  const Dataset train = head(load_dataset("fashion-mnist", kDefaultFashionMnistDir, Split::train), 8192);
  const Dataset test = head(load_dataset("fashion-mnist", kDefaultFashionMnistDir, Split::test), 1000);

  ModelConfig mc;
  mc.seed = 1;
  auto net = make_cnn(mc);
  SgdOptions so;
  so.lr = 0.02f;
  so.momentum = 0.9f;
  Sgd opt(net->params(), so);
  Trainer trainer(*net, opt, nullptr);
  DataLoader loader(train, 64, true, /*seed=*/1);
  loader.start_epoch(0);
  trainer.train_epoch(loader);

  // The converter's input, as tern-finetune gets it: a checkpoint restored into a fresh model.
  CheckpointData ckpt;
  ckpt.model_name = "cnn";
  capture_model(*net, ckpt);
  auto restored = make_cnn(mc);
  restore_model(*restored, decode_checkpoint(encode_checkpoint(ckpt), "memory"), "cnn");

  const Tensor calib = train.images.slice(0, 256);
  for (Calibration c : {Calibration::min_max, Calibration::mse}) {
    QuantizeOptions qo;
    qo.calibration = c;
    const QuantizedModel q = quantize_model(*restored, calib, qo);
    // What the device would load: the int8 model through its file format.
    const std::vector<uint8_t> image = encode_model(q);
    const QuantizedModel loaded = decode_model(image.data(), image.size(), "memory");
    const Agreement a = compare(*net, loaded, test);
    std::printf(
        "[ int8 %-6s] agreement %.4f  f32 acc %.4f  int8 acc %.4f  max |logit error| %.4f (max |logit| %.2f)"
        "  flash %zu bytes\n",
        calibration_name(c), a.agreement, a.f32_accuracy, a.int8_accuracy, a.max_logit_error, a.logit_range,
        image.size());
    RecordProperty(std::string("agreement_") + calibration_name(c), std::to_string(a.agreement));
    RecordProperty(std::string("max_logit_error_") + calibration_name(c), std::to_string(a.max_logit_error));
    EXPECT_GT(a.f32_accuracy, 0.80);  // one epoch on 8192 images; chance is 0.10
    // Measured (seed 1): agreement 99.6% with both calibrations, int8 accuracy within 0.2 points
    // of f32 (83.0%), worst logit error 0.32 (min-max) / 0.35 (MSE) against logits up to 16.6,
    // i.e. about 2%. Bounds with margin: agreement >= 98%, at most 1 point of accuracy lost, no
    // logit off by more than 5% of the largest logit magnitude.
    EXPECT_GE(a.agreement, 0.98);
    EXPECT_GE(a.int8_accuracy, a.f32_accuracy - 0.01);
    EXPECT_LE(a.max_logit_error, 0.05 * a.logit_range);
  }
}

}  // namespace
}  // namespace tern::ondevice
