#include "runtime/kernels/cpu/tiny_linear.h"

#include <algorithm>
#include <type_traits>

#if defined(__AVX512F__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -W(maybe-)uninitialized
// flags (GCC bug 105593, fixed in 13); the warning points into the header, so it is silenced
// there, as in comm/compress/quantizers.cpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

namespace tern::cpu {

namespace {

#if defined(__AVX512F__)

constexpr int64_t kLanes = 16;

// The first `count` lanes (1..16).
inline __mmask16 first_lanes(int64_t count) { return static_cast<__mmask16>((1u << count) - 1u); }

// A loaded vector, pinned in a register. GCC 12 otherwise folds the load into every FMA that
// uses it (one load per use: 16 loads instead of 8 per step of forward_block<4, 4>), and the
// kernels become load-bound (forward at n = 4 ran at ~55 instead of ~100 GFLOP/s).
inline __m512 pinned(__m512 v) {
  asm("" : "+v"(v));
  return v;
}

// Lane sums of 16 vectors at once: lane i of the result is the sum of v[i]'s lanes. A
// transpose-and-add tree: 15 adds and 30 shuffles for the 16 sums, where one sum at a time
// (_mm512_reduce_add_ps) costs ~9 dependent operations each, a quarter of forward_block<4, 4>.
inline __m512 lane_sums16(const __m512 (&v)[16]) {
  __m512 a[8];  // per 128-bit lane: partial sums of [v2i, v2i+1, v2i, v2i+1]
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    a[i] =
        _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  __m512 b[4];  // per 128-bit lane: partial sums of [v4i, v4i+1, v4i+2, v4i+3]
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512d lo = _mm512_castps_pd(a[2 * i]), hi = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi)));
  }
  // 128-bit lanes (0 and 1) + (2 and 3) of each input, the inputs side by side: 0x88 takes lanes
  // 0, 2 of each, 0xDD lanes 1, 3.
  const __m512 c0 =
      _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x88), _mm512_shuffle_f32x4(b[0], b[1], 0xDD));
  const __m512 c1 =
      _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x88), _mm512_shuffle_f32x4(b[2], b[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c0, c1, 0x88), _mm512_shuffle_f32x4(c0, c1, 0xDD));
}

// Outputs [o0, o0 + RO) of N rows (N·RO <= 16): N·RO accumulators over `in`, each W vector
// loaded once for all N rows and each x vector once for all RO outputs; lane sums at the end.
template <int N, int RO>
void forward_block(const float* x, const float* w, const float* b, float* y, int64_t in, int64_t out,
                   int64_t o0) {
  static_assert(N * RO <= 16, "one lane_sums16 per block");
  __m512 acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  const float* wo = w + o0 * in;
  int64_t k = 0;
  for (; k + kLanes <= in; k += kLanes) {
    __m512 xv[N];
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) xv[r] = pinned(_mm512_loadu_ps(x + r * in + k));
#pragma GCC unroll 16
    for (int j = 0; j < RO; ++j) {
      const __m512 wv = pinned(_mm512_loadu_ps(wo + j * in + k));
#pragma GCC unroll 16
      for (int r = 0; r < N; ++r) acc[r * RO + j] = _mm512_fmadd_ps(xv[r], wv, acc[r * RO + j]);
    }
  }
  if (k < in) {  // masked loads read zeros past the row's end (and never fault there)
    const __mmask16 m = first_lanes(in - k);
    __m512 xv[N];
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) xv[r] = pinned(_mm512_maskz_loadu_ps(m, x + r * in + k));
#pragma GCC unroll 16
    for (int j = 0; j < RO; ++j) {
      const __m512 wv = pinned(_mm512_maskz_loadu_ps(m, wo + j * in + k));
#pragma GCC unroll 16
      for (int r = 0; r < N; ++r) acc[r * RO + j] = _mm512_fmadd_ps(xv[r], wv, acc[r * RO + j]);
    }
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, lane_sums16(acc));
#pragma GCC unroll 16
  for (int r = 0; r < N; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < RO; ++j) y[r * out + o0 + j] = sums[r * RO + j] + (b ? b[o0 + j] : 0.0f);
}

template <int N>
void forward_rows(const float* x, const float* w, const float* b, float* y, int64_t in, int64_t out) {
  // As many outputs per block as fit 16 accumulators (one lane_sums16; with x and W, within the
  // 32 vector registers): 8 or more independent FMA chains (two pipes, 4 cycles' latency).
  // n = 1 streams W at one FMA per load, bound by the caches, where 8 rows of W at a time
  // measured a few % faster than 16.
  constexpr int kBlock = N == 1 ? 8 : 16 / N;
  int64_t o = 0;
  for (; o + kBlock <= out; o += kBlock) forward_block<N, kBlock>(x, w, b, y, in, out, o);
  // The rest (< kBlock outputs) in blocks of 8, 4, 2, 1.
  if constexpr (kBlock > 8)
    if (o + 8 <= out) forward_block<N, 8>(x, w, b, y, in, out, o), o += 8;
  if constexpr (kBlock > 4)
    if (o + 4 <= out) forward_block<N, 4>(x, w, b, y, in, out, o), o += 4;
  if constexpr (kBlock > 2)
    if (o + 2 <= out) forward_block<N, 2>(x, w, b, y, in, out, o), o += 2;
  if (o < out) forward_block<N, 1>(x, w, b, y, in, out, o);
}

// dx columns [k0, k0 + 16·KV) of N rows, the last vector limited to `last` lanes: the
// accumulators stay in registers while every row of W streams past once.
template <int N, int KV>
void data_block(const float* w, const float* dy, float* dx, int64_t in, int64_t out, int64_t k0,
                __mmask16 last) {
  __m512 acc[N][KV];
#pragma GCC unroll 16
  for (int r = 0; r < N; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < KV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t o = 0; o < out; ++o) {
    const float* wo = w + o * in + k0;
    __m512 wv[KV];
#pragma GCC unroll 16
    for (int v = 0; v + 1 < KV; ++v) wv[v] = pinned(_mm512_loadu_ps(wo + v * kLanes));
    wv[KV - 1] = pinned(_mm512_maskz_loadu_ps(last, wo + (KV - 1) * kLanes));
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) {
      const __m512 d = _mm512_set1_ps(dy[r * out + o]);
#pragma GCC unroll 16
      for (int v = 0; v < KV; ++v) acc[r][v] = _mm512_fmadd_ps(d, wv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < N; ++r) {
    float* row = dx + r * in + k0;
#pragma GCC unroll 16
    for (int v = 0; v + 1 < KV; ++v) _mm512_storeu_ps(row + v * kLanes, acc[r][v]);
    _mm512_mask_storeu_ps(row + (KV - 1) * kLanes, last, acc[r][KV - 1]);
  }
}

// The last, partial block: `vectors` (1..KV) vectors, picked at compile time.
template <int N, int KV>
void data_tail(const float* w, const float* dy, float* dx, int64_t in, int64_t out, int64_t k0,
               int64_t vectors, __mmask16 last) {
  if constexpr (KV > 1)
    if (vectors < KV) return data_tail<N, KV - 1>(w, dy, dx, in, out, k0, vectors, last);
  data_block<N, KV>(w, dy, dx, in, out, k0, last);
}

template <int N>
void data_rows(const float* w, const float* dy, float* dx, int64_t in, int64_t out) {
  // Vectors of dx per row: up to 16 accumulators, as in forward_rows. For n = 1 the wider block
  // (fewer passes over W's rows) measured ~6% faster than 8 vectors.
  constexpr int kBlock = 16 / N;
  const __mmask16 all = 0xFFFF;
  int64_t k = 0;
  for (; k + kBlock * kLanes <= in; k += kBlock * kLanes) data_block<N, kBlock>(w, dy, dx, in, out, k, all);
  const int64_t rest = in - k;
  if (rest == 0) return;
  const int64_t vectors = (rest + kLanes - 1) / kLanes;
  data_tail<N, kBlock>(w, dy, dx, in, out, k, vectors, first_lanes(rest - (vectors - 1) * kLanes));
}

// dw rows [o0, o0 + RO) += Σ_r dy[r, o]·x[r, :]: the N·RO factors dy[r, o] stay broadcast in
// registers; each x vector is loaded once for the RO rows, each dw vector read and written once.
template <int N, int RO>
void weight_block(const float* x, const float* dy, float* dw, int64_t in, int64_t out, int64_t o0) {
  __m512 d[N][RO];
#pragma GCC unroll 16
  for (int r = 0; r < N; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < RO; ++j) d[r][j] = _mm512_set1_ps(dy[r * out + o0 + j]);
  float* dwo = dw + o0 * in;
  int64_t k = 0;
  for (; k + kLanes <= in; k += kLanes) {
    __m512 xv[N];
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) xv[r] = pinned(_mm512_loadu_ps(x + r * in + k));
#pragma GCC unroll 16
    for (int j = 0; j < RO; ++j) {
      __m512 a = _mm512_loadu_ps(dwo + j * in + k);
#pragma GCC unroll 16
      for (int r = 0; r < N; ++r) a = _mm512_fmadd_ps(d[r][j], xv[r], a);
      _mm512_storeu_ps(dwo + j * in + k, a);
    }
  }
  if (k < in) {
    const __mmask16 m = first_lanes(in - k);
    __m512 xv[N];
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) xv[r] = pinned(_mm512_maskz_loadu_ps(m, x + r * in + k));
#pragma GCC unroll 16
    for (int j = 0; j < RO; ++j) {
      __m512 a = _mm512_maskz_loadu_ps(m, dwo + j * in + k);
#pragma GCC unroll 16
      for (int r = 0; r < N; ++r) a = _mm512_fmadd_ps(d[r][j], xv[r], a);
      _mm512_mask_storeu_ps(dwo + j * in + k, m, a);
    }
  }
}

// Bound by reading and writing dw once (a rank-n update does 2n flops per 8 bytes).
template <int N>
void weight_rows(const float* x, const float* dy, float* dw, int64_t in, int64_t out) {
  int64_t o = 0;
  for (; o + 4 <= out; o += 4) weight_block<N, 4>(x, dy, dw, in, out, o);
  for (; o < out; ++o) weight_block<N, 1>(x, dy, dw, in, out, o);
}

#else  // plain C++: the same loops, left to the compiler's vectoriser

template <int N>
void forward_rows(const float* x, const float* w, const float* b, float* y, int64_t in, int64_t out) {
  for (int r = 0; r < N; ++r)
    for (int64_t o = 0; o < out; ++o) {
      const float* xr = x + r * in;
      const float* wo = w + o * in;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < in; ++k) acc += xr[k] * wo[k];
      y[r * out + o] = acc + (b ? b[o] : 0.0f);
    }
}

template <int N>
void data_rows(const float* w, const float* dy, float* dx, int64_t in, int64_t out) {
  for (int r = 0; r < N; ++r) {
    float* row = dx + r * in;
    std::fill(row, row + in, 0.0f);
    for (int64_t o = 0; o < out; ++o) {
      const float d = dy[r * out + o];
      const float* wo = w + o * in;
#pragma omp simd
      for (int64_t k = 0; k < in; ++k) row[k] += d * wo[k];
    }
  }
}

template <int N>
void weight_rows(const float* x, const float* dy, float* dw, int64_t in, int64_t out) {
  for (int64_t o = 0; o < out; ++o) {
    float* dwo = dw + o * in;
    for (int r = 0; r < N; ++r) {
      const float d = dy[r * out + o];
      const float* xr = x + r * in;
#pragma omp simd
      for (int64_t k = 0; k < in; ++k) dwo[k] += d * xr[k];
    }
  }
}

#endif

}  // namespace

#if defined(__AVX512F__)
bool tiny_linear_vectorised() { return true; }
#else
bool tiny_linear_vectorised() { return false; }
#endif

namespace {

// Calls fn(std::integral_constant<int, N>, r) for each block of N <= 4 rows starting at row r:
// every entry point takes the rows 4 at a time, so any n is correct; n <= 4 is one pass over W.
template <typename Fn>
void for_row_blocks(int64_t n, Fn&& fn) {
  for (int64_t r = 0; r < n; r += kTinyLinearMaxRows) {
    switch (std::min(kTinyLinearMaxRows, n - r)) {
      case 1:
        fn(std::integral_constant<int, 1>{}, r);
        break;
      case 2:
        fn(std::integral_constant<int, 2>{}, r);
        break;
      case 3:
        fn(std::integral_constant<int, 3>{}, r);
        break;
      default:
        fn(std::integral_constant<int, 4>{}, r);
        break;
    }
  }
}

}  // namespace

void tiny_linear_forward(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t in,
                         int64_t out) {
  for_row_blocks(n, [&](auto rows, int64_t r) { forward_rows<rows()>(x + r * in, w, b, y + r * out, in, out); });
}

void tiny_linear_backward_data(const float* w, const float* dy, float* dx, int64_t n, int64_t in,
                               int64_t out) {
  for_row_blocks(n, [&](auto rows, int64_t r) { data_rows<rows()>(w, dy + r * out, dx + r * in, in, out); });
}

void tiny_linear_backward_weight(const float* x, const float* dy, float* dw, float* db, int64_t n, int64_t in,
                                 int64_t out) {
  for_row_blocks(n, [&](auto rows, int64_t r) { weight_rows<rows()>(x + r * in, dy + r * out, dw, in, out); });
  if (db)
    for (int64_t r = 0; r < n; ++r) {
      const float* row = dy + r * out;
#pragma omp simd
      for (int64_t o = 0; o < out; ++o) db[o] += row[o];
    }
}

}  // namespace tern::cpu
