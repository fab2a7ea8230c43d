// Conv2d: the 2-D convolution layer of the CNN, ResNet and MobileNet models, over NCHW input.
// It runs through cpu::Conv2dPlan and keeps the plans of the few input shapes it saw last.
#pragma once

#include <memory>
#include <vector>

#include "runtime/kernels/cpu/conv.h"
#include "runtime/nn/module.h"
#include "runtime/rng.h"

namespace tern {

class Conv2d : public Module {
 public:
  // Square kernel, stride and zero padding. Weights U(-b, b), b = 1/sqrt(fan_in), fan_in =
  // in/groups * k * k, drawn from rng in row-major order; bias zero. This is PyTorch's default
  // scale: with BatchNorm after the conv, the larger He scale made SGD at lr 0.05 stall at chance
  // on a synthetic task (in PyTorch too), so hyperparameters tuned there transfer.
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Rng& rng, int64_t stride = 1,
         int64_t padding = 0, int64_t groups = 1, bool bias = true);
  ~Conv2d() override;

  Tensor forward(const Tensor& x) override;  // [N, in, H, W] -> [N, out, OH, OW]
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  // The plan pointer travels with the input: with more than kMaxPlans input shapes between a
  // forward and its backward the plan would be evicted (pipeline micro-batches share one shape).
  void swap_forward_state(ForwardState& s) override { s.swap(x_, plan_); }

  Param weight;  // [out, in/groups, k, k]
  Param bias;    // [out], undefined when constructed without bias

 private:
  // The plan for shape s, building it if needed. Training and evaluation usually differ in batch
  // size (and a last partial batch adds one more), so a few plans are kept, least recent evicted.
  cpu::Conv2dPlan& plan_for(const Conv2dShape& s);

  static constexpr size_t kMaxPlans = 4;
  int64_t in_, out_, kernel_, stride_, padding_, groups_;
  std::vector<std::unique_ptr<cpu::Conv2dPlan>> plans_;  // most recently used last
  cpu::Conv2dPlan* plan_ = nullptr;                      // the plan of the last forward, used by backward
  Tensor x_;                                             // input saved for backward
  // The plan overwrites its outputs; gradients land here first and are then added to the grads.
  Tensor dw_scratch_, db_scratch_;
};

}  // namespace tern
