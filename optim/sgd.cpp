#include "optim/sgd.h"

#include <cmath>

#include "runtime/kernels/cpu/sparse_update.h"

namespace tern {

namespace {

// The loops are templated on whether weight decay applies, so the common no-decay case does no
// extra work and, like PyTorch, does not turn an infinite weight into NaN through 0 * inf.
template <bool kDecay>
void sgd_plain(float* __restrict w, const float* __restrict g, int64_t n, float lr, float wd) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    if constexpr (kDecay) gi += wd * w[i];
    w[i] -= lr * gi;
  }
}

template <bool kDecay, bool kNesterov>
void sgd_momentum(float* __restrict w, const float* __restrict g, float* __restrict buf, int64_t n, float lr,
                  float wd, float momentum, float keep, bool first) {
  if (first) {
    // PyTorch starts the buffer as a copy of the (decayed) gradient, without dampening.
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      float gi = g[i];
      if constexpr (kDecay) gi += wd * w[i];
      buf[i] = gi;
      if constexpr (kNesterov) gi += momentum * gi;
      w[i] -= lr * gi;
    }
    return;
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    if constexpr (kDecay) gi += wd * w[i];
    const float b = momentum * buf[i] + keep * gi;
    buf[i] = b;
    if constexpr (kNesterov)
      gi += momentum * b;
    else
      gi = b;
    w[i] -= lr * gi;
  }
}

template <bool kDecay>
void sgd_momentum_dispatch(bool nesterov, float* w, const float* g, float* buf, int64_t n, float lr, float wd,
                           float momentum, float keep, bool first) {
  if (nesterov)
    sgd_momentum<kDecay, true>(w, g, buf, n, lr, wd, momentum, keep, first);
  else
    sgd_momentum<kDecay, false>(w, g, buf, n, lr, wd, momentum, keep, first);
}

}  // namespace

Sgd::Sgd(std::vector<Param*> params, const SgdOptions& options)
    : Optimizer(std::move(params), options.lr), options_(options) {
  const SgdOptions& o = options_;
  TERN_CHECK(std::isfinite(o.momentum) && o.momentum >= 0, "sgd: momentum must be >= 0, got ", o.momentum);
  TERN_CHECK(std::isfinite(o.dampening) && o.dampening >= 0 && o.dampening <= 1,
             "sgd: dampening must be in [0, 1], got ", o.dampening);
  TERN_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "sgd: weight_decay must be >= 0, got ",
             o.weight_decay);
  TERN_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
             "sgd: nesterov momentum requires momentum > 0 and dampening == 0, got momentum ", o.momentum,
             " and dampening ", o.dampening);
  if (o.momentum != 0) {
    momentum_.reserve(this->params().size());
    for (const Param* p : this->params()) momentum_.push_back(Tensor::zeros(p->value.shape()));
  }
}

void Sgd::step() {
  const auto& ps = params();
  const float lr = lr_, momentum = options_.momentum, keep = 1 - options_.dampening;
  for (size_t i = 0; i < ps.size(); ++i) {
    Param& p = *ps[i];
    if (!p.trainable) continue;
    const bool first = begin_update(i) == 1;
    float* w = p.value.f32();
    const float* g = p.grad.f32();
    const int64_t n = p.value.numel();
    const float wd = p.decay ? options_.weight_decay : 0.0f;
    if (momentum == 0) {
      if (wd != 0)
        sgd_plain<true>(w, g, n, lr, wd);
      else
        sgd_plain<false>(w, g, n, lr, wd);
    } else {
      float* buf = momentum_[i].f32();
      if (wd != 0)
        sgd_momentum_dispatch<true>(options_.nesterov, w, g, buf, n, lr, wd, momentum, keep, first);
      else
        sgd_momentum_dispatch<false>(options_.nesterov, w, g, buf, n, lr, wd, momentum, keep, first);
    }
  }
  end_step();
}

void Sgd::step(const SparseGrads& sparse) {
  if (sparse.empty()) return step();
  TERN_CHECK(supports_sparse(), "sgd: sparse gradients need momentum 0 and weight_decay 0 (got momentum ",
             options_.momentum, ", weight_decay ", options_.weight_decay, ")");
  const auto& ps = params();
  for (size_t i = 0; i < ps.size(); ++i) {
    Param& p = *ps[i];
    if (!p.trainable) continue;
    begin_update(i);
    const auto it = sparse.find(&p);
    if (it == sparse.end()) {
      sgd_plain<false>(p.value.f32(), p.grad.f32(), p.value.numel(), lr_, 0);
      continue;
    }
    const SparseGrad& g = it->second;
    TERN_CHECK(g.indices.size() == g.values.size(), "sgd: sparse gradient of '", p.name, "' has ",
               g.indices.size(), " indices and ", g.values.size(), " values");
    cpu::sparse_axpy(p.value.f32(), g.indices.data(), g.values.data(), static_cast<int64_t>(g.indices.size()), -lr_);
  }
  end_step();
}

std::vector<std::pair<std::string, Tensor*>> Sgd::state() {
  auto out = Optimizer::state();
  for (size_t i = 0; i < momentum_.size(); ++i) out.emplace_back(state_name(i) + ".momentum", &momentum_[i]);
  return out;
}

}  // namespace tern
