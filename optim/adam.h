// Adam (L2 weight decay added to the gradient) and AdamW (decoupled weight decay), with
// PyTorch's formulas including bias correction, for the models that train better with Adam.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "optim/optimizer.h"

namespace tern {

struct AdamOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0;  // only for params with decay == true
  bool decoupled = false;  // true: AdamW's decay of the weight instead of L2 on the gradient
};

// Per parameter, with g its gradient, w its value and t its update count (1 on the first):
//   Adam:  g += weight_decay * w          AdamW: w *= 1 - lr * weight_decay
//   m += (1 - beta1) * (g - m)            v = beta2 * v + (1 - beta2) * g * g
//   w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
class Adam : public Optimizer {
 public:
  // Throws tern::Error for betas outside [0, 1), negative eps or negative weight decay.
  Adam(std::vector<Param*> params, const AdamOptions& options);

  void step() override;
  // "<name>.exp_avg" (m) and "<name>.exp_avg_sq" (v) per param, after the base class's counters.
  std::vector<std::pair<std::string, Tensor*>> state() override;
  std::string name() const override { return options_.decoupled ? "adamw" : "adam"; }
  const AdamOptions& options() const { return options_; }

 private:
  AdamOptions options_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
};

// Adam with decoupled weight decay (Loshchilov & Hutter), whatever options.decoupled says.
class AdamW : public Adam {
 public:
  AdamW(std::vector<Param*> params, AdamOptions options);
};

}  // namespace tern
