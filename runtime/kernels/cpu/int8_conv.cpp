#include "runtime/kernels/cpu/int8_conv.h"

namespace tern::cpu {

namespace {

// sum_i (x[i] - zx) * w[i] in int32: |x - zx| <= 255 and |w| <= 127, so a dot product of up to
// 66,000 terms cannot overflow. The path for filters too large for a stack patch.
inline int32_t dot_shifted(const int8_t* x, int32_t zx, const int8_t* w, int32_t n) noexcept {
  int32_t acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int32_t i = 0; i < n; ++i) acc += (static_cast<int32_t>(x[i]) - zx) * static_cast<int32_t>(w[i]);
  return acc;
}

// The fast path gathers one output's receptive field, zero point already subtracted, into an
// int16 patch on the stack (x - zx fits int16, and so does its product with an int8 weight, so
// the compiler emits 16-bit multiply-adds), then takes its dot product with four filters at a
// time, so each patch load feeds four accumulators: 2-3x faster than one filter at a time at the
// channel counts of small MobileNets. Padded taps are zeros in the patch.
constexpr int32_t kMaxPatch = 2048;  // 4 KB of stack


// emit(oc, acc) for acc = bias[oc] + patch . w[oc, :], every output channel.
template <typename Rows, typename Emit>
inline void filters_times_patch(const int16_t* patch, int32_t n, const Rows& w, const int32_t* bias,
                                int32_t c_out, Emit&& emit) noexcept {
  int32_t oc = 0;
  for (; oc + 4 <= c_out; oc += 4) {
    const int8_t *w0 = w.row(oc), *w1 = w.row(oc + 1), *w2 = w.row(oc + 2), *w3 = w.row(oc + 3);
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int32_t i = 0; i < n; ++i) {
      const int32_t v = patch[i];
      a0 += v * w0[i];
      a1 += v * w1[i];
      a2 += v * w2[i];
      a3 += v * w3[i];
    }
    emit(oc, a0 + (bias ? bias[oc] : 0));
    emit(oc + 1, a1 + (bias ? bias[oc + 1] : 0));
    emit(oc + 2, a2 + (bias ? bias[oc + 2] : 0));
    emit(oc + 3, a3 + (bias ? bias[oc + 3] : 0));
  }
  for (; oc < c_out; ++oc) {
    const int8_t* wr = w.row(oc);
    int32_t a = 0;
#pragma omp simd reduction(+ : a)
    for (int32_t i = 0; i < n; ++i) a += static_cast<int32_t>(patch[i]) * wr[i];
    emit(oc, a + (bias ? bias[oc] : 0));
  }
}

inline void shifted_copy(const int8_t* x, int32_t zx, int32_t n, int16_t* out) noexcept {
#pragma omp simd
  for (int32_t i = 0; i < n; ++i) out[i] = static_cast<int16_t>(static_cast<int32_t>(x[i]) - zx);
}

// The receptive field of the output whose window starts at (ih0, iw0), zero point subtracted, into
// patch [k, k, c_in]; taps in the padding are zeros.
inline void gather_patch(const Int8ConvShape& s, const int8_t* x, int32_t zx, int32_t ih0, int32_t iw0,
                         int16_t* patch) noexcept {
  const int32_t k = s.kernel, ci = s.c_in;
  for (int32_t kh = 0; kh < k; ++kh) {
    const int32_t ih = ih0 + kh;
    int16_t* prow = patch + kh * k * ci;
    if (ih < 0 || ih >= s.h) {
      for (int32_t i = 0; i < k * ci; ++i) prow[i] = 0;
      continue;
    }
    // The row's taps inside the image are adjacent pixels: one contiguous run of channels.
    const int32_t kw_lo = iw0 < 0 ? -iw0 : 0, kw_hi = iw0 + k > s.w ? s.w - iw0 : k;
    for (int32_t i = 0; i < kw_lo * ci; ++i) prow[i] = 0;
    shifted_copy(x + (static_cast<int64_t>(ih) * s.w + iw0 + kw_lo) * ci, zx, (kw_hi - kw_lo) * ci,
                 prow + kw_lo * ci);
    for (int32_t i = kw_hi * ci; i < k * ci; ++i) prow[i] = 0;
  }
}

// Any filter of at most kMaxPatch taps.
template <typename Rows>
void conv_patches(const Int8ConvShape& s, const int8_t* x, int32_t zx, const Rows& w, const int32_t* bias,
                  const Requant& rq, int8_t* y) noexcept {
  int16_t patch[kMaxPatch];
  const int32_t oh_n = s.out_h(), ow_n = s.out_w(), k = s.kernel, ci = s.c_in;
  const int32_t n = k * k * ci;
  for (int32_t oh = 0; oh < oh_n; ++oh) {
    const int32_t ih0 = oh * s.stride - s.pad;
    for (int32_t ow = 0; ow < ow_n; ++ow) {
      const int32_t iw0 = ow * s.stride - s.pad;
      gather_patch(s, x, zx, ih0, iw0, patch);
      int8_t* yp = y + (static_cast<int64_t>(oh) * ow_n + ow) * s.c_out;
      filters_times_patch(patch, n, w, bias, s.c_out, [&](int32_t oc, int32_t acc) {
        yp[oc] = requantize(acc, rq.multiplier[oc], rq.shift[oc], rq);
      });
    }
  }
}

// Filters of at most kMaxBlockedTaps taps go 16 output channels at a time: that block's weights
// are first laid out tap-major (w[i][j], j the channel in the block), so each output pixel's 16
// sums grow as one vector per tap — no horizontal reduction per output, which is what a dot
// product of a short filter (mcunet's 1x1 convs have 8-48 input channels) mostly spends its time
// on. Exact integer sums either way. A 1x1 convolution without padding reads the input pixel in
// place; others gather its receptive field into a patch as conv_patches does.
constexpr int32_t kOcBlock = 16;
constexpr int32_t kMaxBlockedTaps = 256;  // a 4 KB int8 table, as conv_patches' stack patch
// Longer filters amortise the reduction, and conv_patches' 16-bit multiply-adds (two taps per
// lane) then win: mcunet's 64-240-channel projections ran 1.1-1.8x slower here blocked, its
// 1-48-tap convolutions 2.2-3.5x faster.
constexpr int32_t kBlockedTapsLimit = 48;
static_assert(kBlockedTapsLimit <= kMaxBlockedTaps);

template <typename Rows>
void conv_oc_blocks(const Int8ConvShape& s, const int8_t* x, int32_t zx, const Rows& w, const int32_t* bias,
                    const Requant& rq, int8_t* y) noexcept {
  int8_t table[kMaxBlockedTaps * kOcBlock];
  int16_t patch[kMaxBlockedTaps];
  const int32_t oh_n = s.out_h(), ow_n = s.out_w(), k = s.kernel, ci = s.c_in;
  const int32_t n = k * k * ci;
  const bool direct = k == 1 && s.pad == 0;
  for (int32_t oc0 = 0; oc0 < s.c_out; oc0 += kOcBlock) {
    const int32_t cb = s.c_out - oc0 < kOcBlock ? s.c_out - oc0 : kOcBlock;
    for (int32_t i = 0; i < n; ++i) {
      for (int32_t j = 0; j < kOcBlock; ++j)
        table[i * kOcBlock + j] = j < cb ? w.row(oc0 + j)[i] : int8_t{0};
    }
    for (int32_t oh = 0; oh < oh_n; ++oh) {
      const int32_t ih0 = oh * s.stride - s.pad;
      for (int32_t ow = 0; ow < ow_n; ++ow) {
        const int32_t iw0 = ow * s.stride - s.pad;
        int32_t acc[kOcBlock];
        for (int32_t j = 0; j < kOcBlock; ++j) acc[j] = bias && j < cb ? bias[oc0 + j] : 0;
        if (direct) {
          const int8_t* xp = x + (static_cast<int64_t>(ih0) * s.w + iw0) * ci;
          for (int32_t i = 0; i < n; ++i) {
            const int32_t v = static_cast<int32_t>(xp[i]) - zx;
            const int8_t* wt = table + i * kOcBlock;
#pragma omp simd
            for (int32_t j = 0; j < kOcBlock; ++j) acc[j] += v * wt[j];
          }
        } else {
          gather_patch(s, x, zx, ih0, iw0, patch);
          for (int32_t i = 0; i < n; ++i) {
            const int32_t v = patch[i];
            const int8_t* wt = table + i * kOcBlock;
#pragma omp simd
            for (int32_t j = 0; j < kOcBlock; ++j) acc[j] += v * wt[j];
          }
        }
        int8_t* yp = y + (static_cast<int64_t>(oh) * ow_n + ow) * s.c_out + oc0;
        for (int32_t j = 0; j < cb; ++j) yp[j] = requantize(acc[j], rq.multiplier[oc0 + j], rq.shift[oc0 + j], rq);
      }
    }
  }
}

template <typename Rows>
void conv2d(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point, const Rows& w, const int32_t* bias,
            const Requant& rq, int8_t* y) noexcept {
  if (int64_t{s.kernel} * s.kernel * s.c_in <= kBlockedTapsLimit) {
    conv_oc_blocks(s, x, x_zero_point, w, bias, rq, y);
    return;
  }
  if (int64_t{s.kernel} * s.kernel * s.c_in <= kMaxPatch) {
    conv_patches(s, x, x_zero_point, w, bias, rq, y);
    return;
  }
  const int32_t oh_n = s.out_h(), ow_n = s.out_w(), k = s.kernel;
  for (int32_t oh = 0; oh < oh_n; ++oh) {
    // The window's rows and columns inside the image; padded taps add zero and are skipped.
    const int32_t ih0 = oh * s.stride - s.pad;
    const int32_t kh_lo = ih0 < 0 ? -ih0 : 0, kh_hi = ih0 + k > s.h ? s.h - ih0 : k;
    for (int32_t ow = 0; ow < ow_n; ++ow) {
      const int32_t iw0 = ow * s.stride - s.pad;
      const int32_t kw_lo = iw0 < 0 ? -iw0 : 0, kw_hi = iw0 + k > s.w ? s.w - iw0 : k;
      int8_t* yp = y + (static_cast<int64_t>(oh) * ow_n + ow) * s.c_out;
      for (int32_t oc = 0; oc < s.c_out; ++oc) {
        const int8_t* wf = w.row(oc);
        int32_t acc = bias ? bias[oc] : 0;
        for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
          const int8_t* xrow = x + (static_cast<int64_t>(ih0 + kh) * s.w + iw0) * s.c_in;
          const int8_t* wrow = wf + static_cast<int64_t>(kh) * k * s.c_in;
          // Taps kw_lo..kw_hi of one row are adjacent pixels, so their channels are contiguous.
          acc += dot_shifted(xrow + static_cast<int64_t>(kw_lo) * s.c_in, x_zero_point,
                             wrow + static_cast<int64_t>(kw_lo) * s.c_in, (kw_hi - kw_lo) * s.c_in);
        }
        yp[oc] = requantize(acc, rq.multiplier[oc], rq.shift[oc], rq);
      }
    }
  }
}

template <typename Rows, typename Emit>
void linear(const int8_t* x, int32_t x_zero_point, const Rows& w, const int32_t* bias, int32_t in, int32_t out,
            Emit&& emit) noexcept {
  if (in <= kMaxPatch) {
    int16_t patch[kMaxPatch];
    shifted_copy(x, x_zero_point, in, patch);
    filters_times_patch(patch, in, w, bias, out, emit);
    return;
  }
  for (int32_t o = 0; o < out; ++o) emit(o, (bias ? bias[o] : 0) + dot_shifted(x, x_zero_point, w.row(o), in));
}

}  // namespace

void int8_conv2d(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point, const int8_t* w,
                 const int32_t* bias, const Requant& rq, int8_t* y) noexcept {
  conv2d(s, x, x_zero_point, Int8Rows{w, int64_t{s.kernel} * s.kernel * s.c_in}, bias, rq, y);
}

void int8_conv2d(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point, const Int8SplitWeight& w,
                 const int32_t* bias, const Requant& rq, int8_t* y) noexcept {
  conv2d(s, x, x_zero_point, w, bias, rq, y);
}

// One channel at a time (its plane copied to scratch, so its outputs may overwrite the input), an
// output row at a time in blocks of kDwRow pixels: for each tap, the pixels it reaches inside the
// image form one run, so the accumulation is a vector loop over output pixels instead of a scalar
// one over a pixel's taps (1.3-1.8x faster on 14- and 28-pixel rows; shorter rows keep that loop).
constexpr int32_t kDwRow = 64;
constexpr int32_t kDwRowMin = 12;  // measured: 14-pixel rows gain 1.3x, 7-pixel rows lose 1.2-1.6x

// Small planes (mcunet's 4x4 to 14x14 layers of 64-240 channels) go kDwChannels channels at a
// time instead, vectorised across them: the block's whole output is computed into a stack buffer
// from the untouched input, then written over it. A channel at a time, such a plane is too short
// for any loop to pay for itself.
constexpr int32_t kDwChannels = 16;
constexpr int32_t kDwStackOut = 4096;  // bytes of output held back: out_h * out_w * kDwChannels
constexpr int32_t kDwStackTaps = 49;   // 7x7: a 784-byte weight table

void depthwise_channel_blocks(const Int8ConvShape& s, int8_t* data, int32_t zx, const int8_t* w,
                              const int32_t* bias, const Requant& rq) noexcept {
  const int32_t oh_n = s.out_h(), ow_n = s.out_w(), k = s.kernel, c_n = s.c_out, st = s.stride;
  int8_t table[kDwStackTaps * kDwChannels];
  int8_t out[kDwStackOut];
  for (int32_t c0 = 0; c0 < c_n; c0 += kDwChannels) {
    const int32_t cb = c_n - c0 < kDwChannels ? c_n - c0 : kDwChannels;
    for (int32_t tap = 0; tap < k * k; ++tap) {
      for (int32_t j = 0; j < kDwChannels; ++j)
        table[tap * kDwChannels + j] = j < cb ? w[static_cast<int64_t>(c0 + j) * k * k + tap] : int8_t{0};
    }
    for (int32_t oh = 0; oh < oh_n; ++oh) {
      const int32_t ih0 = oh * st - s.pad;
      const int32_t kh_lo = ih0 < 0 ? -ih0 : 0, kh_hi = ih0 + k > s.h ? s.h - ih0 : k;
      for (int32_t ow = 0; ow < ow_n; ++ow) {
        const int32_t iw0 = ow * st - s.pad;
        const int32_t kw_lo = iw0 < 0 ? -iw0 : 0, kw_hi = iw0 + k > s.w ? s.w - iw0 : k;
        int32_t acc[kDwChannels];
        for (int32_t j = 0; j < kDwChannels; ++j) acc[j] = bias && j < cb ? bias[c0 + j] : 0;
        for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
          for (int32_t kw = kw_lo; kw < kw_hi; ++kw) {
            const int8_t* x = data + (static_cast<int64_t>(ih0 + kh) * s.w + iw0 + kw) * c_n + c0;
            const int8_t* wt = table + (kh * k + kw) * kDwChannels;
            if (cb == kDwChannels) {
#pragma omp simd
              for (int32_t j = 0; j < kDwChannels; ++j) acc[j] += (static_cast<int32_t>(x[j]) - zx) * wt[j];
            } else {
              for (int32_t j = 0; j < cb; ++j) acc[j] += (static_cast<int32_t>(x[j]) - zx) * wt[j];
            }
          }
        }
        int8_t* o = out + (oh * ow_n + ow) * kDwChannels;
        for (int32_t j = 0; j < cb; ++j) o[j] = requantize(acc[j], rq.multiplier[c0 + j], rq.shift[c0 + j], rq);
      }
    }
    for (int32_t p = 0; p < oh_n * ow_n; ++p) {
      for (int32_t j = 0; j < cb; ++j) data[static_cast<int64_t>(p) * c_n + c0 + j] = out[p * kDwChannels + j];
    }
  }
}

bool int8_depthwise_conv2d_inplace(const Int8ConvShape& s, int8_t* data, int32_t x_zero_point,
                                   const int8_t* w, const int32_t* bias, const Requant& rq,
                                   int8_t* scratch) noexcept {
  const int32_t oh_n = s.out_h(), ow_n = s.out_w(), k = s.kernel, c_n = s.c_out, st = s.stride;
  if (static_cast<int64_t>(oh_n) * ow_n > static_cast<int64_t>(s.h) * s.w) return false;
  if (static_cast<int64_t>(oh_n) * ow_n * kDwChannels <= kDwStackOut && k * k <= kDwStackTaps && c_n > 1) {
    depthwise_channel_blocks(s, data, x_zero_point, w, bias, rq);
    return true;
  }
  const int32_t plane = s.h * s.w;
  int32_t acc[kDwRow];
  for (int32_t c = 0; c < c_n; ++c) {
    for (int32_t i = 0; i < plane; ++i) scratch[i] = data[static_cast<int64_t>(i) * c_n + c];
    const int8_t* wc = w + static_cast<int64_t>(c) * k * k;
    const int32_t b = bias ? bias[c] : 0;
    for (int32_t oh = 0; oh < oh_n; ++oh) {
      const int32_t ih0 = oh * st - s.pad;
      const int32_t kh_lo = ih0 < 0 ? -ih0 : 0, kh_hi = ih0 + k > s.h ? s.h - ih0 : k;
      if (ow_n < kDwRowMin) {  // short rows: the run bookkeeping would cost more than it saves
        for (int32_t ow = 0; ow < ow_n; ++ow) {
          const int32_t iw0 = ow * st - s.pad;
          const int32_t kw_lo = iw0 < 0 ? -iw0 : 0, kw_hi = iw0 + k > s.w ? s.w - iw0 : k;
          int32_t sum = b;
          for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
            const int8_t* row = scratch + (ih0 + kh) * s.w + iw0;
            const int8_t* wrow = wc + kh * k;
            for (int32_t kw = kw_lo; kw < kw_hi; ++kw)
              sum += (static_cast<int32_t>(row[kw]) - x_zero_point) * static_cast<int32_t>(wrow[kw]);
          }
          data[(static_cast<int64_t>(oh) * ow_n + ow) * c_n + c] = requantize(sum, rq.multiplier[c], rq.shift[c], rq);
        }
        continue;
      }
      for (int32_t ow0 = 0; ow0 < ow_n; ow0 += kDwRow) {
        const int32_t nb = ow_n - ow0 < kDwRow ? ow_n - ow0 : kDwRow;
        for (int32_t i = 0; i < nb; ++i) acc[i] = b;
        for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
          const int8_t* row = scratch + (ih0 + kh) * s.w;
          for (int32_t kw = 0; kw < k; ++kw) {
            const int32_t wv = wc[kh * k + kw];
            // Output ow reads input column ow * st - pad + kw: inside the row for ow in [lo, hi).
            const int32_t off = kw - s.pad;
            int32_t lo = off >= 0 ? 0 : (-off + st - 1) / st;
            int32_t hi = s.w - 1 - off < 0 ? 0 : (s.w - 1 - off) / st + 1;
            lo = lo > ow0 ? lo - ow0 : 0;
            hi = hi - ow0 < nb ? hi - ow0 : nb;
            const int32_t base = ow0 * st + off;  // column of acc[0]'s tap (may lie in the padding)
#pragma omp simd
            for (int32_t i = lo; i < hi; ++i) acc[i] += (static_cast<int32_t>(row[base + i * st]) - x_zero_point) * wv;
          }
        }
        int8_t* out = data + (static_cast<int64_t>(oh) * ow_n + ow0) * c_n + c;
        for (int32_t i = 0; i < nb; ++i)
          out[static_cast<int64_t>(i) * c_n] = requantize(acc[i], rq.multiplier[c], rq.shift[c], rq);
      }
    }
  }
  return true;
}

void int8_linear(const int8_t* x, int32_t x_zero_point, const int8_t* w, const int32_t* bias, int32_t in,
                 int32_t out, const Requant& rq, int8_t* y) noexcept {
  linear(x, x_zero_point, Int8Rows{w, in}, bias, in, out,
         [&](int32_t o, int32_t acc) { y[o] = requantize(acc, rq.multiplier[o], rq.shift[o], rq); });
}

void int8_linear(const int8_t* x, int32_t x_zero_point, const Int8SplitWeight& w, const int32_t* bias,
                 int32_t in, int32_t out, const Requant& rq, int8_t* y) noexcept {
  linear(x, x_zero_point, w, bias, in, out,
         [&](int32_t o, int32_t acc) { y[o] = requantize(acc, rq.multiplier[o], rq.shift[o], rq); });
}

void int8_linear_accumulate(const int8_t* x, int32_t x_zero_point, const int8_t* w, const int32_t* bias,
                            int32_t in, int32_t out, int32_t* acc) noexcept {
  linear(x, x_zero_point, Int8Rows{w, in}, bias, in, out, [acc](int32_t o, int32_t a) { acc[o] = a; });
}

void int8_linear_accumulate(const int8_t* x, int32_t x_zero_point, const Int8SplitWeight& w,
                            const int32_t* bias, int32_t in, int32_t out, int32_t* acc) noexcept {
  linear(x, x_zero_point, w, bias, in, out, [acc](int32_t o, int32_t a) { acc[o] = a; });
}

}  // namespace tern::cpu
