#include "runtime/kernels/reference/conv.h"

#include <cstdint>
#include <vector>

namespace tern::ref {
namespace {

// Calls f(x_index, w_index, y_index) for every product x * w that contributes to an output:
// each output position, each input channel of its group, each kernel tap that lands inside the
// image (taps on the zero padding contribute nothing). All three passes are sums over this set.
template <typename F>
void for_each_tap(const Conv2dShape& s, F&& f) {
  const int64_t oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t oc = 0; oc < s.c_out; ++oc) {
      const int64_t g = oc / cout_g;
      for (int64_t oh = 0; oh < oh_n; ++oh)
        for (int64_t ow = 0; ow < ow_n; ++ow) {
          const int64_t y_index = ((n * s.c_out + oc) * oh_n + oh) * ow_n + ow;
          for (int64_t icg = 0; icg < cin_g; ++icg) {
            const int64_t ic = g * cin_g + icg;
            for (int64_t ki = 0; ki < s.kh; ++ki) {
              const int64_t ih = oh * s.stride_h - s.pad_h + ki;
              if (ih < 0 || ih >= s.h) continue;
              for (int64_t kj = 0; kj < s.kw; ++kj) {
                const int64_t iw = ow * s.stride_w - s.pad_w + kj;
                if (iw < 0 || iw >= s.w) continue;
                const int64_t x_index = ((n * s.c_in + ic) * s.h + ih) * s.w + iw;
                const int64_t w_index = ((oc * cin_g + icg) * s.kh + ki) * s.kw + kj;
                f(x_index, w_index, y_index);
              }
            }
          }
        }
    }
}

void store(const std::vector<double>& acc, float* out) {
  for (size_t i = 0; i < acc.size(); ++i) out[i] = static_cast<float>(acc[i]);
}

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y) {
  std::vector<double> acc(static_cast<size_t>(s.y_numel()), 0.0);
  const int64_t plane = s.out_h() * s.out_w();
  if (bias != nullptr)
    for (size_t i = 0; i < acc.size(); ++i) acc[i] = bias[(static_cast<int64_t>(i) / plane) % s.c_out];
  for_each_tap(s, [&](int64_t xi, int64_t wi, int64_t yi) { acc[yi] += static_cast<double>(x[xi]) * w[wi]; });
  store(acc, y);
}

void conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  std::vector<double> acc(static_cast<size_t>(s.x_numel()), 0.0);
  for_each_tap(s,
               [&](int64_t xi, int64_t wi, int64_t yi) { acc[xi] += static_cast<double>(dy[yi]) * w[wi]; });
  store(acc, dx);
}

void conv2d_backward_weights(const Conv2dShape& s, const float* x, const float* dy, float* dw, float* dbias) {
  std::vector<double> acc(static_cast<size_t>(s.w_numel()), 0.0);
  for_each_tap(s,
               [&](int64_t xi, int64_t wi, int64_t yi) { acc[wi] += static_cast<double>(x[xi]) * dy[yi]; });
  store(acc, dw);
  if (dbias == nullptr) return;
  std::vector<double> bacc(static_cast<size_t>(s.c_out), 0.0);
  const int64_t plane = s.out_h() * s.out_w();
  for (int64_t i = 0; i < s.y_numel(); ++i) bacc[(i / plane) % s.c_out] += dy[i];
  store(bacc, dbias);
}

}  // namespace tern::ref
