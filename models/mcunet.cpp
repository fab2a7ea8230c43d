// MCUNet-style network for on-device fine-tuning on 28x28 inputs (issue 7): a MobileNetV2-w0.35-like
// chain of inverted residual blocks whose expansion ratios (3-6) and depthwise kernels (3, 5, 7) vary per
// block, as MCUNet's searched models do (Lin et al. 2020, 2022). Sized so that its int8 version's
// training step fits 256 KB: the 28x28 stage is narrow (hidden width 24) because the f32 gradient of a
// 28x28 map is what dominates the arena when backward reaches it; the wide layers run at 7x7 and 4x4.
// width_mult widens the 7x7 and 4x4 stages and the head (rounded to multiples of 8), keeping the 28x28
// and 14x14 stages: a network whose full fine-tuning needs megabytes, while a sparse update of it can
// still fit 256 KB. Only layers ondevice/quantize.h converts: conv/depthwise + BN (+ ReLU6), identity residuals without
// an activation after the add, global average pool, linear.
#include <memory>

#include "models/registry.h"
#include "runtime/nn/activation.h"
#include "runtime/nn/conv.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/norm.h"
#include "runtime/nn/pool.h"
#include "runtime/rng.h"

namespace tern {

namespace {
void mcu_conv_bn(Sequential& s, int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, bool relu6,
                 Rng& rng) {
  s.emplace<Conv2d>(in, out, k, rng, stride, k / 2, groups, false);
  s.emplace<BatchNorm2d>(out);
  if (relu6) s.emplace<ReLU6>();
}

// 1x1 expansion (skipped at ratio 1), kxk depthwise, 1x1 linear projection; an identity residual when the
// shapes allow.
std::unique_ptr<Module> mcu_block(int64_t in, int64_t out, int64_t expand, int64_t kernel, int64_t stride,
                                  Rng& rng) {
  auto body = std::make_unique<Sequential>();
  const int64_t hidden = in * expand;
  if (expand != 1) mcu_conv_bn(*body, in, hidden, 1, 1, 1, true, rng);
  mcu_conv_bn(*body, hidden, hidden, kernel, stride, hidden, true, rng);
  mcu_conv_bn(*body, hidden, out, 1, 1, 1, false, rng);
  if (stride == 1 && in == out) return std::make_unique<Residual>(std::move(body), nullptr, false);
  return body;
}
}  // namespace

std::unique_ptr<Sequential> make_mcunet(const ModelConfig& c) {
  Rng rng(c.seed, /*stream=*/7);
  TERN_CHECK(c.height >= 16 && c.width >= 16, "mcunet: input ", c.height, "x", c.width,
             " is too small for its three stride-2 stages (at least 16x16)");
  TERN_CHECK(c.width_mult >= 1.0f && c.width_mult <= 16.0f, "mcunet: --width-mult ", c.width_mult,
             " is outside [1, 16] (it widens the 7x7 and 4x4 stages)");
  auto widened = [&](int64_t ch) { return (static_cast<int64_t>(ch * c.width_mult) + 7) / 8 * 8; };
  struct Block {
    int64_t out, expand, kernel, stride;
  };
  // 28x28 -> 28 (stem, first block) -> 14 -> 7 -> 4.
  const Block blocks[] = {
      {8, 1, 3, 1},                                   // 28x28, depthwise-separable
      {16, 3, 5, 2}, {16, 4, 3, 1},                   // 14x14
      {widened(24), 4, 5, 2}, {widened(24), 5, 3, 1},  // 7x7
      {widened(40), 5, 5, 2}, {widened(40), 6, 7, 1},  // 4x4
      {widened(48), 6, 3, 1},                         // 4x4
  };
  auto net = std::make_unique<Sequential>();
  int64_t channels = 16;
  mcu_conv_bn(*net, c.in_channels, channels, 3, 1, 1, true, rng);
  for (const Block& b : blocks) {
    net->add(mcu_block(channels, b.out, b.expand, b.kernel, b.stride, rng));
    channels = b.out;
  }
  const int64_t head = widened(160);
  mcu_conv_bn(*net, channels, head, 1, 1, 1, true, rng);
  net->emplace<GlobalAvgPool2d>();
  net->emplace<Linear>(head, c.num_classes, rng);
  return net;
}

}  // namespace tern
