// Naive references for cpu pooling kernels: every window position visited, padding tested
// explicitly, gradients gathered per input instead of scattered per output. Tests only.
#pragma once

#include <cstdint>

#include "runtime/kernels/cpu/pool.h"

namespace tern::ref {

using cpu::Pool2dGeometry;

void max_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y, int32_t* argmax);
void max_pool2d_backward(const Pool2dGeometry& g, const float* dy, const int32_t* argmax, float* dx);
void avg_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y);
void avg_pool2d_backward(const Pool2dGeometry& g, const float* dy, float* dx);
void global_avg_pool2d_forward(int64_t planes, int64_t hw, const float* x, float* y);
void global_avg_pool2d_backward(int64_t planes, int64_t hw, const float* dy, float* dx);

}  // namespace tern::ref
