// Naive reference for the cpu GELU kernels (runtime/kernels/cpu/gelu.h): the tanh approximation
// in double, its derivative written through sech^2 rather than 1 - tanh^2. Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

void gelu_forward(const float* x, float* y, int64_t n);
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);

}  // namespace tern::ref
