// Parameter initialisers of the transformer modules (GPT-2's scheme: normal weights with a small
// standard deviation, zero biases), shared by embedding.h, attention.h and transformer.h.
#pragma once

#include <cmath>

#include "runtime/rng.h"
#include "runtime/tensor/tensor.h"

namespace tern {

// Fills an f32 tensor with N(0, std^2) values drawn from rng in element order.
inline void fill_normal(Tensor& t, Rng& rng, float std) {
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std * rng.normal();
}

// GPT-2's standard deviation for every weight matrix, and for the projections that write into
// the residual stream: 0.02 / sqrt(2 * layers), so the stream's variance does not grow with depth.
inline constexpr float kGptInitStd = 0.02f;
inline float gpt_residual_std(int64_t layers) {
  return kGptInitStd / std::sqrt(2.0f * static_cast<float>(layers));
}

}  // namespace tern
