// Naive reference for cpu::Conv2dPlan: direct loops over every kernel tap, double accumulation.
// Tests and benchmarks only; the fast path must match it.
#pragma once

#include "runtime/kernels/cpu/conv.h"

namespace tern::ref {

// Same layouts and overwrite semantics as cpu::Conv2dPlan; bias and dbias may be null.
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y);
void conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx);
void conv2d_backward_weights(const Conv2dShape& s, const float* x, const float* dy, float* dw, float* dbias);

}  // namespace tern::ref
