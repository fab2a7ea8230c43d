// LayerNorm (Ba et al. 2016): normalises each position's C features of an [..., C] input, then a
// per-feature affine. The pre-norm of gpt-tiny's blocks and its final norm; kernels in
// runtime/kernels/cpu/layer_norm.h.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/nn/module.h"

namespace tern {

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, float eps = 1e-5f);

  // x: f32 [..., dim]; it must stay unchanged until backward() (it is cached without a copy).
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(x_, mean_, rstd_); }

  Param weight;  // gamma, [dim], ones, not decayed
  Param bias;    // beta, [dim], zeros, not decayed

 private:
  int64_t dim_;
  float eps_;
  Tensor x_, mean_, rstd_;  // input and per-row statistics of the last forward
};

}  // namespace tern
