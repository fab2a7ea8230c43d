#include "runtime/kernels/reference/int8_conv.h"

#include <cmath>
#include <cstddef>
#include <vector>

namespace tern::ref {

int8_t requantize(int64_t acc, double m, const cpu::Requant& rq) {
  const double v = std::floor(static_cast<double>(acc) * m + 0.5) + rq.out_zero_point;
  const double c = std::fmin(std::fmax(v, rq.act_min), rq.act_max);
  return static_cast<int8_t>(c);
}

void int8_conv2d(const cpu::Int8ConvShape& s, int32_t groups, const int8_t* x, int32_t x_zero_point,
                 const int8_t* w, const int32_t* bias, const cpu::Requant& rq, int8_t* y) {
  const int64_t oh_n = s.out_h(), ow_n = s.out_w(), k = s.kernel;
  const int64_t cin_g = s.c_in / groups, cout_g = s.c_out / groups;
  for (int64_t oh = 0; oh < oh_n; ++oh)
    for (int64_t ow = 0; ow < ow_n; ++ow)
      for (int64_t oc = 0; oc < s.c_out; ++oc) {
        const int64_t g = oc / cout_g;
        int64_t acc = bias ? bias[oc] : 0;
        for (int64_t kh = 0; kh < k; ++kh)
          for (int64_t kw = 0; kw < k; ++kw) {
            const int64_t ih = oh * s.stride - s.pad + kh, iw = ow * s.stride - s.pad + kw;
            if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;  // zero padding: x == zero point
            for (int64_t icg = 0; icg < cin_g; ++icg) {
              const int64_t xv = x[(ih * s.w + iw) * s.c_in + g * cin_g + icg];
              const int64_t wv = w[((oc * k + kh) * k + kw) * cin_g + icg];
              acc += (xv - x_zero_point) * wv;
            }
          }
        const double m = cpu::multiplier_value({rq.multiplier[oc], rq.shift[oc]});
        y[(oh * ow_n + ow) * s.c_out + oc] = requantize(acc, m, rq);
      }
}

void int8_linear(const int8_t* x, int32_t x_zero_point, const int8_t* w, const int32_t* bias, int32_t in,
                 int32_t out, const cpu::Requant& rq, int8_t* y) {
  const cpu::Int8ConvShape s{.h = 1, .w = 1, .c_in = in, .c_out = out, .kernel = 1, .stride = 1, .pad = 0};
  int8_conv2d(s, 1, x, x_zero_point, w, bias, rq, y);
}

}  // namespace tern::ref
