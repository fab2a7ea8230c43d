#include "optim/adam.h"

#include <cmath>

namespace tern {

namespace {

enum class Decay { none, l2, decoupled };

// One fused pass over w, g, m, v. The scalars are precomputed per parameter in double, as
// PyTorch computes them from Python floats. GCC vectorises this loop only under
// -fno-math-errno: otherwise sqrt keeps a branch to set errno for v < 0 (which cannot happen).
template <Decay kDecay>
void adam_update(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v,
                 int64_t n, float beta1, float beta2, float eps, float wd, float keep, float step_size,
                 float bias_correction2_sqrt) {
  const float one_minus_beta1 = 1 - beta1, one_minus_beta2 = 1 - beta2;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    float wi = w[i];
    if constexpr (kDecay == Decay::l2) gi += wd * wi;
    if constexpr (kDecay == Decay::decoupled) wi *= keep;
    const float mi = m[i] + one_minus_beta1 * (gi - m[i]);
    const float vi = beta2 * v[i] + one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
    w[i] = wi - step_size * mi / denom;
  }
}

AdamOptions with_decoupled(AdamOptions o) {
  o.decoupled = true;
  return o;
}

}  // namespace

Adam::Adam(std::vector<Param*> params, const AdamOptions& options)
    : Optimizer(std::move(params), options.lr), options_(options) {
  const AdamOptions& o = options_;
  const char* who = o.decoupled ? "adamw" : "adam";  // name() is not virtual yet in a constructor
  TERN_CHECK(std::isfinite(o.beta1) && o.beta1 >= 0 && o.beta1 < 1, who, ": beta1 must be in [0, 1), got ",
             o.beta1);
  TERN_CHECK(std::isfinite(o.beta2) && o.beta2 >= 0 && o.beta2 < 1, who, ": beta2 must be in [0, 1), got ",
             o.beta2);
  TERN_CHECK(std::isfinite(o.eps) && o.eps >= 0, who, ": eps must be >= 0, got ", o.eps);
  TERN_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, who, ": weight_decay must be >= 0, got ",
             o.weight_decay);
  exp_avg_.reserve(this->params().size());
  exp_avg_sq_.reserve(this->params().size());
  for (const Param* p : this->params()) {
    exp_avg_.push_back(Tensor::zeros(p->value.shape()));
    exp_avg_sq_.push_back(Tensor::zeros(p->value.shape()));
  }
}

void Adam::step() {
  const auto& ps = params();
  const AdamOptions& o = options_;
  for (size_t i = 0; i < ps.size(); ++i) {
    Param& p = *ps[i];
    if (!p.trainable) continue;
    const double t = static_cast<double>(begin_update(i));
    const double bias_correction1 = 1 - std::pow(static_cast<double>(o.beta1), t);
    const double bias_correction2 = 1 - std::pow(static_cast<double>(o.beta2), t);
    const float step_size = static_cast<float>(lr_ / bias_correction1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
    const float wd = p.decay ? o.weight_decay : 0.0f;
    const float keep = static_cast<float>(1 - static_cast<double>(lr_) * wd);
    float* w = p.value.f32();
    const float* g = p.grad.f32();
    float* m = exp_avg_[i].f32();
    float* v = exp_avg_sq_[i].f32();
    const int64_t n = p.value.numel();
    if (wd == 0)
      adam_update<Decay::none>(w, g, m, v, n, o.beta1, o.beta2, o.eps, wd, keep, step_size, bc2_sqrt);
    else if (o.decoupled)
      adam_update<Decay::decoupled>(w, g, m, v, n, o.beta1, o.beta2, o.eps, wd, keep, step_size, bc2_sqrt);
    else
      adam_update<Decay::l2>(w, g, m, v, n, o.beta1, o.beta2, o.eps, wd, keep, step_size, bc2_sqrt);
  }
  end_step();
}

std::vector<std::pair<std::string, Tensor*>> Adam::state() {
  auto out = Optimizer::state();
  for (size_t i = 0; i < exp_avg_.size(); ++i) {
    out.emplace_back(state_name(i) + ".exp_avg", &exp_avg_[i]);
    out.emplace_back(state_name(i) + ".exp_avg_sq", &exp_avg_sq_[i]);
  }
  return out;
}

AdamW::AdamW(std::vector<Param*> params, AdamOptions options)
    : Adam(std::move(params), with_decoupled(options)) {}

}  // namespace tern
