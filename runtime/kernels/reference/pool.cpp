#include "runtime/kernels/reference/pool.h"

#include <cmath>

namespace tern::ref {

namespace {
// True when the padded-window coordinate (h, w) lands on a real input element.
bool inside(const Pool2dGeometry& g, int64_t h, int64_t w) { return h >= 0 && h < g.H && w >= 0 && w < g.W; }

// Whether input (h, w) lies in the window of output (oh, ow).
bool covers(const Pool2dGeometry& g, int64_t oh, int64_t ow, int64_t h, int64_t w) {
  const int64_t h0 = oh * g.stride - g.padding, w0 = ow * g.stride - g.padding;
  return h >= h0 && h < h0 + g.kernel && w >= w0 && w < w0 + g.kernel;
}

int64_t real_count(const Pool2dGeometry& g, int64_t oh, int64_t ow) {
  int64_t n = 0;
  for (int64_t i = 0; i < g.kernel; ++i)
    for (int64_t j = 0; j < g.kernel; ++j)
      n += inside(g, oh * g.stride - g.padding + i, ow * g.stride - g.padding + j);
  return n;
}
}  // namespace

void max_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y, int32_t* argmax) {
  const int64_t OH = g.out_h(), OW = g.out_w();
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    const float* xp = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      for (int64_t ow = 0; ow < OW; ++ow) {
        bool found = false;
        float best = 0;
        int64_t best_index = -1;
        for (int64_t i = 0; i < g.kernel; ++i) {
          for (int64_t j = 0; j < g.kernel; ++j) {
            const int64_t h = oh * g.stride - g.padding + i, w = ow * g.stride - g.padding + j;
            if (!inside(g, h, w)) continue;
            const float v = xp[h * g.W + w];
            // The first real element, then any strictly greater one or any NaN.
            if (!found || v > best || std::isnan(v)) {
              found = true;
              best = v;
              best_index = h * g.W + w;
            }
          }
        }
        const int64_t o = (p * OH + oh) * OW + ow;
        y[o] = best;
        argmax[o] = static_cast<int32_t>(best_index);
      }
    }
  }
}

void max_pool2d_backward(const Pool2dGeometry& g, const float* dy, const int32_t* argmax, float* dx) {
  const int64_t OH = g.out_h(), OW = g.out_w();
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    for (int64_t i = 0; i < g.H * g.W; ++i) {
      double acc = 0;
      for (int64_t o = 0; o < OH * OW; ++o)
        if (argmax[p * OH * OW + o] == i) acc += dy[p * OH * OW + o];
      dx[p * g.H * g.W + i] = static_cast<float>(acc);
    }
  }
}

void avg_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y) {
  const int64_t OH = g.out_h(), OW = g.out_w();
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    const float* xp = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      for (int64_t ow = 0; ow < OW; ++ow) {
        double sum = 0;
        for (int64_t i = 0; i < g.kernel; ++i) {
          for (int64_t j = 0; j < g.kernel; ++j) {
            const int64_t h = oh * g.stride - g.padding + i, w = ow * g.stride - g.padding + j;
            if (inside(g, h, w)) sum += xp[h * g.W + w];
          }
        }
        y[(p * OH + oh) * OW + ow] = static_cast<float>(sum / real_count(g, oh, ow));
      }
    }
  }
}

void avg_pool2d_backward(const Pool2dGeometry& g, const float* dy, float* dx) {
  const int64_t OH = g.out_h(), OW = g.out_w();
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    for (int64_t h = 0; h < g.H; ++h) {
      for (int64_t w = 0; w < g.W; ++w) {
        double acc = 0;
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow)
            if (covers(g, oh, ow, h, w))
              acc += static_cast<double>(dy[(p * OH + oh) * OW + ow]) / real_count(g, oh, ow);
        dx[(p * g.H + h) * g.W + w] = static_cast<float>(acc);
      }
    }
  }
}

void global_avg_pool2d_forward(int64_t planes, int64_t hw, const float* x, float* y) {
  for (int64_t p = 0; p < planes; ++p) {
    double sum = 0;
    for (int64_t i = 0; i < hw; ++i) sum += x[p * hw + i];
    y[p] = static_cast<float>(sum / static_cast<double>(hw));
  }
}

void global_avg_pool2d_backward(int64_t planes, int64_t hw, const float* dy, float* dx) {
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < hw; ++i) dx[p * hw + i] = static_cast<float>(dy[p] / static_cast<double>(hw));
}

}  // namespace tern::ref
