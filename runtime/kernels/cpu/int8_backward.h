// The f32 backward pieces of on-device training (issue 7): the forward runs in int8
// (cpu/int8_conv.h), and the parts that train get f32 gradients from the saved int8 activations,
// as in tiny-training. Layouts are those of the forward (NHWC, batch 1); dy and dx are f32.
//
// Gradients are with respect to the REAL values: weights s_w[c] * w_q, inputs s_x * (x_q - zx).
// The gradient of a frozen weight is never asked for; for a partly trained layer only the chosen
// output channels' weight rows are computed (sparse update), and cpu::sparse_rows_sgd
// (cpu/sparse_update.h) applies them in place. Like the forward kernels these never allocate or
// throw and assume validated shapes; every output is OVERWRITTEN.
#pragma once

#include <cstdint>

#include "runtime/kernels/cpu/int8_conv.h"

namespace tern::cpu {

// db[c] = sum over pixels of dy[p, c]; dy [pixels, c]. A linear layer is pixels = 1.
void bias_grad(const float* dy, int64_t pixels, int64_t c, float* db) noexcept;

// Weight gradient of a kxk convolution for the output channels channels[0..k) only:
// dw[j, kh, kw, ic] = sum over output pixels of dy[oh, ow, channels[j]] * x_scale *
// (x[ih, iw, ic] - x_zero_point). x [h, w, c_in] int8, dy [out_h, out_w, c_out], dw [k, kernel,
// kernel, c_in] (rows in the weight's OHWI layout, ready for sparse_rows_sgd with cols =
// kernel * kernel * c_in). Channels must be in [0, c_out); they may come in any order.
void conv2d_weight_grad_channels(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point, float x_scale,
                                 const float* dy, const int32_t* channels, int32_t k, float* dw) noexcept;

// The same for a depthwise convolution (c_in == c_out): dw [k, kernel, kernel].
void depthwise_weight_grad_channels(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point,
                                    float x_scale, const float* dy, const int32_t* channels, int32_t k,
                                    float* dw) noexcept;

// The same for a linear layer: dw[j, i] = dy[channels[j]] * x_scale * (x[i] - x_zero_point), dw [k, in].
void linear_weight_grad_channels(const int8_t* x, int32_t x_zero_point, float x_scale, int32_t in,
                                 const float* dy, const int32_t* channels, int32_t k, float* dw) noexcept;

// Input gradients through an int8 layer, so the gradient reaches the trained layers below a
// frozen one: dx = d(sum(y * dy)) / dx with the real weights s_w[c] * w_q (w_scale [c_out]).
// conv: dx [h, w, c_in], w [c_out, kernel, kernel, c_in]; depthwise: dx [h, w, c], w [c, kernel,
// kernel]; linear: dx [in], w [out, in].
void conv2d_input_grad(const Int8ConvShape& s, const float* dy, const int8_t* w, const float* w_scale,
                       float* dx) noexcept;
void depthwise_input_grad(const Int8ConvShape& s, const float* dy, const int8_t* w, const float* w_scale,
                          float* dx) noexcept;
void linear_input_grad(const float* dy, const int8_t* w, const float* w_scale, int32_t in, int32_t out,
                       float* dx) noexcept;
// The same with the weight's rows in two places (a partly trained layer on a device).
void conv2d_input_grad(const Int8ConvShape& s, const float* dy, const Int8SplitWeight& w, const float* w_scale,
                       float* dx) noexcept;
void linear_input_grad(const float* dy, const Int8SplitWeight& w, const float* w_scale, int32_t in, int32_t out,
                       float* dx) noexcept;

// A 1x1 convolution's input gradient a group of channels at a time, for a backward that crosses an
// inverted-residual block without holding its hidden gradients whole (ondevice/step_executor.cpp). s is
// the whole layer's shape (kernel 1, stride 1, pad 0), dy / dx its gradients or a group of them:
// _columns writes dx [pixels, count], input channels c0 .. c0 + count of the input gradient (dy whole);
// _add adds to dx [pixels, c_in] the share of output channels c0 .. c0 + count, dy [pixels, count].
// Every element takes its terms in the order conv2d_input_grad takes them: groups in increasing order,
// added into a zeroed dx, give its result bit for bit.
void pointwise_input_grad_columns(const Int8ConvShape& s, const float* dy, const int8_t* w,
                                  const float* w_scale, int32_t c0, int32_t count, float* dx) noexcept;
void pointwise_input_grad_columns(const Int8ConvShape& s, const float* dy, const Int8SplitWeight& w,
                                  const float* w_scale, int32_t c0, int32_t count, float* dx) noexcept;
void pointwise_input_grad_add(const Int8ConvShape& s, const float* dy, const int8_t* w, const float* w_scale,
                              int32_t c0, int32_t count, float* dx) noexcept;
void pointwise_input_grad_add(const Int8ConvShape& s, const float* dy, const Int8SplitWeight& w,
                              const float* w_scale, int32_t c0, int32_t count, float* dx) noexcept;

// The backward of the clamp that ends every int8 layer (a fused ReLU or ReLU6, or saturation):
// the gradient passes where the int8 output lies strictly inside (act_min, act_max) and is zero
// where it was clamped (or sits on a ReLU's zero, PyTorch's relu'(0) = 0). As a bit mask, one bit
// per element (LSB first), so the backward saves n / 8 bytes instead of the output.
void clamp_mask_bits(const int8_t* y, int64_t n, int32_t act_min, int32_t act_max, uint8_t* bits) noexcept;
// dy[i] = 0 where bit i is clear (in place).
void apply_mask_bits(const uint8_t* bits, int64_t n, float* dy) noexcept;
// The same for channels c0 .. c0 + count of a [pixels, c] tensor whose gradient group is dy [pixels, count].
void apply_mask_bits_columns(const uint8_t* bits, int64_t pixels, int64_t c, int64_t c0, int64_t count,
                             float* dy) noexcept;

}  // namespace tern::cpu
