// Naive references for the cpu activation kernels, written piecewise with branches in double,
// straight from the definitions. Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

void relu_forward(const float* x, float* y, int64_t n);
void relu_backward(const float* y, const float* dy, float* dx, int64_t n);
void relu6_forward(const float* x, float* y, int64_t n);
void relu6_backward(const float* y, const float* dy, float* dx, int64_t n);
void hswish_forward(const float* x, float* y, int64_t n);
void hswish_backward(const float* x, const float* dy, float* dx, int64_t n);

}  // namespace tern::ref
