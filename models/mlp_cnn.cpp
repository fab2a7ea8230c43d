// The two small models of the Fashion-MNIST experiments.
#include "models/registry.h"
#include "runtime/nn/activation.h"
#include "runtime/nn/conv.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/norm.h"
#include "runtime/nn/pool.h"
#include "runtime/rng.h"

namespace tern {

std::unique_ptr<Sequential> make_mlp(const ModelConfig& c) {
  Rng rng(c.seed, /*stream=*/1);
  auto net = std::make_unique<Sequential>();
  net->emplace<Flatten>();
  net->emplace<Linear>(c.in_channels * c.height * c.width, 512, rng);
  net->emplace<ReLU>();
  net->emplace<Linear>(512, 256, rng);
  net->emplace<ReLU>();
  net->emplace<Linear>(256, c.num_classes, rng);
  return net;
}

std::unique_ptr<Sequential> make_cnn(const ModelConfig& c) {
  Rng rng(c.seed, /*stream=*/2);
  auto net = std::make_unique<Sequential>();
  int64_t channels = c.in_channels, h = c.height, w = c.width;
  for (int64_t out : {32, 64}) {
    net->emplace<Conv2d>(channels, out, 3, rng, /*stride=*/1, /*padding=*/1, /*groups=*/1, /*bias=*/false);
    net->emplace<BatchNorm2d>(out);
    net->emplace<ReLU>();
    net->emplace<MaxPool2d>(2);
    channels = out;
    h /= 2;
    w /= 2;
  }
  TERN_CHECK(h > 0 && w > 0, "cnn: input ", c.height, "x", c.width, " is too small for two 2x2 pools");
  net->emplace<Flatten>();
  net->emplace<Linear>(channels * h * w, 128, rng);
  net->emplace<ReLU>();
  net->emplace<Linear>(128, c.num_classes, rng);
  return net;
}

}  // namespace tern
