// Linear (fully connected) layer and Flatten, the classifier head of every model in the zoo.
// Linear maps [N, in] to [N, out]; Flatten views [N, ...] as [N, prod(...)] without copying.
#pragma once

#include "runtime/nn/module.h"
#include "runtime/rng.h"

namespace tern {

class Linear : public Module {
 public:
  // Weights U(-b, b), b = 1/sqrt(in) from rng (PyTorch's default scale, so learning rates tuned
  // there transfer); bias zero.
  Linear(int64_t in_features, int64_t out_features, Rng& rng, bool bias = true);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(x_); }

  Param weight;  // [out, in]
  Param bias;    // [out], undefined when constructed without bias

 private:
  int64_t in_, out_;
  Tensor x_;  // input saved for backward
};

class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override { return "Flatten"; }
  void swap_forward_state(ForwardState& s) override { s.swap(in_shape_); }

 private:
  Shape in_shape_;
};

}  // namespace tern
