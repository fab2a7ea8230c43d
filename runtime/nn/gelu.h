// GELU activation in GPT-2's tanh approximation, for inputs of any shape: the nonlinearity of
// gpt-tiny's MLP. Saves its input for backward (the output does not determine it).
#pragma once

#include <string>

#include "runtime/nn/module.h"

namespace tern {

class GELU : public Module {
 public:
  GELU() = default;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override { return "GELU"; }
  void swap_forward_state(ForwardState& s) override { s.swap(x_); }

 private:
  Tensor x_;
};

}  // namespace tern
