// Spatial pooling kernels over NCHW f32 (max, average, global average) with their gradients,
// used by the pooling modules of the CNN models; plain functions that never throw.
#pragma once

#include <cstdint>

namespace tern::cpu {

// Square windows of `kernel` with `stride` and symmetric zero `padding`, floor-mode output size
// (the PyTorch default). Callers guarantee padding < kernel, so every window holds at least one
// real (unpadded) element.
struct Pool2dGeometry {
  int64_t N, C, H, W;
  int64_t kernel, stride, padding;
  int64_t out_h() const { return (H + 2 * padding - kernel) / stride + 1; }
  int64_t out_w() const { return (W + 2 * padding - kernel) / stride + 1; }
};

// y[n, c, oh, ow] = max over the window's real elements; padded positions never win.
// argmax[n, c, oh, ow] = h * W + w of the winner inside its (n, c) plane. Ties go to the first
// element in row-major window order; a NaN wins (the last one, if several) so divergence is
// not hidden.
void max_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y, int32_t* argmax);
// dx (overwritten, [N, C, H, W]) = dy scattered to each output's argmax, summed where
// overlapping windows share a winner.
void max_pool2d_backward(const Pool2dGeometry& g, const float* dy, const int32_t* argmax, float* dx);

// y = mean over the window's real elements (padding is excluded from the count).
void avg_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y);
// dx (overwritten) = each output's dy / count spread over its window's real elements.
void avg_pool2d_backward(const Pool2dGeometry& g, const float* dy, float* dx);

// [planes, hw] -> [planes]: y[p] = mean of x[p, :]. planes = N * C, hw = H * W.
void global_avg_pool2d_forward(int64_t planes, int64_t hw, const float* x, float* y);
// dx[p, i] = dy[p] / hw (overwritten).
void global_avg_pool2d_backward(int64_t planes, int64_t hw, const float* dy, float* dx);

}  // namespace tern::cpu
