#include "examples/train_data.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace tern {

void keep_classes(const std::string& range, Dataset& d) {
  if (range.empty()) return;
  int lo = -1, hi = -1;
  char end = 0;
  if (std::sscanf(range.c_str(), "%d-%d%c", &lo, &hi, &end) != 2 || lo < 0 || hi < lo || hi >= d.num_classes)
    throw UsageError(detail::concat("--classes '", range, "': expected A-B with 0 <= A <= B < ", d.num_classes));
  const int64_t per = d.size() > 0 ? d.images.numel() / d.size() : 0;
  std::vector<int64_t> keep;
  for (int64_t i = 0; i < d.size(); ++i)
    if (d.labels[static_cast<size_t>(i)] >= lo && d.labels[static_cast<size_t>(i)] <= hi) keep.push_back(i);
  Shape shape = d.images.shape();
  shape[0] = static_cast<int64_t>(keep.size());
  Tensor images = Tensor::empty(shape);
  std::vector<int32_t> labels;
  for (size_t j = 0; j < keep.size(); ++j) {
    std::copy_n(d.images.f32() + keep[j] * per, per, images.f32() + static_cast<int64_t>(j) * per);
    labels.push_back(d.labels[static_cast<size_t>(keep[j])]);
  }
  d.images = images;
  d.labels = std::move(labels);
}

TrainingData load_training_data(const Flags& f) {
  TrainingData data;
  const std::string dataset = f.get_string("dataset"), dir = f.get_string("data-dir");
  data.train = load_dataset(dataset, dir, Split::train);
  data.test = load_dataset(dataset, dir, Split::test);
  keep_classes(f.get_string("classes"), data.train);
  keep_classes(f.get_string("classes"), data.test);
  Dataset& train = data.train;
  if (const int64_t limit = f.get_int("limit-train"); limit > 0 && limit < train.size()) {
    train.images = train.images.slice(0, limit);
    train.labels.resize(static_cast<size_t>(limit));
  }
  const Shape sample = train.sample_shape();
  if (sample.size() != 3)
    throw Error("dataset '" + dataset + "' has samples of shape " + shape_str(sample) +
                "; the zoo's models take [C, H, W] images");
  ModelConfig& mc = data.config;
  mc.in_channels = sample[0];
  mc.height = sample[1];
  mc.width = sample[2];
  mc.num_classes = train.num_classes;
  mc.width_mult = static_cast<float>(f.get_float("width-mult"));
  mc.seed = static_cast<uint64_t>(f.get_int("seed"));
  return data;
}

}  // namespace tern
