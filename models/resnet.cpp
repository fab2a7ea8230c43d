// ResNet-20 for small images (He et al. 2016, section 4.2): a 3x3 stem, three stages of three
// basic blocks at 16/32/64 channels (x width_mult), stride 2 entering stages 2 and 3, global
// average pool, linear classifier. Shortcuts that change shape are 1x1 conv + BN (option B).
#include <cmath>

#include "models/registry.h"
#include "runtime/nn/activation.h"
#include "runtime/nn/conv.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/norm.h"
#include "runtime/nn/pool.h"
#include "runtime/rng.h"

namespace tern {

namespace {
std::unique_ptr<Module> basic_block(int64_t in, int64_t out, int64_t stride, Rng& rng) {
  auto body = std::make_unique<Sequential>();
  body->emplace<Conv2d>(in, out, 3, rng, stride, 1, 1, false);
  body->emplace<BatchNorm2d>(out);
  body->emplace<ReLU>();
  body->emplace<Conv2d>(out, out, 3, rng, 1, 1, 1, false);
  body->emplace<BatchNorm2d>(out);
  std::unique_ptr<Sequential> shortcut;
  if (stride != 1 || in != out) {
    shortcut = std::make_unique<Sequential>();
    shortcut->emplace<Conv2d>(in, out, 1, rng, stride, 0, 1, false);
    shortcut->emplace<BatchNorm2d>(out);
  }
  return std::make_unique<Residual>(std::move(body), std::move(shortcut), /*relu_after=*/true);
}
}  // namespace

std::unique_ptr<Sequential> make_resnet20(const ModelConfig& c) {
  Rng rng(c.seed, /*stream=*/3);
  auto width = [&](int64_t ch) { return std::max<int64_t>(1, std::lround(ch * c.width_mult)); };
  auto net = std::make_unique<Sequential>();
  int64_t channels = width(16);
  net->emplace<Conv2d>(c.in_channels, channels, 3, rng, 1, 1, 1, false);
  net->emplace<BatchNorm2d>(channels);
  net->emplace<ReLU>();
  const int64_t stage_channels[] = {16, 32, 64};
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t out = width(stage_channels[stage]);
    for (int block = 0; block < 3; ++block) {
      const int64_t stride = (stage > 0 && block == 0) ? 2 : 1;
      net->add(basic_block(channels, out, stride, rng));
      channels = out;
    }
  }
  net->emplace<GlobalAvgPool2d>();
  net->emplace<Linear>(channels, c.num_classes, rng);
  return net;
}

}  // namespace tern
