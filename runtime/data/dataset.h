// Dataset: a whole labelled image set in memory, ready to batch (f32 NCHW, already normalised).
// load_dataset picks one by name, so examples and benchmarks take the dataset as a flag.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor/tensor.h"

namespace tern {

struct Dataset {
  std::string name;
  Tensor images;                // f32 [N, C, H, W] (or [N, ...] for non-images), normalised
  std::vector<int32_t> labels;  // N labels in [0, num_classes)
  int num_classes = 0;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // The shape of one sample: images' shape without the leading N.
  Shape sample_shape() const;
};

enum class Split { train, test };
const char* split_name(Split split);

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// name: "fashion-mnist" (read from dir) or "synthetic" (generated; dir is ignored; the train and
// test splits share class prototypes, see make_synthetic). Unknown names throw, listing both.
Dataset load_dataset(const std::string& name, const std::string& dir, Split split);

}  // namespace tern
