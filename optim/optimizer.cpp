#include "optim/optimizer.h"

#include <cmath>
#include <limits>
#include <unordered_set>

namespace tern {

namespace {

// Step counters are i32 tensors so that checkpoints store them like any other state.
int64_t read_counter(const Tensor& t) { return t.data<int32_t>()[0]; }

int64_t increment_counter(Tensor& t, const std::string& what) {
  int32_t* c = t.data<int32_t>();
  TERN_CHECK(*c < std::numeric_limits<int32_t>::max(), "optimizer: ", what, " step count overflows int32");
  return ++*c;
}

}  // namespace

Optimizer::Optimizer(std::vector<Param*> params, float lr)
    : params_(std::move(params)), steps_(Tensor::zeros({1}, DType::i32)) {
  set_lr(lr);
  std::unordered_set<const Param*> seen;
  param_steps_.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param* p = params_[i];
    TERN_CHECK(p != nullptr, "optimizer: params[", i, "] is null");
    TERN_CHECK(seen.insert(p).second, "optimizer: parameter '", state_name(i),
               "' is listed more than once; each parameter must appear once");
    TERN_CHECK(p->value.defined() && p->value.dtype() == DType::f32, "optimizer: parameter '", state_name(i),
               "' must be a defined f32 tensor, got ",
               p->value.defined() ? p->value.str() : std::string("undefined"));
    param_steps_.push_back(Tensor::zeros({1}, DType::i32));
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::zero_grad() {
  for (Param* p : params_)
    if (p->grad.defined()) p->grad.zero();
}

void Optimizer::set_lr(float lr) {
  TERN_CHECK(std::isfinite(lr) && lr >= 0, "optimizer: learning rate must be finite and >= 0, got ", lr);
  lr_ = lr;
}

std::vector<std::pair<std::string, Tensor*>> Optimizer::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  out.emplace_back("step", &steps_);
  for (size_t i = 0; i < params_.size(); ++i) out.emplace_back(state_name(i) + ".step", &param_steps_[i]);
  return out;
}

int64_t Optimizer::steps() const { return read_counter(steps_); }

std::string Optimizer::state_name(size_t i) const {
  const std::string& n = params_[i]->name;
  return n.empty() ? "params." + std::to_string(i) : n;
}

int64_t Optimizer::begin_update(size_t i) {
  const Param& p = *params_[i];
  TERN_CHECK(p.grad.defined() && p.grad.dtype() == DType::f32 && p.grad.numel() == p.value.numel(), name(),
             ": gradient of '", state_name(i), "' is ",
             p.grad.defined() ? p.grad.str() : std::string("undefined"), ", expected f32 like ",
             p.value.str());
  return increment_counter(param_steps_[i], state_name(i));
}

void Optimizer::end_step() { increment_counter(steps_, "global"); }

void Optimizer::step(const SparseGrads& sparse) {
  TERN_CHECK(sparse.empty(), name(), ": this optimizer cannot apply sparse gradients (",
             sparse.size(), " params given sparse); densify them first");
  step();
}

}  // namespace tern
