#include "runtime/nn/module.h"

namespace tern {

void Module::register_param(const std::string& name, Param& p) {
  p.name = name;
  params_.emplace_back(name, &p);
}

void Module::register_buffer(const std::string& name, Buffer& b) {
  b.name = name;
  buffers_.emplace_back(name, &b);
}

void Module::register_child(const std::string& name, Module& m) { children_.emplace_back(name, &m); }

void Module::collect(const std::string& prefix, std::vector<Param*>* ps, std::vector<Buffer*>* bs) {
  for (auto& [name, p] : params_) {
    p->name = prefix + name;
    if (ps) ps->push_back(p);
  }
  for (auto& [name, b] : buffers_) {
    b->name = prefix + name;
    if (bs) bs->push_back(b);
  }
  for (auto& [name, child] : children_) child->collect(prefix + name + ".", ps, bs);
}

std::vector<Param*> Module::params() {
  std::vector<Param*> out;
  collect("", &out, nullptr);
  return out;
}

std::vector<Buffer*> Module::buffers() {
  std::vector<Buffer*> out;
  collect("", nullptr, &out);
  return out;
}

void Module::zero_grad() {
  for (Param* p : params()) p->grad.zero();
}

void Module::train(bool on) {
  visit([on](Module& m) {
    if (m.training_ != on) {
      m.training_ = on;
      m.on_mode_change();
    }
  });
}

void Module::visit(const std::function<void(Module&)>& f) {
  f(*this);
  for (auto& [name, child] : children_) child->visit(f);
}

Tensor Module::run_backward(const Tensor& dy) {
  Tensor dx = backward(dy);
  if (grad_ready_) {
    for (auto& [name, p] : params_) grad_ready_(*p);
  }
  return dx;
}

void Module::set_grad_ready_hook(const GradReadyHook& hook) {
  visit([&hook](Module& m) { m.grad_ready_ = hook; });
}

void Module::set_input_grad(bool on) {
  input_grad_ = on;
  on_input_grad_change();
}

int64_t Module::param_count() {
  int64_t n = 0;
  for (Param* p : params()) n += p->value.numel();
  return n;
}

}  // namespace tern
