// Elementwise activation layers (ReLU, ReLU6, HSwish) for inputs of any shape. Each saves the
// one tensor its backward needs: ReLU and ReLU6 the output, HSwish the input.
#pragma once

#include <string>

#include "runtime/nn/module.h"

namespace tern {

class ReLU : public Module {
 public:
  ReLU() = default;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override { return "ReLU"; }
  void swap_forward_state(ForwardState& s) override { s.swap(y_); }

 private:
  Tensor y_;
};

class ReLU6 : public Module {
 public:
  ReLU6() = default;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override { return "ReLU6"; }
  void swap_forward_state(ForwardState& s) override { s.swap(y_); }

 private:
  Tensor y_;
};

// x * relu6(x + 3) / 6, MobileNetV3's cheap swish.
class HSwish : public Module {
 public:
  HSwish() = default;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override { return "HSwish"; }
  void swap_forward_state(ForwardState& s) override { s.swap(x_); }

 private:
  Tensor x_;
};

}  // namespace tern
