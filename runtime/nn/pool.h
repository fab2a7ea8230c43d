// Pooling layers of the CNN models: MaxPool2d and AvgPool2d (square windows) and
// GlobalAvgPool2d ([N, C, H, W] -> [N, C], the head of MobileNet-style nets). NCHW f32 inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/kernels/cpu/pool.h"
#include "runtime/nn/module.h"

namespace tern {

// Output size is floor((H + 2p - k) / s) + 1, as PyTorch's default (ceil_mode=False).
// padding must be at most kernel / 2 (PyTorch's rule), so no window is all padding.
class MaxPool2d : public Module {
 public:
  MaxPool2d(int64_t kernel, int64_t stride = 0 /* 0 means = kernel */, int64_t padding = 0);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(geometry_, out_shape_, argmax_); }

 private:
  int64_t kernel_, stride_, padding_;
  cpu::Pool2dGeometry geometry_{};  // of the last forward
  Shape out_shape_;                 // empty until the first forward
  std::vector<int32_t> argmax_;     // per output, index inside its (n, c) plane
};

// Averages over the window's real elements only (count_include_pad=False in PyTorch terms), so
// border outputs are not biased towards zero.
class AvgPool2d : public Module {
 public:
  AvgPool2d(int64_t kernel, int64_t stride = 0 /* 0 means = kernel */, int64_t padding = 0);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(geometry_, out_shape_); }

 private:
  int64_t kernel_, stride_, padding_;
  cpu::Pool2dGeometry geometry_{};
  Shape out_shape_;
};

class GlobalAvgPool2d : public Module {
 public:
  GlobalAvgPool2d() = default;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override { return "GlobalAvgPool2d"; }
  void swap_forward_state(ForwardState& s) override { s.swap(in_shape_); }

 private:
  Shape in_shape_;  // empty until the first forward
};

}  // namespace tern
