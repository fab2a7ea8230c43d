// MobileNetV2 (Sandler et al. 2018): a stem conv, inverted residual blocks (1x1 expand, 3x3
// depthwise, 1x1 linear projection; residual when shapes allow), a 1x1 head conv, global pool
// and classifier. Channels scale with width_mult, rounded to multiples of 8 as the paper does.
// Inputs smaller than 64 pixels (28x28, 32x32) keep stride 1 in the stem and the first
// down-sampling stage, as CIFAR adaptations do, so the feature map does not vanish.
#include <algorithm>
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
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t r = std::max<int64_t>(divisor, (static_cast<int64_t>(v + divisor / 2.0) / divisor) * divisor);
  if (r < 0.9 * v) r += divisor;  // never round down by more than 10%
  return r;
}

void conv_bn(Sequential& s, int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, bool relu6,
             Rng& rng) {
  s.emplace<Conv2d>(in, out, k, rng, stride, k / 2, groups, false);
  s.emplace<BatchNorm2d>(out);
  if (relu6) s.emplace<ReLU6>();
}

std::unique_ptr<Module> inverted_residual(int64_t in, int64_t out, int64_t stride, int64_t expand, Rng& rng) {
  auto body = std::make_unique<Sequential>();
  const int64_t hidden = in * expand;
  if (expand != 1) conv_bn(*body, in, hidden, 1, 1, 1, true, rng);
  conv_bn(*body, hidden, hidden, 3, stride, hidden, true, rng);  // depthwise
  conv_bn(*body, hidden, out, 1, 1, 1, false, rng);              // linear bottleneck
  if (stride == 1 && in == out) return std::make_unique<Residual>(std::move(body), nullptr, false);
  return body;
}
}  // namespace

std::unique_ptr<Sequential> make_mobilenetv2(const ModelConfig& c) {
  Rng rng(c.seed, /*stream=*/4);
  const bool small = std::min(c.height, c.width) < 64;
  struct Stage {
    int64_t expand, channels, blocks, stride;
  };
  const Stage stages[] = {{1, 16, 1, 1}, {6, 24, 2, small ? 1 : 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                          {6, 96, 3, 1}, {6, 160, 3, 2},          {6, 320, 1, 1}};
  auto net = std::make_unique<Sequential>();
  int64_t channels = make_divisible(32 * c.width_mult);
  conv_bn(*net, c.in_channels, channels, 3, small ? 1 : 2, 1, true, rng);
  for (const Stage& s : stages) {
    const int64_t out = make_divisible(s.channels * c.width_mult);
    for (int64_t b = 0; b < s.blocks; ++b) {
      net->add(inverted_residual(channels, out, b == 0 ? s.stride : 1, s.expand, rng));
      channels = out;
    }
  }
  const int64_t head = make_divisible(1280 * std::max(1.0f, c.width_mult));
  conv_bn(*net, channels, head, 1, 1, 1, true, rng);
  net->emplace<GlobalAvgPool2d>();
  net->emplace<Linear>(head, c.num_classes, rng);
  return net;
}

}  // namespace tern
