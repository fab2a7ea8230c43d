#include "runtime/kernels/reference/int8_backward.h"

#include <cstddef>
#include <vector>

namespace tern::ref {

namespace {
// Calls f(x_index, w_index, y_index, oc) for every product of the grouped NHWC convolution.
template <typename F>
void for_each_tap(const cpu::Int8ConvShape& s, int32_t groups, F&& f) {
  const int64_t oh_n = s.out_h(), ow_n = s.out_w(), k = s.kernel;
  const int64_t cin_g = s.c_in / groups, cout_g = s.c_out / groups;
  for (int64_t oh = 0; oh < oh_n; ++oh)
    for (int64_t ow = 0; ow < ow_n; ++ow)
      for (int64_t oc = 0; oc < s.c_out; ++oc)
        for (int64_t kh = 0; kh < k; ++kh)
          for (int64_t kw = 0; kw < k; ++kw) {
            const int64_t ih = oh * s.stride - s.pad + kh, iw = ow * s.stride - s.pad + kw;
            if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
            for (int64_t icg = 0; icg < cin_g; ++icg)
              f((ih * s.w + iw) * s.c_in + (oc / cout_g) * cin_g + icg,
                ((oc * k + kh) * k + kw) * cin_g + icg, (oh * ow_n + ow) * s.c_out + oc, oc);
          }
}
}  // namespace

void int8_conv2d_weight_grad(const cpu::Int8ConvShape& s, int32_t groups, const int8_t* x,
                             int32_t x_zero_point, float x_scale, const float* dy, float* dw) {
  const int64_t n = static_cast<int64_t>(s.c_out) * s.kernel * s.kernel * (s.c_in / groups);
  std::vector<double> acc(static_cast<size_t>(n), 0.0);
  for_each_tap(s, groups, [&](int64_t xi, int64_t wi, int64_t yi, int64_t) {
    acc[static_cast<size_t>(wi)] += static_cast<double>(dy[yi]) * x_scale * (x[xi] - x_zero_point);
  });
  for (int64_t i = 0; i < n; ++i) dw[i] = static_cast<float>(acc[static_cast<size_t>(i)]);
}

void int8_conv2d_input_grad(const cpu::Int8ConvShape& s, int32_t groups, const float* dy, const int8_t* w,
                            const float* w_scale, float* dx) {
  const int64_t n = static_cast<int64_t>(s.h) * s.w * s.c_in;
  std::vector<double> acc(static_cast<size_t>(n), 0.0);
  for_each_tap(s, groups, [&](int64_t xi, int64_t wi, int64_t yi, int64_t oc) {
    acc[static_cast<size_t>(xi)] += static_cast<double>(dy[yi]) * w_scale[oc] * w[wi];
  });
  for (int64_t i = 0; i < n; ++i) dx[i] = static_cast<float>(acc[static_cast<size_t>(i)]);
}

void bias_grad(const float* dy, int64_t pixels, int64_t c, float* db) {
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0;
    for (int64_t p = 0; p < pixels; ++p) sum += dy[p * c + ch];
    db[ch] = static_cast<float>(sum);
  }
}

}  // namespace tern::ref
