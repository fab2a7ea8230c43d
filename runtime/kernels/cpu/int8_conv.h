// Batch-1 int8 convolution and linear kernels of the on-device model (issue 7): kxk convolution
// (1x1 and 3x3 in practice), in-place depthwise convolution and the fully connected layer.
//
// Layout: NHWC (one image: [h, w, c], channels innermost). At batch 1 a 1x1 convolution is then a
// plain matrix product of [h*w, c_in] pixels by the weights, every output is a contiguous dot
// product over c_in, and a pixel's channels are one cache line; it is also the layout of the
// microcontroller engines the format targets (TFLite Micro, CMSIS-NN, TinyEngine), so weights and
// buffers need no conversion on the device.
//
// Quantisation: activations are asymmetric int8 (real = s * (q - zero_point)), weights symmetric
// per output channel (real = s_w[c] * q, no zero point), biases int32 in units of s_x * s_w[c].
// Zero padding is the input zero point, so a padded tap contributes nothing and is skipped.
// The kernels never allocate, never throw and assume validated shapes; the only run-time check
// (an in-place output larger than its input) is reported by the return value.
#pragma once

#include <cstdint>

#include "runtime/kernels/cpu/requantize.h"

namespace tern::cpu {

// One image through a square-kernel convolution with symmetric zero padding; output size floors
// like PyTorch's.
struct Int8ConvShape {
  int32_t h = 1, w = 1, c_in = 1, c_out = 1;
  int32_t kernel = 1, stride = 1, pad = 0;

  int32_t out_h() const { return (h + 2 * pad - kernel) / stride + 1; }
  int32_t out_w() const { return (w + 2 * pad - kernel) / stride + 1; }
};

// A weight read row by row (one row per output channel): row oc is trained + slot[oc] * row_elems
// where slot[oc] >= 0, else frozen + oc * row_elems. On-device training keeps a partly trained
// layer's frozen rows where the model lies (flash) and only its trained rows in SRAM; the kernels
// taking one give the same results, bit for bit, as on the rows assembled into one array.
struct Int8SplitWeight {
  const int8_t* frozen = nullptr;
  const int8_t* trained = nullptr;
  const int32_t* slot = nullptr;  // [c_out]
  int64_t row_elems = 0;

  const int8_t* row(int32_t oc) const noexcept {
    const int32_t j = slot[oc];
    return j < 0 ? frozen + oc * row_elems : trained + j * row_elems;
  }
};

// A plain [c_out, row_elems] weight with the same row(oc): the kernels are written once over either.
struct Int8Rows {
  const int8_t* w = nullptr;
  int64_t row_elems = 0;
  const int8_t* row(int32_t oc) const noexcept { return w + oc * row_elems; }
};

// y [out_h, out_w, c_out] = requant(conv(x - x_zero_point, w) + bias).
// x [h, w, c_in], w [c_out, kernel, kernel, c_in] (OHWI), bias [c_out] or null. Filters of up to
// 2048 taps (kernel^2 * c_in) go through a 4 KB int16 patch on the stack, larger ones directly.
void int8_conv2d(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point, const int8_t* w,
                 const int32_t* bias, const Requant& rq, int8_t* y) noexcept;
void int8_conv2d(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point, const Int8SplitWeight& w,
                 const int32_t* bias, const Requant& rq, int8_t* y) noexcept;

// Depthwise convolution (one kxk filter per channel, c_in == c_out == c) computed IN PLACE:
// `data` holds x [h, w, c] on entry and y [out_h, out_w, c] on return (in its first
// out_h * out_w * c bytes), so the block needs one buffer instead of two. It goes one channel at a
// time: the channel's plane is copied to `scratch` (h * w bytes) and its outputs are written over
// the same channel's inputs, which nothing reads any more (output element (p, c) sits where input
// element (p, c) was, and p < out_h * out_w <= h * w). Any stride; w is [c, kernel, kernel].
// Returns false, touching nothing, when the output would be larger than the input
// (out_h * out_w > h * w, i.e. padding beyond kernel / 2).
bool int8_depthwise_conv2d_inplace(const Int8ConvShape& s, int8_t* data, int32_t x_zero_point,
                                   const int8_t* w, const int32_t* bias, const Requant& rq,
                                   int8_t* scratch) noexcept;

// y [out] = requant(w · (x - x_zero_point) + bias); x [in], w [out, in], bias [out] or null.
// Like the convolution, up to 2048 inputs use a stack patch (4 KB).
void int8_linear(const int8_t* x, int32_t x_zero_point, const int8_t* w, const int32_t* bias, int32_t in,
                 int32_t out, const Requant& rq, int8_t* y) noexcept;
void int8_linear(const int8_t* x, int32_t x_zero_point, const Int8SplitWeight& w, const int32_t* bias,
                 int32_t in, int32_t out, const Requant& rq, int8_t* y) noexcept;

// The same product without requantisation: acc [out] = w · (x - x_zero_point) + bias, for a head
// whose float logits are out_scale[c] * acc[c] (out_scale = s_x * s_w[c]).
void int8_linear_accumulate(const int8_t* x, int32_t x_zero_point, const int8_t* w, const int32_t* bias,
                            int32_t in, int32_t out, int32_t* acc) noexcept;
void int8_linear_accumulate(const int8_t* x, int32_t x_zero_point, const Int8SplitWeight& w,
                            const int32_t* bias, int32_t in, int32_t out, int32_t* acc) noexcept;

}  // namespace tern::cpu
