// Containers that compose modules: Sequential (a chain, the unit pipeline stages split) and
// Residual (y = body(x) + shortcut(x), optionally followed by ReLU), used by ResNet and MobileNetV2.
#pragma once

#include <memory>
#include <vector>

#include "runtime/nn/module.h"

namespace tern {

class Sequential : public Module {
 public:
  Sequential() = default;
  // Children are named by position ("0", "1", ...) unless a name is given.
  Sequential& add(std::unique_ptr<Module> m);
  Sequential& add(const std::string& name, std::unique_ptr<Module> m);
  template <typename M, typename... Args>
  M& emplace(Args&&... args) {
    auto m = std::make_unique<M>(std::forward<Args>(args)...);
    M& ref = *m;
    add(std::move(m));
    return ref;
  }

  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState&) override {}  // caches nothing itself

  size_t size() const { return modules_.size(); }
  Module& operator[](size_t i) { return *modules_[i]; }
  // Removes and returns the children [begin, end) in order (for pipeline stages).
  std::vector<std::unique_ptr<Module>> take(size_t begin, size_t end);

 protected:
  void on_input_grad_change() override;

 private:
  std::vector<std::unique_ptr<Module>> modules_;
};

class Residual : public Module {
 public:
  // shortcut may be null: identity. The body's output must have the shortcut's shape.
  Residual(std::unique_ptr<Module> body, std::unique_ptr<Module> shortcut, bool relu_after);

  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(y_); }

 protected:
  void on_input_grad_change() override;

 private:
  std::unique_ptr<Module> body_;
  std::unique_ptr<Module> shortcut_;
  bool relu_after_;
  Tensor y_;  // output, for the ReLU's backward
};

}  // namespace tern
