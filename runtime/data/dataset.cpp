#include "runtime/data/dataset.h"

#include "runtime/data/fashion_mnist.h"
#include "runtime/data/synthetic.h"
#include "runtime/error.h"

namespace tern {

Shape Dataset::sample_shape() const {
  TERN_CHECK(images.defined() && images.ndim() >= 1, "dataset '", name, "' has no images");
  return Shape(images.shape().begin() + 1, images.shape().end());
}

const char* split_name(Split split) { return split == Split::train ? "train" : "test"; }

Dataset load_dataset(const std::string& name, const std::string& dir, Split split) {
  if (name == "fashion-mnist") return load_fashion_mnist(dir, split);
  if (name == "synthetic") {
    const bool train = split == Split::train;
    return make_synthetic(train ? kSyntheticTrainSize : kSyntheticTestSize, {1, 28, 28},
                          kFashionMnistClasses, kSyntheticSeed, train ? 0 : 1);
  }
  throw Error("unknown dataset '" + name + "' (choices: fashion-mnist, synthetic)");
}

}  // namespace tern
