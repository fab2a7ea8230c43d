#include "runtime/nn/sequential.h"

#include <sstream>

namespace tern {

Sequential& Sequential::add(std::unique_ptr<Module> m) {
  return add(std::to_string(modules_.size()), std::move(m));
}

Sequential& Sequential::add(const std::string& name, std::unique_ptr<Module> m) {
  TERN_CHECK(m != nullptr, "Sequential::add: null module '", name, "'");
  register_child(name, *m);
  m->train(training());
  modules_.push_back(std::move(m));
  on_input_grad_change();
  return *this;
}

// Child i must return dx when the container's caller wants dx, or when some earlier child has
// trainable parameters that need the gradient (autograd's requires_grad, propagated forward).
void Sequential::on_input_grad_change() {
  bool needed = input_grad();
  for (auto& m : modules_) {
    m->set_input_grad(needed);
    if (!needed) {
      for (Param* p : m->params()) needed |= p->trainable;
    }
  }
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& m : modules_) h = m->forward(h);
  return h;
}

Tensor Sequential::backward(const Tensor& dy) {
  Tensor g = dy;
  for (auto it = modules_.rbegin(); it != modules_.rend(); ++it) g = (*it)->run_backward(g);
  return g;
}

std::string Sequential::describe() const {
  std::ostringstream out;
  out << "Sequential(";
  for (size_t i = 0; i < modules_.size(); ++i) out << (i ? ", " : "") << modules_[i]->describe();
  out << ")";
  return out.str();
}

std::vector<std::unique_ptr<Module>> Sequential::take(size_t begin, size_t end) {
  TERN_CHECK(begin <= end && end <= modules_.size(), "Sequential::take: range [", begin, ", ", end,
             ") out of ", modules_.size(), " modules");
  std::vector<std::unique_ptr<Module>> out;
  for (size_t i = begin; i < end; ++i) out.push_back(std::move(modules_[i]));
  modules_.erase(modules_.begin() + static_cast<std::ptrdiff_t>(begin),
                 modules_.begin() + static_cast<std::ptrdiff_t>(end));
  // Child registrations point at the moved modules; rebuild them from what is left.
  reset_children();
  for (size_t i = 0; i < modules_.size(); ++i) register_child(std::to_string(i), *modules_[i]);
  // The taken modules leave as a chain of their own and compute dx until told otherwise.
  for (auto& m : out) m->set_input_grad(true);
  on_input_grad_change();
  return out;
}

namespace {
// a + b elementwise into a new tensor.
Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape());
  float* o = out.f32();
  const float* ap = a.f32();
  const float* bp = b.f32();
  const int64_t n = out.numel();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = ap[i] + bp[i];
  return out;
}
}  // namespace

Residual::Residual(std::unique_ptr<Module> body, std::unique_ptr<Module> shortcut, bool relu_after)
    : body_(std::move(body)), shortcut_(std::move(shortcut)), relu_after_(relu_after) {
  TERN_CHECK(body_ != nullptr, "Residual: body must not be null");
  register_child("body", *body_);
  if (shortcut_) register_child("shortcut", *shortcut_);
}

Tensor Residual::forward(const Tensor& x) {
  Tensor y = body_->forward(x);
  Tensor s = shortcut_ ? shortcut_->forward(x) : x;
  TERN_CHECK(y.shape() == s.shape(), describe(), ": body output ", y.str(), " and shortcut ", s.str(),
             " differ");
  // A fresh output: the body's last layer may have saved its output for its own backward.
  Tensor out = add(y, s);
  if (relu_after_) {
    float* o = out.f32();
    const int64_t n = out.numel();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) o[i] = o[i] > 0.0f ? o[i] : 0.0f;
  }
  y_ = out;
  return out;
}

Tensor Residual::backward(const Tensor& dy) {
  Tensor g = dy;
  if (relu_after_) {
    g = Tensor::empty(dy.shape());
    const float* y = y_.f32();
    const float* d = dy.f32();
    float* gp = g.f32();
    const int64_t n = g.numel();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) gp[i] = y[i] > 0.0f ? d[i] : 0.0f;
  }
  Tensor dx = body_->run_backward(g);
  Tensor ds = shortcut_ ? shortcut_->run_backward(g) : g;
  if (!input_grad()) return Tensor();
  return add(dx, ds);  // fresh: dx or ds may be views of g (identity paths)
}

void Residual::on_input_grad_change() {
  body_->set_input_grad(input_grad());
  if (shortcut_) shortcut_->set_input_grad(input_grad());
}

std::string Residual::describe() const {
  return "Residual(" + body_->describe() + (shortcut_ ? ", shortcut=" + shortcut_->describe() : "") +
         (relu_after_ ? ", relu" : "") + ")";
}

}  // namespace tern
