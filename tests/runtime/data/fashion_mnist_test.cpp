#include "runtime/data/fashion_mnist.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/data/dataset.h"
#include "runtime/data/idx.h"
#include "runtime/data/synthetic.h"
#include "tests/support/scratch_dir.h"

namespace tern {
namespace {

using testing::ScratchDir;

namespace fs = std::filesystem;

bool have_real_data() {
  return fs::exists(fs::path(kDefaultFashionMnistDir) / "train-images-idx3-ubyte.gz");
}
#define SKIP_WITHOUT_FASHION_MNIST()                                           \
  if (!have_real_data())                                                       \
  GTEST_SKIP() << "Fashion-MNIST not installed in " << kDefaultFashionMnistDir \
               << " (Debian package dataset-fashion-mnist)"

IdxArray u8_array(std::vector<int64_t> dims, std::vector<uint8_t> bytes) {
  IdxArray a;
  a.type_code = kIdxU8;
  a.dims = std::move(dims);
  a.bytes = std::move(bytes);
  return a;
}

// A small fake Fashion-MNIST test split in dir: n images (pixel value = label * 10) and labels.
void write_fake_split(const ScratchDir& dir, int64_t n_images, std::vector<uint8_t> labels,
                      bool gzip) {
  std::vector<uint8_t> px(static_cast<size_t>(n_images * 28 * 28));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i / (28 * 28) * 10);
  const std::string ext = gzip ? ".gz" : "";
  write_idx(dir.file("t10k-images-idx3-ubyte" + ext), u8_array({n_images, 28, 28}, px), gzip);
  const auto n_labels = static_cast<int64_t>(labels.size());
  write_idx(dir.file("t10k-labels-idx1-ubyte" + ext), u8_array({n_labels}, labels), gzip);
}

std::string load_error(const std::string& dir) {
  try {
    load_fashion_mnist(dir, Split::test);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "load_fashion_mnist(" << dir << ") did not throw";
  return "";
}

std::vector<int> class_counts(const Dataset& d) {
  std::vector<int> count(static_cast<size_t>(d.num_classes), 0);
  for (int32_t y : d.labels) {
    EXPECT_GE(y, 0);
    EXPECT_LT(y, d.num_classes);
    if (y >= 0 && y < d.num_classes) ++count[static_cast<size_t>(y)];
  }
  return count;
}

TEST(FashionMnist, TrainSplitHas60000SamplesWith6000PerClass) {
  SKIP_WITHOUT_FASHION_MNIST();
  const Dataset d = load_fashion_mnist(kDefaultFashionMnistDir, Split::train);
  EXPECT_EQ(d.name, "fashion-mnist");
  EXPECT_EQ(d.size(), 60000);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.images.shape(), Shape({60000, 1, 28, 28}));
  EXPECT_EQ(d.images.dtype(), DType::f32);
  for (int c : class_counts(d)) EXPECT_EQ(c, 6000);
}

TEST(FashionMnist, TestSplitHas10000SamplesWith1000PerClass) {
  SKIP_WITHOUT_FASHION_MNIST();
  const Dataset d = load_fashion_mnist(kDefaultFashionMnistDir, Split::test);
  EXPECT_EQ(d.size(), 10000);
  EXPECT_EQ(d.images.shape(), Shape({10000, 1, 28, 28}));
  for (int c : class_counts(d)) EXPECT_EQ(c, 1000);
  // The first test label of the original release is 9 (ankle boot).
  EXPECT_EQ(d.labels[0], 9);
}

TEST(FashionMnist, TrainStatisticsMatchTheNormalisationConstants) {
  SKIP_WITHOUT_FASHION_MNIST();
  const IdxArray raw =
      read_idx(std::string(kDefaultFashionMnistDir) + "/train-images-idx3-ubyte.gz");
  double sum = 0, sq = 0;
  for (uint8_t p : raw.bytes) {
    const double v = p / 255.0;
    sum += v, sq += v * v;
  }
  const double n = static_cast<double>(raw.bytes.size());
  const double mean = sum / n, std = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, kFashionMnistMean, 1e-4);  // 0.28604
  EXPECT_NEAR(std, kFashionMnistStd, 1e-4);    // 0.35302

  // So the loaded training images are standardised, and each value is the raw byte normalised.
  const Dataset d = load_fashion_mnist(kDefaultFashionMnistDir, Split::train);
  const float* x = d.images.f32();
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < d.images.numel(); ++i) s += x[i], s2 += double{x[i]} * x[i];
  const double m = s / n;
  EXPECT_NEAR(m, 0.0, 1e-3);
  EXPECT_NEAR(std::sqrt(s2 / n - m * m), 1.0, 1e-3);
  for (size_t i : {size_t{0}, size_t{400}, size_t{12345678}, raw.bytes.size() - 1})
    EXPECT_FLOAT_EQ(x[i], (raw.bytes[i] / 255.0f - kFashionMnistMean) / kFashionMnistStd) << i;
}

TEST(FashionMnist, ReadsSmallPlainAndGzipSplits) {
  for (bool gzip : {false, true}) {
    ScratchDir dir;
    write_fake_split(dir, 3, {0, 9, 4}, gzip);
    const Dataset d = load_fashion_mnist(dir.path(), Split::test);
    EXPECT_EQ(d.images.shape(), Shape({3, 1, 28, 28}));
    EXPECT_EQ(d.labels, std::vector<int32_t>({0, 9, 4}));
    EXPECT_FLOAT_EQ(d.images.f32()[28 * 28 + 5],
                    (10 / 255.0f - kFashionMnistMean) / kFashionMnistStd);
  }
}

TEST(FashionMnist, CountMismatchNamesBothFilesAndCounts) {
  ScratchDir dir;
  write_fake_split(dir, 5, {1, 2, 3, 4}, true);
  const std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find(dir.file("t10k-images-idx3-ubyte.gz") + " holds 5 images"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find(dir.file("t10k-labels-idx1-ubyte.gz") + " holds 4 labels"), std::string::npos)
      << msg;
}

TEST(FashionMnist, LabelOutOfRangeIsRejected) {
  ScratchDir dir;
  write_fake_split(dir, 3, {1, 10, 3}, true);
  const std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find(dir.file("t10k-labels-idx1-ubyte.gz")), std::string::npos) << msg;
  EXPECT_NE(msg.find("label 10 at index 1"), std::string::npos) << msg;
}

TEST(FashionMnist, WrongRankOrSizeIsRejected) {
  ScratchDir dir;
  write_fake_split(dir, 2, {1, 2}, false);
  write_idx(dir.file("t10k-images-idx3-ubyte"), u8_array({2, 784}, std::vector<uint8_t>(1568)),
            false);
  std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find(dir.file("t10k-images-idx3-ubyte")), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 3-D u8 images"), std::string::npos) << msg;

  write_idx(dir.file("t10k-images-idx3-ubyte"), u8_array({2, 32, 32}, std::vector<uint8_t>(2048)),
            false);
  msg = load_error(dir.path());
  EXPECT_NE(msg.find("expected 28x28 images, got 32x32"), std::string::npos) << msg;

  write_fake_split(dir, 2, {1, 2}, false);
  write_idx(dir.file("t10k-labels-idx1-ubyte"), u8_array({2, 1}, {1, 2}), false);
  msg = load_error(dir.path());
  EXPECT_NE(msg.find(dir.file("t10k-labels-idx1-ubyte")), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 1-D u8 labels"), std::string::npos) << msg;
}

TEST(FashionMnist, MissingFileOrDirectoryIsNamed) {
  ScratchDir dir;
  write_idx(dir.file("t10k-images-idx3-ubyte.gz"), u8_array({1, 28, 28}, std::vector<uint8_t>(784)),
            true);
  std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find(dir.file("t10k-labels-idx1-ubyte.gz")), std::string::npos) << msg;
  EXPECT_NE(msg.find("exists"), std::string::npos) << msg;

  msg = load_error(dir.file("no_such_dir"));
  EXPECT_NE(msg.find(dir.file("no_such_dir")), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(LoadDataset, UnknownNameListsTheChoices) {
  try {
    load_dataset("cifar10", kDefaultFashionMnistDir, Split::train);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cifar10"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fashion-mnist"), std::string::npos) << msg;
    EXPECT_NE(msg.find("synthetic"), std::string::npos) << msg;
  }
}

TEST(LoadDataset, SyntheticHasFashionMnistShapesAndNeedsNoFiles) {
  const Dataset train = load_dataset("synthetic", "/nonexistent", Split::train);
  const Dataset test = load_dataset("synthetic", "/nonexistent", Split::test);
  EXPECT_EQ(train.name, "synthetic");
  EXPECT_EQ(train.images.shape(), Shape({kSyntheticTrainSize, 1, 28, 28}));
  EXPECT_EQ(test.images.shape(), Shape({kSyntheticTestSize, 1, 28, 28}));
  EXPECT_EQ(train.num_classes, 10);
  EXPECT_NE(train.images.f32()[0], test.images.f32()[0]);  // different draws
}

TEST(LoadDataset, FashionMnistByName) {
  SKIP_WITHOUT_FASHION_MNIST();
  EXPECT_EQ(load_dataset("fashion-mnist", kDefaultFashionMnistDir, Split::test).size(), 10000);
}

}  // namespace
}  // namespace tern
