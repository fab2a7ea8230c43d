#include "runtime/kernels/cpu/pool.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <type_traits>

namespace tern::cpu {

namespace {

// c ? a : b through bit masks, so scalar remainders stay branch-free too: on random data a
// branch per comparison mispredicts half the time (measured: the 2x2 max pool ran 1.8x slower
// with ?: on the floats).
inline float pick(bool c, float a, float b) {
  const int32_t m = -static_cast<int32_t>(c);
  return std::bit_cast<float>((std::bit_cast<int32_t>(a) & m) | (std::bit_cast<int32_t>(b) & ~m));
}

// One step of the max scan: v replaces best when strictly greater or when v is NaN (a later
// number never replaces a NaN, since v > NaN is false). Bitwise | keeps it vectorisable; a
// `best == best` test (so the first NaN would win) made GCC give up on the loop.
inline void max_step(float v, int32_t index, float& best, int32_t& best_index) {
  const bool take = static_cast<bool>((v > best) | (v != v));
  best = pick(take, v, best);
  best_index = take ? index : best_index;
}

bool is_2x2(const Pool2dGeometry& g) { return g.kernel == 2 && g.stride == 2 && g.padding == 0; }

// Runs body(i) for every i in [0, n) in blocks of a constant 8 (4 for short rows), the last block
// moved back to end at n so it overlaps the one before. Pooled rows are short (OW = 14, 7 in the
// CNNs): with AVX-512 a plain loop of 14 ran one vector iteration and a long scalar remainder,
// and one of 7 none (9x slower measured); constant trip counts vectorise fully. body must be
// idempotent per i (it may run twice for the same i).
template <typename Body>
inline void overlapped_blocks(int64_t n, Body&& body) {
  auto run = [&](auto block) {
    constexpr int64_t B = decltype(block)::value;
    for (int64_t start = 0; start < n; start += B) {
      const int64_t s = std::min(start, n - B);
#pragma omp simd
      for (int64_t k = 0; k < B; ++k) body(s + k);
    }
  };
  if (n >= 8) {
    run(std::integral_constant<int64_t, 8>{});
  } else if (n >= 4) {
    run(std::integral_constant<int64_t, 4>{});
  } else {
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

// The CNN case (kernel 2, stride 2, no padding): no bounds to clamp, one pass per output row.
void max_pool_2x2(const Pool2dGeometry& g, const float* x, float* y, int32_t* argmax) {
  const int64_t H = g.H, W = g.W, OH = g.out_h(), OW = g.out_w();
  const int32_t w32 = static_cast<int32_t>(W);
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    const float* xp = x + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const float* r0 = xp + 2 * oh * W;
      const float* r1 = r0 + W;
      float* yr = y + (p * OH + oh) * OW;
      int32_t* ar = argmax + (p * OH + oh) * OW;
      const int32_t base = static_cast<int32_t>(2 * oh * W);
      overlapped_blocks(OW, [&](int64_t ow) {
        const int32_t i = base + 2 * static_cast<int32_t>(ow);
        float best = r0[2 * ow];
        int32_t best_index = i;
        max_step(r0[2 * ow + 1], i + 1, best, best_index);
        max_step(r1[2 * ow], i + w32, best, best_index);
        max_step(r1[2 * ow + 1], i + w32 + 1, best, best_index);
        yr[ow] = best;
        ar[ow] = best_index;
      });
    }
  }
}

void avg_pool_2x2(const Pool2dGeometry& g, const float* x, float* y) {
  const int64_t H = g.H, W = g.W, OH = g.out_h(), OW = g.out_w();
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    const float* xp = x + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const float* r0 = xp + 2 * oh * W;
      const float* r1 = r0 + W;
      float* yr = y + (p * OH + oh) * OW;
      overlapped_blocks(OW, [&](int64_t ow) {
        yr[ow] = 0.25f * ((r0[2 * ow] + r0[2 * ow + 1]) + (r1[2 * ow] + r1[2 * ow + 1]));
      });
    }
  }
}

// General average pooling walks the windows tap by tap: for each window row h and column offset
// j, one pass over the output row updates every ow whose tap (h, ow * stride - padding + j) is
// real, a plain strided sweep instead of a tiny clamped window per output.

// The range [lo, hi) of ow whose column ow * s - pad + j lies inside [0, W).
struct OutRange {
  int64_t lo, hi;
};
OutRange columns_inside(const Pool2dGeometry& g, int64_t OW, int64_t j) {
  const int64_t s = g.stride, first = g.padding - j;  // ow * s >= first
  const int64_t lo = first <= 0 ? 0 : (first + s - 1) / s;
  const int64_t last = g.W - 1 + g.padding - j;  // ow * s <= last
  const int64_t hi = last < 0 ? 0 : std::min(OW, last / s + 1);
  return {lo, std::max(lo, hi)};
}

// Window rows [hs, he) of output row oh.
inline void window_rows(const Pool2dGeometry& g, int64_t oh, int64_t& hs, int64_t& he) {
  const int64_t h0 = oh * g.stride - g.padding;
  hs = std::max<int64_t>(h0, 0);
  he = std::min(h0 + g.kernel, g.H);
}

// Number of real columns in the window of output column ow, as a float divisor. In 32 bits:
// without AVX-512 there is no vector int64 min/max or int64 -> float conversion, which kept the
// loops using it scalar (plane sizes are int32 anyway, see argmax).
inline float window_cols(const Pool2dGeometry& g, int64_t ow) {
  const int32_t w0 = static_cast<int32_t>(ow * g.stride - g.padding);
  const int32_t end = std::min(w0 + static_cast<int32_t>(g.kernel), static_cast<int32_t>(g.W));
  return static_cast<float>(end - std::max(w0, 0));
}

// Max pooling for any window. Outputs whose window lies wholly inside the plane (all but a
// border of one or two) scan their k x k window in registers with loops the compiler unrolls,
// vectorised across ow for stride 1; border outputs take a clamped path. Stride and kernel are
// template parameters (0: taken from g at run time) so the common shapes get constants.
// Measured (64x32x28x28, k=3, one AVX-512 core): s=1 p=1 5.4 ms, s=2 p=1 5.2 ms; PyTorch 1.13
// 33 ms and 10 ms.
template <int64_t kStride, int64_t kKernel>
void max_pool_general(const Pool2dGeometry& g, const float* x, float* y, int32_t* argmax) {
  const int64_t H = g.H, W = g.W, OH = g.out_h(), OW = g.out_w();
  const int64_t s = kStride ? kStride : g.stride, k = kKernel ? kKernel : g.kernel;
  // Interior columns: ow * s - padding >= 0 and ow * s - padding + k <= W (rows alike).
  const int64_t in_lo = std::min(OW, (g.padding + s - 1) / s);
  const int64_t in_hi = std::max(in_lo, std::min(OW, (W - k + g.padding) / s + 1));
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    const float* xp = x + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      const int64_t h0 = oh * s - g.padding;
      const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h0 + k, H);
      float* yr = y + (p * OH + oh) * OW;
      int32_t* ar = argmax + (p * OH + oh) * OW;
      // Scans rows [hs, he) x columns [ws, we) from the first real element, so padding never
      // enters; row-major order keeps the first-max tie rule.
      auto clamped = [&](int64_t ow) {
        const int64_t w0 = ow * s - g.padding;
        const int64_t ws = std::max<int64_t>(w0, 0), we = std::min(w0 + k, W);
        int32_t best_index = static_cast<int32_t>(hs * W + ws);
        float best = xp[best_index];
        for (int64_t h = hs; h < he; ++h)
          for (int64_t w = ws; w < we; ++w)
            max_step(xp[h * W + w], static_cast<int32_t>(h * W + w), best, best_index);
        yr[ow] = best;
        ar[ow] = best_index;
      };
      if (h0 < 0 || h0 + k > H) {
        for (int64_t ow = 0; ow < OW; ++ow) clamped(ow);
        continue;
      }
      for (int64_t ow = 0; ow < in_lo; ++ow) clamped(ow);
      // Idempotent per ow, so the blocks may overlap. Indices in int32 (as argmax is), which
      // the vectoriser handles where the int64 forms defeated it.
      const int64_t top = h0 * W - g.padding;  // window (0, 0) of ow is xp[top + ow * s]
      const int32_t top_index = static_cast<int32_t>(top);
      const int32_t w32 = static_cast<int32_t>(W), s32 = static_cast<int32_t>(s);
      auto interior = [&](int64_t t) {
        const int64_t ow = in_lo + t;
        const int32_t c = static_cast<int32_t>(ow) * s32;
        float best = xp[top + ow * s];
        int32_t best_index = top_index + c;
        for (int32_t i = 0; i < static_cast<int32_t>(k); ++i)
          for (int32_t j = 0; j < static_cast<int32_t>(k); ++j)
            max_step(xp[top + ow * s + i * W + j], top_index + c + i * w32 + j, best, best_index);
        yr[ow] = best;
        ar[ow] = best_index;
      };
      // Strided taps do not vectorise with GCC 12 ("data access with gaps requires scalar
      // epilogue loop"), and an `omp simd` loop that fails to vectorise keeps its lane-private
      // copies in memory (measured 2x slower than a plain loop); so only stride 1 is blocked.
      if constexpr (kStride == 1) {
        overlapped_blocks(in_hi - in_lo, interior);
      } else {
        for (int64_t t = 0; t < in_hi - in_lo; ++t) interior(t);
      }
      for (int64_t ow = in_hi; ow < OW; ++ow) clamped(ow);
    }
  }
}

template <int64_t kStride>
void avg_pool_general(const Pool2dGeometry& g, const float* x, float* y) {
  const int64_t H = g.H, W = g.W, OH = g.out_h(), OW = g.out_w();
  const int64_t s = kStride ? kStride : g.stride;
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    const float* xp = x + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      int64_t hs, he;
      window_rows(g, oh, hs, he);
      float* yr = y + (p * OH + oh) * OW;
      std::fill(yr, yr + OW, 0.0f);
      for (int64_t h = hs; h < he; ++h) {
        for (int64_t j = 0; j < g.kernel; ++j) {
          const OutRange r = columns_inside(g, OW, j);
          const int64_t tap = h * W - g.padding + j;  // input index of the tap for ow = 0
          for (int64_t ow = r.lo; ow < r.hi; ++ow) yr[ow] += xp[tap + ow * s];
        }
      }
      const float rows = static_cast<float>(he - hs);
#pragma omp simd
      for (int64_t ow = 0; ow < OW; ++ow) yr[ow] /= rows * window_cols(g, ow);
    }
  }
}

template <int64_t kStride>
void avg_pool_backward_general(const Pool2dGeometry& g, const float* dy, float* dx) {
  const int64_t H = g.H, W = g.W, OH = g.out_h(), OW = g.out_w();
  const int64_t s = kStride ? kStride : g.stride;
  std::memset(dx, 0, static_cast<size_t>(g.N * g.C * H * W) * sizeof(float));
  // Each output's dy / count, computed once per output instead of once per tap, for up to
  // kChunk outputs of a row at a time (a stack buffer: kernels do not allocate).
  constexpr int64_t kChunk = 64;
  float scaled[kChunk];
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    float* dxp = dx + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      int64_t hs, he;
      window_rows(g, oh, hs, he);
      const float* dyr = dy + (p * OH + oh) * OW;
      const float rows = static_cast<float>(he - hs);
      for (int64_t c0 = 0; c0 < OW; c0 += kChunk) {
        const int64_t c1 = std::min(OW, c0 + kChunk);
        for (int64_t ow = c0; ow < c1; ++ow) scaled[ow - c0] = dyr[ow] / (rows * window_cols(g, ow));
        for (int64_t h = hs; h < he; ++h) {
          for (int64_t j = 0; j < g.kernel; ++j) {
            const OutRange r = columns_inside(g, OW, j);
            float* row = dxp + h * W;
            const int64_t tap = j - g.padding;  // column of the tap for ow = 0
            const int64_t lo = std::max(r.lo, c0), hi = std::min(r.hi, c1);
            // Within one (h, j) sweep distinct ow touch distinct columns, so the scatter is
            // conflict-free.
            for (int64_t ow = lo; ow < hi; ++ow) row[tap + ow * s] += scaled[ow - c0];
          }
        }
      }
    }
  }
}

}  // namespace

void max_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y, int32_t* argmax) {
  if (is_2x2(g)) return max_pool_2x2(g, x, y, argmax);
  if (g.kernel == 3 && g.stride == 1) return max_pool_general<1, 3>(g, x, y, argmax);
  if (g.kernel == 3 && g.stride == 2) return max_pool_general<2, 3>(g, x, y, argmax);
  return max_pool_general<0, 0>(g, x, y, argmax);
}

void max_pool2d_backward(const Pool2dGeometry& g, const float* dy, const int32_t* argmax, float* dx) {
  const int64_t HW = g.H * g.W, OHW = g.out_h() * g.out_w();
  std::memset(dx, 0, static_cast<size_t>(g.N * g.C * HW) * sizeof(float));
  for (int64_t p = 0; p < g.N * g.C; ++p) {
    float* dxp = dx + p * HW;
    const float* dyp = dy + p * OHW;
    const int32_t* ap = argmax + p * OHW;
    for (int64_t o = 0; o < OHW; ++o) dxp[ap[o]] += dyp[o];
  }
}

void avg_pool2d_forward(const Pool2dGeometry& g, const float* x, float* y) {
  if (is_2x2(g)) return avg_pool_2x2(g, x, y);
  switch (g.stride) {
    case 1:
      return avg_pool_general<1>(g, x, y);
    case 2:
      return avg_pool_general<2>(g, x, y);
    default:
      return avg_pool_general<0>(g, x, y);
  }
}

void avg_pool2d_backward(const Pool2dGeometry& g, const float* dy, float* dx) {
  const int64_t H = g.H, W = g.W, OH = g.out_h(), OW = g.out_w();
  if (is_2x2(g)) {
    // Non-overlapping windows tile the input (an odd last row/column is never read): write each
    // dx element once instead of zeroing and accumulating.
    for (int64_t p = 0; p < g.N * g.C; ++p) {
      float* dxp = dx + p * H * W;
      for (int64_t oh = 0; oh < OH; ++oh) {
        const float* dyr = dy + (p * OH + oh) * OW;
        float* r0 = dxp + 2 * oh * W;
        float* r1 = r0 + W;
        overlapped_blocks(OW, [&](int64_t ow) {
          const float v = 0.25f * dyr[ow];
          r0[2 * ow] = v;
          r0[2 * ow + 1] = v;
          r1[2 * ow] = v;
          r1[2 * ow + 1] = v;
        });
        if (W > 2 * OW) r0[W - 1] = r1[W - 1] = 0.0f;
      }
      if (H > 2 * OH) std::memset(dxp + (H - 1) * W, 0, static_cast<size_t>(W) * sizeof(float));
    }
    return;
  }
  switch (g.stride) {
    case 1:
      return avg_pool_backward_general<1>(g, dy, dx);
    case 2:
      return avg_pool_backward_general<2>(g, dy, dx);
    default:
      return avg_pool_backward_general<0>(g, dy, dx);
  }
}

void global_avg_pool2d_forward(int64_t planes, int64_t hw, const float* x, float* y) {
  const float inv = 1.0f / static_cast<float>(hw);
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * hw;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < hw; ++i) sum += xp[i];
    y[p] = sum * inv;
  }
}

void global_avg_pool2d_backward(int64_t planes, int64_t hw, const float* dy, float* dx) {
  const float inv = 1.0f / static_cast<float>(hw);
  for (int64_t p = 0; p < planes; ++p) {
    const float v = dy[p] * inv;
    float* dxp = dx + p * hw;
#pragma omp simd
    for (int64_t i = 0; i < hw; ++i) dxp[i] = v;
  }
}

}  // namespace tern::cpu
