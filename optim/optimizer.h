// Optimizer: the interface the training loop drives (zero_grad, backward, step) for every update rule.
// It owns the per-parameter state that checkpoints save and restore bit-exactly through state().
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/nn/module.h"
#include "runtime/tensor/tensor.h"

namespace tern {

// A parameter's gradient given as entries: grad[indices[j]] += values[j] (indices into the flat
// parameter; they may repeat, and every entry counts). Compressed data-parallel training (top-k,
// DGC) produces these, and an optimizer that can applies them without densifying.
struct SparseGrad {
  std::vector<int32_t> indices;
  std::vector<float> values;
};
using SparseGrads = std::unordered_map<const Param*, SparseGrad>;

// Conventions shared by every optimizer:
//  - Params with trainable == false are skipped by step(): value and state stay untouched, and
//    their per-parameter step count does not advance (like a PyTorch param whose grad is None).
//  - Weight decay applies only to params with Param::decay == true. Biases and norm scales are
//    created with decay = false, so they are not decayed. This differs from PyTorch, whose
//    optimizers decay every parameter in a group unless the user builds separate param groups.
//  - step() reads Param::grad and never modifies it; weight decay is added to a local copy.
class Optimizer {
 public:
  explicit Optimizer(std::vector<Param*> params, float lr);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Applies one update to every trainable parameter from its current gradient.
  virtual void step() = 0;
  // Whether step(sparse) can apply sparse gradients as they are (an update that touches only the
  // given entries: no per-element state such as momentum, no weight decay).
  virtual bool supports_sparse() const { return false; }
  // Like step(), but a param found in `sparse` takes its gradient from there and its Param::grad
  // is ignored. Only when supports_sparse(); an Error otherwise.
  virtual void step(const SparseGrads& sparse);
  // Sets every parameter's gradient to zero (trainable or not, so a later unfreeze starts clean).
  void zero_grad();

  float lr() const { return lr_; }
  // Changes the learning rate used by the next step() (LR schedules call this every step).
  void set_lr(float lr);
  const std::vector<Param*>& params() const { return params_; }

  // Named state tensors, for checkpoints: "step" (i32[1], the number of step() calls), and per
  // param "<name>.step" (i32[1], updates that param received) plus the optimizer's own buffers
  // ("<name>.momentum", "<name>.exp_avg", ...). Unnamed params are called "params.<index>".
  // Every tensor exists from construction, so a checkpoint can be restored before the first
  // step by copying into these tensors.
  virtual std::vector<std::pair<std::string, Tensor*>> state();
  virtual std::string name() const = 0;
  // The number of completed step() calls.
  int64_t steps() const;

 protected:
  // The name under which param i's state is stored.
  std::string state_name(size_t i) const;
  // Checks param i's gradient and advances its own step count; returns the new count, which is
  // 1 on that param's first update (PyTorch's per-parameter state['step']).
  int64_t begin_update(size_t i);
  // Counts one completed step() call; every step() ends with it.
  void end_step();

  float lr_;

 private:
  std::vector<Param*> params_;
  Tensor steps_;                     // i32[1]
  std::vector<Tensor> param_steps_;  // i32[1] per param
};

}  // namespace tern
