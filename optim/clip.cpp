#include "optim/clip.h"

#include <cmath>

namespace tern {

namespace {

double sum_of_squares(const float* __restrict g, int64_t n) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    const double x = g[i];
    acc += x * x;
  }
  return acc;
}

void scale(float* __restrict g, int64_t n, float factor) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) g[i] *= factor;
}

}  // namespace

float clip_grad_norm(const std::vector<Param*>& params, float max_norm) {
  TERN_CHECK(std::isfinite(max_norm) && max_norm > 0, "clip_grad_norm: max_norm must be finite and > 0, got ",
             max_norm);
  double total = 0;
  for (const Param* p : params) {
    if (!p->trainable || !p->grad.defined()) continue;
    total += sum_of_squares(p->grad.f32(), p->grad.numel());
  }
  const double norm = std::sqrt(total);
  if (!std::isfinite(norm)) {
    std::string culprit = "(none found: the sum of squares overflowed)";
    for (const Param* p : params) {
      if (!p->trainable || !p->grad.defined()) continue;
      if (!std::isfinite(sum_of_squares(p->grad.f32(), p->grad.numel()))) {
        culprit = "'" + (p->name.empty() ? std::string("<unnamed>") : p->name) + "' " + p->grad.str();
        break;
      }
    }
    throw Error(detail::concat("clip_grad_norm: gradient norm is ", norm, "; first non-finite gradient: ",
                               culprit, " (lower the learning rate or check the loss for NaN)"));
  }
  if (norm > max_norm) {
    const float factor = static_cast<float>(max_norm / (norm + 1e-6));
    for (Param* p : params) {
      if (!p->trainable || !p->grad.defined()) continue;
      scale(p->grad.f32(), p->grad.numel(), factor);
    }
  }
  return static_cast<float>(norm);
}

}  // namespace tern
