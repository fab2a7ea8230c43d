#include "runtime/kernels/cpu/int8_elementwise.h"

#include "runtime/kernels/cpu/requantize.h"

namespace tern::cpu {

void int8_add(const int8_t* a, const int8_t* b, int64_t n, const Int8AddParams& p, int8_t* y) noexcept {
  for (int64_t i = 0; i < n; ++i) {
    const float v = p.a_mult * static_cast<float>(static_cast<int32_t>(a[i]) - p.a_zero_point) +
                    p.b_mult * static_cast<float>(static_cast<int32_t>(b[i]) - p.b_zero_point);
    y[i] = saturate_round(v, p.y_zero_point, p.act_min, p.act_max);
  }
}

void int8_global_avg_pool(const int8_t* x, int32_t pixels, int32_t c, int32_t zero_point,
                          int8_t* y) noexcept {
  const int64_t n = pixels;
  for (int32_t ch = 0; ch < c; ++ch) {
    int64_t sum = 0;  // of (x - zero_point): |sum| <= 255 * pixels
    for (int64_t p = 0; p < n; ++p) sum += static_cast<int32_t>(x[p * c + ch]) - zero_point;
    // Integer rounding half away from zero of sum / n.
    const int64_t mean = sum >= 0 ? (2 * sum + n) / (2 * n) : -((-2 * sum + n) / (2 * n));
    y[ch] = static_cast<int8_t>(mean + zero_point);
  }
}

void int8_max_pool2d(const Int8PoolShape& s, const int8_t* x, int8_t* y) noexcept {
  const int32_t oh_n = s.out_h(), ow_n = s.out_w(), k = s.kernel;
  for (int32_t oh = 0; oh < oh_n; ++oh) {
    const int32_t ih0 = oh * s.stride - s.pad;
    const int32_t kh_lo = ih0 < 0 ? -ih0 : 0, kh_hi = ih0 + k > s.h ? s.h - ih0 : k;
    for (int32_t ow = 0; ow < ow_n; ++ow) {
      const int32_t iw0 = ow * s.stride - s.pad;
      const int32_t kw_lo = iw0 < 0 ? -iw0 : 0, kw_hi = iw0 + k > s.w ? s.w - iw0 : k;
      int8_t* yp = y + (static_cast<int64_t>(oh) * ow_n + ow) * s.c;
      for (int32_t ch = 0; ch < s.c; ++ch) yp[ch] = -128;
      for (int32_t kh = kh_lo; kh < kh_hi; ++kh) {
        for (int32_t kw = kw_lo; kw < kw_hi; ++kw) {
          const int8_t* xp = x + (static_cast<int64_t>(ih0 + kh) * s.w + iw0 + kw) * s.c;
          for (int32_t ch = 0; ch < s.c; ++ch) yp[ch] = xp[ch] > yp[ch] ? xp[ch] : yp[ch];
        }
      }
    }
  }
}

}  // namespace tern::cpu
