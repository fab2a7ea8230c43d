// Module and Param: the building blocks of every model, with an explicit backward pass.
// forward() caches what backward() needs; backward(dy) returns dx and accumulates into grads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/nn/forward_state.h"
#include "runtime/tensor/tensor.h"

namespace tern {

// A learnable tensor, its gradient (same shape, accumulated by backward) and whether it trains.
struct Param {
  std::string name;  // the full dotted name once collected ("features.0.weight")
  Tensor value;
  Tensor grad;
  bool trainable = true;
  // Weight decay applies to this parameter (off by convention for biases and norm scales).
  bool decay = true;

  Param() = default;
  Param(Tensor v, bool decays = true)
      : value(std::move(v)), grad(Tensor::zeros(value.shape())), decay(decays) {}
};

// A non-learnable tensor that is still part of the model's state (BatchNorm running stats).
struct Buffer {
  std::string name;
  Tensor value;
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& x) = 0;
  virtual Tensor backward(const Tensor& dy) = 0;
  // backward(dy), then the grad-ready hook (if set) once for each of this module's own params,
  // whose gradients are final for this backward pass from then on. Containers call their
  // children through this, so data-parallel training can start reducing a layer's gradients
  // while earlier layers are still in backward. A module used twice in one forward would
  // announce its params after the first of its two backward calls: not supported.
  Tensor run_backward(const Tensor& dy);
  // A short description, e.g. "Conv2d(1->32, k=3, s=1, p=1)".
  virtual std::string describe() const = 0;

  // Every parameter of this module and its children, named with dotted paths, in registration
  // order (children in order, a module's own params before its children's).
  std::vector<Param*> params();
  std::vector<Buffer*> buffers();
  void zero_grad();
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  // Calls f on this module and every descendant, depth first.
  void visit(const std::function<void(Module&)>& f);
  int64_t param_count();

  // Told that a param's gradient is final (see run_backward). Set on this module and every
  // descendant; an empty function removes it. Costs one branch per module when not set.
  using GradReadyHook = std::function<void(Param&)>;
  void set_grad_ready_hook(const GradReadyHook& hook);

  // Whether backward() must return dx. A model's first layer has nobody to hand dx to, and
  // skipping it saves a GEMM or a convolution per step; backward() then returns an undefined
  // tensor. Containers pass the setting to the child that receives their input.
  void set_input_grad(bool on);
  bool input_grad() const { return input_grad_; }

  // Pipeline parallelism keeps several micro-batches' forwards waiting for their backward on one
  // stage; between them it swaps each module's forward cache in and out of a ForwardState per
  // micro-batch (runtime/train/pipeline.h). EVERY MODULE WHOSE forward() SAVES ANYTHING FOR
  // backward() MUST OVERRIDE THIS and swap exactly those members, e.g.
  //   void swap_forward_state(ForwardState& s) override { s.swap(x_, in_shape_); }
  // (not params, grads or scratch that forward overwrites before reading; a member that must
  // stay allocated is re-created after the swap). Modules that save nothing, containers
  // included, override it with an empty body: the pipeline visits every descendant itself.
  // This default marks the state unsupported, and the pipeline then refuses the model with an
  // error naming the module, rather than computing wrong gradients.
  virtual void swap_forward_state(ForwardState& state) { state.mark_unsupported(); }

 protected:
  void register_param(const std::string& name, Param& p);
  void register_buffer(const std::string& name, Buffer& b);
  void register_child(const std::string& name, Module& m);
  void reset_children() { children_.clear(); }
  // Called when train()/eval() switches mode, for modules that must react.
  virtual void on_mode_change() {}
  virtual void on_input_grad_change() {}

 private:
  void collect(const std::string& prefix, std::vector<Param*>* ps, std::vector<Buffer*>* bs);
  bool training_ = true;
  bool input_grad_ = true;
  GradReadyHook grad_ready_;
  std::vector<std::pair<std::string, Param*>> params_;
  std::vector<std::pair<std::string, Buffer*>> buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
};

}  // namespace tern
