// Elementwise activation kernels (ReLU, ReLU6, h-swish) and their gradients over flat f32 arrays,
// used by the activation modules; any shape is just n elements. Plain functions, never throw.
#pragma once

#include <cstdint>

namespace tern::cpu {

// In every function the output may alias an input of the same role (y with x, dx with dy), so
// callers may run them in place.

// y = max(x, 0).
void relu_forward(const float* x, float* y, int64_t n);
// dx = dy where y > 0, else 0. Takes the saved output, so the input need not be kept; the
// derivative at x = 0 is 0 (as in PyTorch).
void relu_backward(const float* y, const float* dy, float* dx, int64_t n);

// y = min(max(x, 0), 6).
void relu6_forward(const float* x, float* y, int64_t n);
// dx = dy where 0 < y < 6, else 0: the derivative at both kinks (x = 0, x = 6) is 0.
void relu6_backward(const float* y, const float* dy, float* dx, int64_t n);

// y = x * relu6(x + 3) / 6 (MobileNetV3's h-swish).
void hswish_forward(const float* x, float* y, int64_t n);
// dx = dy * (0 for x < -3; (2x + 3) / 6 for -3 <= x <= 3; 1 for x > 3). Needs the input: the
// output does not determine x. At the kinks the middle piece's value is used (as PyTorch does):
// -0.5 at x = -3 (the right-sided derivative) and 1.5 at x = 3 (the left-sided one).
void hswish_backward(const float* x, const float* dy, float* dx, int64_t n);

}  // namespace tern::cpu
