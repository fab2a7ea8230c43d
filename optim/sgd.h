// Stochastic gradient descent with momentum, Nesterov momentum, dampening and weight decay.
// The update rule is exactly torch.optim.SGD's, so training curves can be compared with PyTorch.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "optim/optimizer.h"

namespace tern {

struct SgdOptions {
  float lr = 0.1f;
  float momentum = 0;
  float dampening = 0;
  bool nesterov = false;
  float weight_decay = 0;  // L2, added to the gradient; only for params with decay == true
};

// Per parameter, with g its gradient and w its value (PyTorch's rule):
//   g += weight_decay * w                        (if decay applies)
//   buf = g on the param's first update, else buf = momentum * buf + (1 - dampening) * g
//   g = nesterov ? g + momentum * buf : buf     (when momentum != 0)
//   w -= lr * g
class Sgd : public Optimizer {
 public:
  // Throws tern::Error for negative or non-finite options, and for nesterov without momentum
  // or with dampening.
  Sgd(std::vector<Param*> params, const SgdOptions& options);

  void step() override;
  // Plain SGD (no momentum, no weight decay) updates only the given entries: w[i] -= lr * g[i].
  bool supports_sparse() const override { return options_.momentum == 0 && options_.weight_decay == 0; }
  void step(const SparseGrads& sparse) override;
  std::vector<std::pair<std::string, Tensor*>> state() override;
  std::string name() const override { return "sgd"; }
  const SgdOptions& options() const { return options_; }

 private:
  SgdOptions options_;
  std::vector<Tensor> momentum_;  // one per param when momentum != 0, else empty
};

}  // namespace tern
