// Dropout: inverted dropout for regularising the MLP/CNN heads. In training each forward draws a
// fresh mask from the module's own seeded Rng; in eval mode it is the identity.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/nn/module.h"
#include "runtime/rng.h"

namespace tern {

class Dropout : public Module {
 public:
  // p in [0, 1): the probability of zeroing an element; kept ones are scaled by 1 / (1 - p), so
  // eval needs no rescaling. p = 0 is the identity and draws nothing from the generator. As the
  // identity (eval, or p = 0) forward returns x itself and backward dy itself, without copying.
  Dropout(float p, uint64_t seed);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(mask_, masked_, ran_, shape_); }

  float p() const { return p_; }

 private:
  float p_;
  Rng rng_;
  Tensor mask_;          // 0 or 1 / (1 - p) per element, from the last masked forward
  bool masked_ = false;  // whether the last forward applied mask_ (training and p > 0)
  bool ran_ = false;     // a forward has run, so backward has a shape to check against
  Shape shape_;          // of the last forward's input
};

}  // namespace tern
