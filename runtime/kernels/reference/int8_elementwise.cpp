#include "runtime/kernels/reference/int8_elementwise.h"

#include <algorithm>
#include <cmath>

namespace tern::ref {

namespace {
// zero_point + round(v) (ties away from zero), clamped.
int8_t store(double v, int32_t zero_point, int32_t lo, int32_t hi) {
  const double r = std::round(v) + zero_point;
  return static_cast<int8_t>(std::clamp(r, static_cast<double>(lo), static_cast<double>(hi)));
}
}  // namespace

void int8_add(const int8_t* a, const int8_t* b, int64_t n, const cpu::Int8AddParams& p, int8_t* y) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(p.a_mult) * (a[i] - p.a_zero_point) +
                     static_cast<double>(p.b_mult) * (b[i] - p.b_zero_point);
    y[i] = store(v, p.y_zero_point, p.act_min, p.act_max);
  }
}

void int8_global_avg_pool(const int8_t* x, int32_t pixels, int32_t c, int32_t zero_point, int8_t* y) {
  for (int32_t ch = 0; ch < c; ++ch) {
    double sum = 0;
    for (int32_t p = 0; p < pixels; ++p) sum += x[static_cast<int64_t>(p) * c + ch] - zero_point;
    y[ch] = store(sum / pixels, zero_point, -128, 127);
  }
}

void int8_max_pool2d(const cpu::Int8PoolShape& s, const int8_t* x, int8_t* y) {
  for (int32_t oh = 0; oh < s.out_h(); ++oh)
    for (int32_t ow = 0; ow < s.out_w(); ++ow)
      for (int32_t ch = 0; ch < s.c; ++ch) {
        int32_t best = -129;  // below every int8: the window always holds a real element
        for (int32_t kh = 0; kh < s.kernel; ++kh)
          for (int32_t kw = 0; kw < s.kernel; ++kw) {
            const int32_t ih = oh * s.stride - s.pad + kh, iw = ow * s.stride - s.pad + kw;
            if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
            best = std::max<int32_t>(best, x[(static_cast<int64_t>(ih) * s.w + iw) * s.c + ch]);
          }
        y[(static_cast<int64_t>(oh) * s.out_w() + ow) * s.c + ch] = static_cast<int8_t>(best);
      }
}

}  // namespace tern::ref
