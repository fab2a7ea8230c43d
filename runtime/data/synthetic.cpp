#include "runtime/data/synthetic.h"

#include <cmath>
#include <numeric>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace tern {

Dataset make_synthetic(int64_t n, const Shape& sample_shape, int num_classes, uint64_t seed,
                       uint64_t sample_seed, float separation) {
  TERN_CHECK(n >= 0, "make_synthetic: n = ", n, ", expected >= 0");
  TERN_CHECK(num_classes >= 1, "make_synthetic: num_classes = ", num_classes, ", expected >= 1");
  TERN_CHECK(!sample_shape.empty(), "make_synthetic: the sample shape is empty");
  for (int64_t d : sample_shape)
    TERN_CHECK(d > 0, "make_synthetic: sample shape ", shape_str(sample_shape),
               " has a non-positive dimension");
  TERN_CHECK(std::isfinite(separation) && separation >= 0, "make_synthetic: separation ",
             separation, ", expected a finite value >= 0");
  const int64_t dim = shape_numel(sample_shape);

  // Prototypes depend on seed only, so every sample_seed draws from the same task.
  Rng proto_rng(mix_seed(seed), 1);
  const float scale = separation / std::sqrt(static_cast<float>(dim));
  std::vector<float> prototypes(static_cast<size_t>(num_classes * dim));
  // Image-shaped samples get prototypes that are constant over 4x4 blocks: a pattern with spatial
  // extent, which convolution and pooling preserve (white-noise prototypes are invisible to a
  // CNN after pooling, though a linear model finds them). Per-element variance is unchanged.
  const bool image = sample_shape.size() >= 2 && sample_shape.end()[-1] >= 8 && sample_shape.end()[-2] >= 8;
  const int64_t W = sample_shape.end()[-1], H = image ? sample_shape.end()[-2] : 1;
  const int64_t block = image ? 4 : 1, cw = (W + block - 1) / block, ch = (H + block - 1) / block;
  const int64_t planes = dim / (H * W);
  std::vector<float> coarse(static_cast<size_t>(planes * ch * cw));
  for (int c = 0; c < num_classes; ++c) {
    for (float& v : coarse) v = scale * proto_rng.normal();
    float* proto = prototypes.data() + c * dim;
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          proto[(p * H + h) * W + w] = coarse[static_cast<size_t>((p * ch + h / block) * cw + w / block)];
  }

  Rng sample_rng(mix_seed(seed ^ mix_seed(sample_seed)), 2);
  Dataset out;
  out.name = "synthetic";
  out.num_classes = num_classes;
  out.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out.labels[static_cast<size_t>(i)] = static_cast<int32_t>(i % num_classes);
  sample_rng.shuffle(out.labels);

  Shape shape = {n};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  out.images = Tensor::empty(shape);
  float* x = out.images.f32();
  for (int64_t i = 0; i < n; ++i) {
    const float* proto = prototypes.data() + out.labels[static_cast<size_t>(i)] * dim;
    float* row = x + i * dim;
    for (int64_t k = 0; k < dim; ++k) row[k] = proto[k] + sample_rng.normal();
  }
  return out;
}

}  // namespace tern
