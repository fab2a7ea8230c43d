#include "runtime/kernels/reference/linear.h"

namespace tern::ref {

void linear_forward(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                    int64_t out) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (int64_t k = 0; k < in; ++k) acc += static_cast<double>(x[i * in + k]) * w[o * in + k];
      y[i * out + o] = static_cast<float>(acc);
    }
}

void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     int64_t n, int64_t in, int64_t out) {
  if (dx)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < in; ++k) {
        double acc = 0;
        for (int64_t o = 0; o < out; ++o) acc += static_cast<double>(dy[i * out + o]) * w[o * in + k];
        dx[i * in + k] = static_cast<float>(acc);
      }
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < in; ++k) {
      double acc = dw[o * in + k];
      for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(dy[i * out + o]) * x[i * in + k];
      dw[o * in + k] = static_cast<float>(acc);
    }
  if (db)
    for (int64_t o = 0; o < out; ++o) {
      double acc = db[o];
      for (int64_t i = 0; i < n; ++i) acc += dy[i * out + o];
      db[o] = static_cast<float>(acc);
    }
}

}  // namespace tern::ref
