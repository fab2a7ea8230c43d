// Naive reference for cpu::linear_*: loops in double. Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                    int64_t out);
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     int64_t n, int64_t in, int64_t out);

}  // namespace tern::ref
