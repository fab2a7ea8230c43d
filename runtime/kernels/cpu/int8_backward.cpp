#include "runtime/kernels/cpu/int8_backward.h"

#include <cstring>

namespace tern::cpu {

namespace {

// The window of output (oh, ow) clipped to the image, as in the forward kernels.
struct Taps {
  int32_t ih0, iw0, kh_lo, kh_hi, kw_lo, kw_hi;
};

inline Taps taps(const Int8ConvShape& s, int32_t oh, int32_t ow) noexcept {
  Taps t;
  t.ih0 = oh * s.stride - s.pad;
  t.iw0 = ow * s.stride - s.pad;
  t.kh_lo = t.ih0 < 0 ? -t.ih0 : 0;
  t.kh_hi = t.ih0 + s.kernel > s.h ? s.h - t.ih0 : s.kernel;
  t.kw_lo = t.iw0 < 0 ? -t.iw0 : 0;
  t.kw_hi = t.iw0 + s.kernel > s.w ? s.w - t.iw0 : s.kernel;
  return t;
}

}  // namespace

void bias_grad(const float* dy, int64_t pixels, int64_t c, float* db) noexcept {
  for (int64_t ch = 0; ch < c; ++ch) db[ch] = 0.0f;
  for (int64_t p = 0; p < pixels; ++p) {
    const float* row = dy + p * c;
#pragma omp simd
    for (int64_t ch = 0; ch < c; ++ch) db[ch] += row[ch];
  }
}

// Up to kGroup of a pixel's nonzero gradients at a time: their rows share each pass over the
// pixel's taps (one load and conversion of an input element, or one load and store of a dx element,
// for four multiply-adds). Each output element still takes its terms one by one, in the order the
// one-at-a-time loop took them, so the float results are the same bit for bit.
constexpr int32_t kGroup = 4;

void conv2d_weight_grad_channels(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point, float x_scale,
                                 const float* dy, const int32_t* channels, int32_t k, float* dw) noexcept {
  const int64_t filter = static_cast<int64_t>(s.kernel) * s.kernel * s.c_in;
  for (int64_t i = 0; i < k * filter; ++i) dw[i] = 0.0f;
  const int32_t oh_n = s.out_h(), ow_n = s.out_w();
  for (int32_t oh = 0; oh < oh_n; ++oh) {
    for (int32_t ow = 0; ow < ow_n; ++ow) {
      const Taps t = taps(s, oh, ow);
      const float* g = dy + (static_cast<int64_t>(oh) * ow_n + ow) * s.c_out;
      const int64_t n = static_cast<int64_t>(t.kw_hi - t.kw_lo) * s.c_in;  // a row's taps, adjacent pixels
      auto row_of = [&](int32_t kh) {
        return x + (static_cast<int64_t>(t.ih0 + kh) * s.w + t.iw0 + t.kw_lo) * s.c_in;
      };
      auto at = [&](int32_t j, int32_t kh) { return dw + j * filter + (static_cast<int64_t>(kh) * s.kernel + t.kw_lo) * s.c_in; };
      int32_t js[kGroup];
      float gs[kGroup];
      int32_t m = 0;
      auto one = [&](int32_t j, float gj) {
        for (int32_t kh = t.kh_lo; kh < t.kh_hi; ++kh) {
          const int8_t* xr = row_of(kh);
          float* dr = at(j, kh);
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) dr[i] += gj * static_cast<float>(static_cast<int32_t>(xr[i]) - x_zero_point);
        }
      };
      for (int32_t j = 0; j < k; ++j) {
        const float gj = g[channels[j]] * x_scale;
        if (gj == 0.0f) continue;  // common after a ReLU mask
        js[m] = j;
        gs[m] = gj;
        if (++m < kGroup) continue;
        m = 0;
        for (int32_t kh = t.kh_lo; kh < t.kh_hi; ++kh) {
          const int8_t* xr = row_of(kh);
          float *d0 = at(js[0], kh), *d1 = at(js[1], kh), *d2 = at(js[2], kh), *d3 = at(js[3], kh);
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            const float v = static_cast<float>(static_cast<int32_t>(xr[i]) - x_zero_point);
            d0[i] += gs[0] * v;
            d1[i] += gs[1] * v;
            d2[i] += gs[2] * v;
            d3[i] += gs[3] * v;
          }
        }
      }
      for (int32_t q = 0; q < m; ++q) one(js[q], gs[q]);
    }
  }
}

void depthwise_weight_grad_channels(const Int8ConvShape& s, const int8_t* x, int32_t x_zero_point,
                                    float x_scale, const float* dy, const int32_t* channels, int32_t k,
                                    float* dw) noexcept {
  const int32_t kk = s.kernel * s.kernel, c_n = s.c_out;
  for (int64_t i = 0; i < static_cast<int64_t>(k) * kk; ++i) dw[i] = 0.0f;
  const int32_t oh_n = s.out_h(), ow_n = s.out_w();
  for (int32_t oh = 0; oh < oh_n; ++oh) {
    for (int32_t ow = 0; ow < ow_n; ++ow) {
      const Taps t = taps(s, oh, ow);
      const float* g = dy + (static_cast<int64_t>(oh) * ow_n + ow) * c_n;
      for (int32_t j = 0; j < k; ++j) {
        const int32_t c = channels[j];
        const float gj = g[c] * x_scale;
        if (gj == 0.0f) continue;
        float* dwj = dw + static_cast<int64_t>(j) * kk;
        for (int32_t kh = t.kh_lo; kh < t.kh_hi; ++kh) {
          for (int32_t kw = t.kw_lo; kw < t.kw_hi; ++kw) {
            const int8_t v = x[(static_cast<int64_t>(t.ih0 + kh) * s.w + t.iw0 + kw) * c_n + c];
            dwj[kh * s.kernel + kw] += gj * static_cast<float>(static_cast<int32_t>(v) - x_zero_point);
          }
        }
      }
    }
  }
}

void linear_weight_grad_channels(const int8_t* x, int32_t x_zero_point, float x_scale, int32_t in,
                                 const float* dy, const int32_t* channels, int32_t k, float* dw) noexcept {
  for (int32_t j = 0; j < k; ++j) {
    const float gj = dy[channels[j]] * x_scale;
    float* row = dw + static_cast<int64_t>(j) * in;
#pragma omp simd
    for (int32_t i = 0; i < in; ++i)
      row[i] = gj * static_cast<float>(static_cast<int32_t>(x[i]) - x_zero_point);
  }
}

namespace {

// dx += the input gradient; with add = false dx is zeroed first.
template <typename Rows>
void conv2d_input_grad_rows(const Int8ConvShape& s, const float* dy, const Rows& w, const float* w_scale,
                            float* dx, bool add = false) noexcept {
  const int64_t x_numel = static_cast<int64_t>(s.h) * s.w * s.c_in;
  if (!add)
    for (int64_t i = 0; i < x_numel; ++i) dx[i] = 0.0f;
  const int32_t oh_n = s.out_h(), ow_n = s.out_w();
  for (int32_t oh = 0; oh < oh_n; ++oh) {
    for (int32_t ow = 0; ow < ow_n; ++ow) {
      const Taps t = taps(s, oh, ow);
      const float* g = dy + (static_cast<int64_t>(oh) * ow_n + ow) * s.c_out;
      const int64_t n = static_cast<int64_t>(t.kw_hi - t.kw_lo) * s.c_in;
      auto dx_row = [&](int32_t kh) { return dx + (static_cast<int64_t>(t.ih0 + kh) * s.w + t.iw0 + t.kw_lo) * s.c_in; };
      auto w_row = [&](int32_t oc, int32_t kh) {
        return w.row(oc) + (static_cast<int64_t>(kh) * s.kernel + t.kw_lo) * s.c_in;
      };
      int32_t ocs[kGroup];
      float gos[kGroup];
      int32_t m = 0;
      for (int32_t oc = 0; oc < s.c_out; ++oc) {
        const float go = g[oc] * w_scale[oc];
        if (go == 0.0f) continue;
        ocs[m] = oc;
        gos[m] = go;
        if (++m < kGroup) continue;
        m = 0;
        for (int32_t kh = t.kh_lo; kh < t.kh_hi; ++kh) {
          float* dr = dx_row(kh);
          const int8_t *w0 = w_row(ocs[0], kh), *w1 = w_row(ocs[1], kh), *w2 = w_row(ocs[2], kh), *w3 = w_row(ocs[3], kh);
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            float v = dr[i];
            v += gos[0] * static_cast<float>(w0[i]);
            v += gos[1] * static_cast<float>(w1[i]);
            v += gos[2] * static_cast<float>(w2[i]);
            v += gos[3] * static_cast<float>(w3[i]);
            dr[i] = v;
          }
        }
      }
      for (int32_t q = 0; q < m; ++q) {
        for (int32_t kh = t.kh_lo; kh < t.kh_hi; ++kh) {
          float* dr = dx_row(kh);
          const int8_t* wr = w_row(ocs[q], kh);
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) dr[i] += gos[q] * static_cast<float>(wr[i]);
        }
      }
    }
  }
}

template <typename Rows>
void linear_input_grad_rows(const float* dy, const Rows& w, const float* w_scale, int32_t in, int32_t out,
                            float* dx) noexcept {
  for (int32_t i = 0; i < in; ++i) dx[i] = 0.0f;
  for (int32_t o = 0; o < out; ++o) {
    const float go = dy[o] * w_scale[o];
    if (go == 0.0f) continue;
    const int8_t* row = w.row(o);
#pragma omp simd
    for (int32_t i = 0; i < in; ++i) dx[i] += go * static_cast<float>(row[i]);
  }
}

}  // namespace

void conv2d_input_grad(const Int8ConvShape& s, const float* dy, const int8_t* w, const float* w_scale,
                       float* dx) noexcept {
  conv2d_input_grad_rows(s, dy, Int8Rows{w, int64_t{s.kernel} * s.kernel * s.c_in}, w_scale, dx);
}

void conv2d_input_grad(const Int8ConvShape& s, const float* dy, const Int8SplitWeight& w, const float* w_scale,
                       float* dx) noexcept {
  conv2d_input_grad_rows(s, dy, w, w_scale, dx);
}

void linear_input_grad(const float* dy, const Int8SplitWeight& w, const float* w_scale, int32_t in, int32_t out,
                       float* dx) noexcept {
  linear_input_grad_rows(dy, w, w_scale, in, out, dx);
}

namespace {

// A weight's rows first .. (a 1x1 conv's output channels first ...).
template <typename Rows>
struct RowsFrom {
  Rows rows;
  int32_t first;
  const int8_t* row(int32_t oc) const noexcept { return rows.row(first + oc); }
};

// A group's columns are few (a handful of channels at large planes), too few for a loop over them to
// vectorise: kPixelBlock pixels go at once instead, the lanes of one column's loop. Each element still
// takes its terms in increasing output channel, from +0, as conv2d_input_grad_rows takes them; that one
// skips a zero gradient, and here a lane adds its zero product instead, which leaves it unchanged: a sum
// that starts at +0 is never -0, and x + (+-0) is x for every other x.
constexpr int32_t kPixelBlock = 8;
constexpr int32_t kColumnBlock = 16;

template <typename Rows>
void pointwise_input_grad_columns_rows(const Int8ConvShape& s, const float* dy, const Rows& w,
                                       const float* w_scale, int32_t c0, int32_t count, float* dx) noexcept {
  const int64_t pixels = static_cast<int64_t>(s.h) * s.w;
  float acc[kColumnBlock][kPixelBlock];
  float go[kPixelBlock];
  for (int64_t p0 = 0; p0 < pixels; p0 += kPixelBlock) {
    const int32_t np = pixels - p0 < kPixelBlock ? static_cast<int32_t>(pixels - p0) : kPixelBlock;
    for (int32_t cb = 0; cb < count; cb += kColumnBlock) {
      const int32_t nc = count - cb < kColumnBlock ? count - cb : kColumnBlock;
      for (int32_t j = 0; j < kColumnBlock; ++j)
        for (int32_t q = 0; q < kPixelBlock; ++q) acc[j][q] = 0.0f;
      for (int32_t oc = 0; oc < s.c_out; ++oc) {
        bool any = false;
        for (int32_t q = 0; q < kPixelBlock; ++q) {
          go[q] = q < np ? dy[(p0 + q) * s.c_out + oc] * w_scale[oc] : 0.0f;
          any |= go[q] != 0.0f;
        }
        if (!any) continue;
        const int8_t* row = w.row(oc) + c0 + cb;
        for (int32_t j = 0; j < nc; ++j) {
          const float wv = static_cast<float>(row[j]);
#pragma omp simd
          for (int32_t q = 0; q < kPixelBlock; ++q) acc[j][q] += go[q] * wv;
        }
      }
      for (int32_t q = 0; q < np; ++q)
        for (int32_t j = 0; j < nc; ++j) dx[(p0 + q) * count + cb + j] = acc[j][q];
    }
  }
}

template <typename Rows>
void pointwise_input_grad_add_rows(const Int8ConvShape& s, const float* dy, const Rows& w,
                                   const float* w_scale, int32_t c0, int32_t count, float* dx) noexcept {
  Int8ConvShape slice = s;
  slice.c_out = count;
  conv2d_input_grad_rows(slice, dy, RowsFrom<Rows>{w, c0}, w_scale + c0, dx, /*add=*/true);
}

}  // namespace

void pointwise_input_grad_columns(const Int8ConvShape& s, const float* dy, const int8_t* w,
                                  const float* w_scale, int32_t c0, int32_t count, float* dx) noexcept {
  pointwise_input_grad_columns_rows(s, dy, Int8Rows{w, s.c_in}, w_scale, c0, count, dx);
}

void pointwise_input_grad_columns(const Int8ConvShape& s, const float* dy, const Int8SplitWeight& w,
                                  const float* w_scale, int32_t c0, int32_t count, float* dx) noexcept {
  pointwise_input_grad_columns_rows(s, dy, w, w_scale, c0, count, dx);
}

void pointwise_input_grad_add(const Int8ConvShape& s, const float* dy, const int8_t* w, const float* w_scale,
                              int32_t c0, int32_t count, float* dx) noexcept {
  pointwise_input_grad_add_rows(s, dy, Int8Rows{w, s.c_in}, w_scale, c0, count, dx);
}

void pointwise_input_grad_add(const Int8ConvShape& s, const float* dy, const Int8SplitWeight& w,
                              const float* w_scale, int32_t c0, int32_t count, float* dx) noexcept {
  pointwise_input_grad_add_rows(s, dy, w, w_scale, c0, count, dx);
}

// Channels in blocks of kDwBlock, each block's weights first laid out tap-major as floats in a small
// stack table, then for each output row and tap the run of output pixels whose tap lies inside the
// image: the inner loop reads dy, dx and the table contiguously, with no per-pixel window to clip,
// where indexing the filter-major int8 weights per tap is a stride-kk gather. kw runs downwards so
// each dx element still sums its terms in the order of their output pixels (raster order, as a loop
// over output pixels would): the same float result, bit for bit, as the direct loop below, which
// kernels above kDwMaxTaps taps keep (their table would not fit the device's stack).
constexpr int32_t kDwBlock = 16;
// A block width the compiler sees as a constant (no <type_traits> in the bare-metal build).
template <int32_t N>
struct Fixed {
  constexpr operator int32_t() const { return N; }
};
constexpr int32_t kDwMaxTaps = 49;  // 7x7: a 3 KB table

void depthwise_input_grad(const Int8ConvShape& s, const float* dy, const int8_t* w, const float* w_scale,
                          float* dx) noexcept {
  const int32_t c_n = s.c_out, kk = s.kernel * s.kernel, k = s.kernel, st = s.stride;
  const int64_t x_numel = static_cast<int64_t>(s.h) * s.w * c_n;
  for (int64_t i = 0; i < x_numel; ++i) dx[i] = 0.0f;
  const int32_t oh_n = s.out_h(), ow_n = s.out_w();
  if (kk > kDwMaxTaps) {
    for (int32_t oh = 0; oh < oh_n; ++oh) {
      for (int32_t ow = 0; ow < ow_n; ++ow) {
        const Taps t = taps(s, oh, ow);
        const float* g = dy + (static_cast<int64_t>(oh) * ow_n + ow) * c_n;
        for (int32_t kh = t.kh_lo; kh < t.kh_hi; ++kh) {
          for (int32_t kw = t.kw_lo; kw < t.kw_hi; ++kw) {
            float* dp = dx + (static_cast<int64_t>(t.ih0 + kh) * s.w + t.iw0 + kw) * c_n;
            const int32_t tap = kh * s.kernel + kw;
            for (int32_t c = 0; c < c_n; ++c) dp[c] += g[c] * w_scale[c] * static_cast<float>(w[c * kk + tap]);
          }
        }
      }
    }
    return;
  }
  if (c_n == 1) {  // one plane (the step executor's in-place backward goes channel by channel)
    const float scale = w_scale[0];
    for (int32_t oh = 0; oh < oh_n; ++oh) {
      const int32_t ih0 = oh * st - s.pad;
      const int32_t kh_lo = ih0 < 0 ? -ih0 : 0, kh_hi = ih0 + k > s.h ? s.h - ih0 : k;
      const float* g = dy + static_cast<int64_t>(oh) * ow_n;
      for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
        float* row = dx + static_cast<int64_t>(ih0 + kh) * s.w;
        for (int32_t kw = k - 1; kw >= 0; --kw) {
          const int32_t off = kw - s.pad;
          const int32_t lo = off >= 0 ? 0 : (-off + st - 1) / st;
          const int32_t end = s.w - 1 - off < 0 ? 0 : (s.w - 1 - off) / st + 1;
          const int32_t hi = end < ow_n ? end : ow_n;
          const float wv = static_cast<float>(w[kh * k + kw]);
#pragma omp simd
          for (int32_t ow = lo; ow < hi; ++ow) row[ow * st + off] += g[ow] * scale * wv;
        }
      }
    }
    return;
  }
  float table[kDwMaxTaps * kDwBlock];
  // dx row `ih` += each pixel of dy row `oh` whose tap (kh, kw) lands inside it, block c0 of width cb.
  auto row_tap = [&](int32_t oh, int32_t ih, int32_t kh, int32_t kw, int32_t c0, auto cb) {
    const int32_t off = kw - s.pad;  // input column of output 0's tap
    const int32_t lo = off >= 0 ? 0 : (-off + st - 1) / st;
    const int32_t end = s.w - 1 - off < 0 ? 0 : (s.w - 1 - off) / st + 1;
    const int32_t hi = end < ow_n ? end : ow_n;
    const float* wt = table + (kh * k + kw) * kDwBlock;
    const float* ws = w_scale + c0;
    for (int32_t ow = lo; ow < hi; ++ow) {
      const float* g = dy + (static_cast<int64_t>(oh) * ow_n + ow) * c_n + c0;
      float* dp = dx + (static_cast<int64_t>(ih) * s.w + ow * st + off) * c_n + c0;
#pragma omp simd
      for (int32_t j = 0; j < cb; ++j) dp[j] += g[j] * ws[j] * wt[j];
    }
  };
  for (int32_t c0 = 0; c0 < c_n; c0 += kDwBlock) {
    const int32_t cb = c_n - c0 < kDwBlock ? c_n - c0 : kDwBlock;
    for (int32_t tap = 0; tap < kk; ++tap) {
      for (int32_t j = 0; j < cb; ++j)
        table[tap * kDwBlock + j] = static_cast<float>(w[static_cast<int64_t>(c0 + j) * kk + tap]);
    }
    for (int32_t oh = 0; oh < oh_n; ++oh) {
      const int32_t ih0 = oh * st - s.pad;
      const int32_t kh_lo = ih0 < 0 ? -ih0 : 0, kh_hi = ih0 + k > s.h ? s.h - ih0 : k;
      for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
        for (int32_t kw = k - 1; kw >= 0; --kw) {
          if (cb == kDwBlock)
            row_tap(oh, ih0 + kh, kh, kw, c0, Fixed<kDwBlock>());
          else
            row_tap(oh, ih0 + kh, kh, kw, c0, cb);
        }
      }
    }
  }
}

void linear_input_grad(const float* dy, const int8_t* w, const float* w_scale, int32_t in, int32_t out,
                       float* dx) noexcept {
  linear_input_grad_rows(dy, Int8Rows{w, in}, w_scale, in, out, dx);
}

// A byte of mask at a time, its eight bits built (or read) without a branch, so the compiler
// vectorises both: the per-element read-modify-write of a bit was 9 % of a sparse mcunet step.
void clamp_mask_bits(const int8_t* y, int64_t n, int32_t act_min, int32_t act_max, uint8_t* bits) noexcept {
  // The byte of elements y[0 .. count), count <= 8 (8 but for the last byte).
  auto byte_of = [&](const int8_t* y8, int32_t count) {
    uint32_t byte = 0;
    for (int32_t j = 0; j < count; ++j) byte |= static_cast<uint32_t>(y8[j] > act_min && y8[j] < act_max) << j;
    return static_cast<uint8_t>(byte);
  };
  const int64_t whole = n / 8;
  for (int64_t b = 0; b < whole; ++b) bits[b] = byte_of(y + b * 8, 8);
  if (whole * 8 < n) bits[whole] = byte_of(y + whole * 8, static_cast<int32_t>(n - whole * 8));
}

void apply_mask_bits(const uint8_t* bits, int64_t n, float* dy) noexcept {
  const int64_t whole = n / 8;
  for (int64_t b = 0; b < whole; ++b) {
    const uint32_t byte = bits[b];
    for (int32_t j = 0; j < 8; ++j) dy[b * 8 + j] = (byte >> j & 1u) != 0 ? dy[b * 8 + j] : 0.0f;
  }
  for (int64_t i = whole * 8; i < n; ++i)
    if (!((bits[i >> 3] >> (i & 7)) & 1u)) dy[i] = 0.0f;
}

// Up to 32 bits of a row at a time, read from the (at most five) bytes that hold them, applied to the
// floats' bits so the loop has no branch.
void apply_mask_bits_columns(const uint8_t* bits, int64_t pixels, int64_t c, int64_t c0, int64_t count,
                             float* dy) noexcept {
  for (int64_t p = 0; p < pixels; ++p) {
    float* row = dy + p * count;
    for (int64_t j0 = 0; j0 < count; j0 += 32) {
      const int32_t n = count - j0 < 32 ? static_cast<int32_t>(count - j0) : 32;
      const int64_t first = p * c + c0 + j0;
      const int32_t shift = static_cast<int32_t>(first & 7);
      const int32_t bytes = (shift + n + 7) / 8;
      uint64_t word = 0;
      for (int32_t k = 0; k < bytes; ++k) word |= static_cast<uint64_t>(bits[(first >> 3) + k]) << (8 * k);
      const uint32_t keep = static_cast<uint32_t>(word >> shift);
      // A cleared element becomes +0 (all bits clear), as apply_mask_bits writes it.
      for (int32_t j = 0; j < n; ++j) {
        uint32_t b;
        std::memcpy(&b, row + j0 + j, sizeof b);
        b &= 0u - (keep >> j & 1u);
        std::memcpy(row + j0 + j, &b, sizeof b);
      }
    }
  }
}

}  // namespace tern::cpu
