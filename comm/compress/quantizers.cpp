#include "comm/compress/quantizers.h"

// Wire layout, shared by all four codecs:
//
//   [header: f32 scale(s), little-endian][payload: ceil(n * B / 8) bytes]
//
// Every value becomes a B-bit code. The payload stores the codes as bit planes, 32 values at a time:
// a full group of 32 values is B little-endian u32 words, word k holding bit k of the 32 codes (bit j
// of the word is value j of the group). The last r = n % 32 values use the same planes cut to r bits
// and concatenated LSB-first into one bit stream (plane k at stream bits [k r, (k + 1) r)), so there
// is no padding except to the final byte. With B = 1 this is a plain LSB-first bit stream.
// Planes cost no per-value branch either way: the sign plane is one vector compare, and the level
// planes of 32 values are four 8x8 bit-matrix transposes (one GFNI instruction with AVX-512).
//
// Codes:
//   qsgd, terngrad  B = 1 + L, L = ceil(log2(s + 1)). Plane 0 = sign (1: x < 0), planes 1..L = the
//                   level, least significant bit first; decodes to +-level * (scale / s). The header
//                   is ||x||_2 (QSGD) or max|x| (TernGrad, which is the case s = 1).
//   signsgd         B = 1: set for x < 0 (sign(0) = +). Header: mean|x|.
//   onebit          B = 1: set for x >= 0. Header: mean of the x >= 0, then mean of the x < 0.
//
// Stochastic rounding: level = floor(r + u) with r = s |x| / scale and u uniform in (0, 1), so
// E[level] = r to 2^-24 (u takes the 2^23 midpoints (k + 1/2) / 2^23: the error has no sign, it is
// not a shrink toward 0). floor is exact: a round-toward-zero add in the vector path, an integer
// compare in the plain one. Random bits: encode draws one u64 key from rng (every call advances rng
// by the same amount, n = 0 included); value j of group g (i = 32 g + j) takes
// k = mix32(seed_g + j * 0x9E3779B9) >> 9, seed_g = the low 32 bits of mix_seed(key + g). This
// counter-based generator lets the vector path draw 16 at once, keeps groups independent, and makes
// the bytes a function of rng's state and x only.
//
// Speed: with AVX-512 (F, BW, DQ, VL, VBMI) and GFNI (Ice Lake, Zen 4 and later) the whole-buffer
// loops use intrinsics; elsewhere plain loops produce the same bytes (a test pins them). Sums go into
// 32 double lanes (lane j takes the values i = j mod 32), added in lane order at the end, so both
// paths round alike.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "runtime/error.h"
#include "runtime/kernels/cpu/mix32.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && \
    defined(__AVX512VBMI__) && defined(__GFNI__)
#define TERN_QUANTIZERS_AVX512 1
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -Wmaybe-uninitialized flags
// (GCC bug 105593, fixed in 13); the warning points into the header, so it is silenced there.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

namespace tern {
namespace {

static_assert(std::endian::native == std::endian::little, "the wire layout is little-endian");

constexpr int kGroup = 32;
constexpr int kMaxBits = 32;
constexpr uint32_t kLaneStep = 0x9E3779B9u;

size_t payload_bytes(int64_t n, int bits) { return static_cast<size_t>((n * bits + 7) / 8); }

float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store_f32(uint8_t* p, float v) { std::memcpy(p, &v, sizeof v); }
uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, sizeof v); }

// The tail's r < 32 values: plane k's low r bits at stream bits [k r, (k + 1) r).
void write_tail(const uint32_t* planes, int bits, int r, uint8_t* out) {
  std::memset(out, 0, payload_bytes(r, bits));
  for (int k = 0; k < bits; ++k) {
    for (int j = 0; j < r; ++j) {
      const int at = k * r + j;
      out[at / 8] = static_cast<uint8_t>(out[at / 8] | (((planes[k] >> j) & 1u) << (at % 8)));
    }
  }
}
void read_tail(const uint8_t* in, int bits, int r, uint32_t* planes) {
  for (int k = 0; k < bits; ++k) {
    uint32_t w = 0;
    for (int j = 0; j < r; ++j) {
      const int at = k * r + j;
      w |= static_cast<uint32_t>((in[at / 8] >> (at % 8)) & 1u) << j;
    }
    planes[k] = w;
  }
}

using cpu::mix32;  // lowbias32 (runtime/kernels/cpu/mix32.h)
inline uint32_t group_seed(uint64_t key, int64_t g) {
  return static_cast<uint32_t>(mix_seed(key + static_cast<uint64_t>(g)));
}

// r_i = s |x_i| / denom is computed as min((|x_i| pre) inv, s): pre is a power of two that brings denom
// near 1 (exact; no overflow or denormal inv for extreme denominators), and inv = s / (denom pre) is
// rounded up so |x_i| = denom gives r_i >= s before the clamp, i.e. exactly level s.
struct Rounding {
  float pre = 1;
  float inv = 0;
  float s = 1;
};

Rounding make_rounding(float denom, int levels) {
  Rounding q;
  q.s = static_cast<float>(levels);
  if (!(denom > 0) || !std::isfinite(denom)) return q;  // zero vector (or a non-finite one): level 0
  const int e = std::clamp(-std::ilogb(denom), -126, 126);
  q.pre = std::ldexp(1.0f, e);
  const double exact = static_cast<double>(levels) / (static_cast<double>(denom) * q.pre);
  q.inv = static_cast<float>(exact);
  if (static_cast<double>(q.inv) < exact) q.inv = std::nextafter(q.inv, INFINITY);
  return q;
}

// ---- one group of 32, plain code: the tails on every machine, everything without AVX-512 ----

// Transposes the 8x8 bit matrix whose row t is byte t and column i is bit i (Hacker's Delight 7-3):
// 8 levels (one byte per value) become 8 planes (one byte per bit).
inline uint64_t transpose8x8(uint64_t x) {
  uint64_t t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;
  x ^= t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL;
  x ^= t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL;
  return x ^ t ^ (t << 28);
}

// Writes the group's 1 + level_bits planes.
inline void encode_levels_group(const float* __restrict x, const Rounding& q, uint32_t seed, int level_bits,
                                uint8_t* __restrict out) {
  int32_t level[kGroup];
  uint32_t sign = 0;
  for (int j = 0; j < kGroup; ++j) {
    const float r = std::min(std::fabs(x[j]) * q.pre * q.inv, q.s);
    const auto whole = static_cast<int32_t>(r);
    const float frac = r - static_cast<float>(whole);  // exact (Sterbenz)
    const auto k = static_cast<int32_t>(mix32(seed + static_cast<uint32_t>(j) * kLaneStep) >> 9);
    // floor(r + (k + 1/2) / 2^23) = whole + [2k + 1 >= 2^24 - floor(frac 2^24)], in exact integers.
    level[j] = whole + (2 * k + 1 >= (1 << 24) - static_cast<int32_t>(frac * 0x1p24f) ? 1 : 0);
    sign |= static_cast<uint32_t>(x[j] < 0) << j;
  }
  store_u32(out, sign);
  // Byte c of 8 levels -> planes 8c..8c+7 of those 8 values; then plane k's word from the 4 transposes.
  for (int c = 0; 8 * c < level_bits; ++c) {
    uint8_t bytes[kGroup];
    for (int j = 0; j < kGroup; ++j) bytes[j] = static_cast<uint8_t>(level[j] >> (8 * c));
    uint64_t t[4];
    for (int q8 = 0; q8 < 4; ++q8) {
      std::memcpy(&t[q8], bytes + 8 * q8, 8);
      t[q8] = transpose8x8(t[q8]);
    }
    const int count = std::min(8, level_bits - 8 * c);
    for (int k = 0; k < count; ++k) {
      uint32_t w = 0;
      for (int q8 = 0; q8 < 4; ++q8) w |= static_cast<uint32_t>((t[q8] >> (8 * k)) & 0xFF) << (8 * q8);
      store_u32(out + 4 * (1 + 8 * c + k), w);
    }
  }
}

// out[j] += (-1)^sign_j level_j unit.
inline void decode_add_levels_group(const uint8_t* __restrict in, int level_bits, float unit,
                                    float* __restrict out) {
  int32_t level[kGroup] = {};
  for (int k = 0; k < level_bits; ++k) {
    const uint32_t w = load_u32(in + 4 * (k + 1));
    for (int j = 0; j < kGroup; ++j) level[j] |= static_cast<int32_t>((w >> j) & 1u) << k;
  }
  const uint32_t sign = load_u32(in);
  for (int j = 0; j < kGroup; ++j) {
    const float v = static_cast<float>(level[j]) * unit;
    out[j] += std::bit_cast<float>(std::bit_cast<uint32_t>(v) ^ (((sign >> j) & 1u) << 31));
  }
}

// A binary code's bit for one value, and what its lanes accumulate: signsgd sums |x| into a;
// onebit sums x into a and the x >= 0 into b.
inline bool binary_bit(float v, bool onebit) { return onebit ? v >= 0 : v < 0; }
inline void binary_sums(float v, bool onebit, double& a, double& b) {
  if (onebit) {
    a += v;
    b += v >= 0 ? static_cast<double>(v) : 0.0;
  } else {
    a += std::fabs(v);
  }
}

// ---- whole buffers of `groups` full groups ----

#if defined(TERN_QUANTIZERS_AVX512)

// lanes[j] += sum over g of x[32 g + j]^2.
void sum_squares(const float* x, int64_t groups, double* lanes) {
  __m512d acc[4];
  for (int h = 0; h < 4; ++h) acc[h] = _mm512_loadu_pd(lanes + 8 * h);
  for (int64_t g = 0; g < groups; ++g) {
    for (int h = 0; h < 4; ++h) {
      const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + kGroup * g + 8 * h));
      acc[h] = _mm512_fmadd_pd(v, v, acc[h]);  // the square is exact in double: same as mul, add
    }
  }
  for (int h = 0; h < 4; ++h) _mm512_storeu_pd(lanes + 8 * h, acc[h]);
}

float max_abs(const float* x, int64_t groups) {
  __m512 m0 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    m0 = _mm512_max_ps(m0, _mm512_abs_ps(_mm512_loadu_ps(x + kGroup * g)));
    m1 = _mm512_max_ps(m1, _mm512_abs_ps(_mm512_loadu_ps(x + kGroup * g + 16)));
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

inline __m512i mix32x16(__m512i x) {
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0x846ca68bU)));
  return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

// Levels <-> bit planes, 8 planes at a time: byte c of the 32 levels (planes 8c..8c+7) is an 8x8 bit
// matrix per 8 values, and one GF2P8AFFINEQB transposes all four (Intel's GFNI: out byte j of a
// qword, bit i = parity(A.byte[7 - i] & x_j); with x_j = 1 << j that is bit j of A.byte[7 - i]).
// The byte permutes around it put rows in the order the transpose wants and planes in wire order.
struct PlaneShuffles {
  __m512i gather[4];   // encode: byte 8q + t <- byte c of level 8q + 7 - t (c = index)
  __m256i to_wire;     // encode: byte 4j + q <- byte 8q + j (plane j's 4 bytes together)
  __m256i from_wire;   // decode: byte 8q + t <- byte 4(7 - t) + q
  __m256i unit_bytes;  // x_j = 1 << j in every qword

  PlaneShuffles() {
    alignas(64) uint8_t idx[64] = {};
    for (int c = 0; c < 4; ++c) {
      for (int q = 0; q < 4; ++q) {
        for (int t = 0; t < 8; ++t) idx[8 * q + t] = static_cast<uint8_t>(4 * (8 * q + 7 - t) + c);
      }
      gather[c] = _mm512_load_si512(idx);
    }
    alignas(32) uint8_t to[32], from[32];
    for (int q = 0; q < 4; ++q) {
      for (int j = 0; j < 8; ++j) {
        to[4 * j + q] = static_cast<uint8_t>(8 * q + j);
        from[8 * q + j] = static_cast<uint8_t>(4 * (7 - j) + q);
      }
    }
    to_wire = _mm256_load_si256(reinterpret_cast<const __m256i*>(to));
    from_wire = _mm256_load_si256(reinterpret_cast<const __m256i*>(from));
    unit_bytes = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  }
};

inline __mmask32 first_bytes(int count) { return count >= 32 ? ~__mmask32{0} : (__mmask32{1} << count) - 1; }

// Writes planes 0..level_bits-1 of the levels lo (values 0..15) and hi (16..31) to out (4 bytes each).
inline void store_planes(const PlaneShuffles& sh, __m512i lo, __m512i hi, int level_bits, uint8_t* out) {
  for (int c = 0; 8 * c < level_bits; ++c) {
    const __m256i rows = _mm512_castsi512_si256(_mm512_permutex2var_epi8(lo, sh.gather[c], hi));
    const __m256i planes = _mm256_gf2p8affine_epi64_epi8(sh.unit_bytes, rows, 0);
    const int count = std::min(8, level_bits - 8 * c);
    _mm256_mask_storeu_epi8(out + 32 * c, first_bytes(4 * count),
                            _mm256_permutexvar_epi8(sh.to_wire, planes));
  }
}

// The inverse: levels of values 0..15 into lo and 16..31 into hi from level_bits planes at in.
inline __m256i load_level_bytes(const PlaneShuffles& sh, const uint8_t* in, int level_bits, int c) {
  const int count = std::min(8, level_bits - 8 * c);
  const __m256i planes = _mm256_maskz_loadu_epi8(first_bytes(4 * count), in + 32 * c);
  return _mm256_gf2p8affine_epi64_epi8(sh.unit_bytes, _mm256_permutexvar_epi8(sh.from_wire, planes), 0);
}
inline void load_planes(const PlaneShuffles& sh, const uint8_t* in, int level_bits, __m512i& lo,
                        __m512i& hi) {
  __m256i bytes = load_level_bytes(sh, in, level_bits, 0);  // byte v = the low byte of level v
  lo = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes));
  hi = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(bytes, 1));
  for (int c = 1; 8 * c < level_bits; ++c) {
    bytes = load_level_bytes(sh, in, level_bits, c);
    lo = _mm512_or_si512(lo, _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes)), 8 * c));
    hi = _mm512_or_si512(hi,
                         _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(bytes, 1)), 8 * c));
  }
}

void encode_levels(const float* x, int64_t groups, const Rounding& q, uint64_t key, int level_bits,
                   uint8_t* out) {
  const PlaneShuffles sh;
  const __m512 pre = _mm512_set1_ps(q.pre), inv = _mm512_set1_ps(q.inv), s = _mm512_set1_ps(q.s);
  const __m512 zero = _mm512_setzero_ps(), below_one = _mm512_set1_ps(1.0f - 0x1p-24f);
  const __m512i one_bits = _mm512_castps_si512(_mm512_set1_ps(1.0f));
  __m512i lane_offset[2];
  for (int h = 0; h < 2; ++h) {
    alignas(64) uint32_t offsets[16];
    for (int j = 0; j < 16; ++j) offsets[j] = static_cast<uint32_t>(16 * h + j) * kLaneStep;
    lane_offset[h] = _mm512_load_si512(offsets);
  }
  const int bytes_per_group = 4 * (1 + level_bits);
  for (int64_t g = 0; g < groups; ++g) {
    const __m512i seed = _mm512_set1_epi32(static_cast<int32_t>(group_seed(key, g)));
    __m512i level[2];
    __mmask16 negative[2];
    for (int h = 0; h < 2; ++h) {
      const __m512 v = _mm512_loadu_ps(x + kGroup * g + 16 * h);
      negative[h] = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
      const __m512 r = _mm512_min_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_abs_ps(v), pre), inv), s);
      // u = 1.k - (1 - 2^-24) = (k + 1/2) / 2^23 with the hash's top 23 bits as k: exact.
      const __m512i k = _mm512_srli_epi32(mix32x16(_mm512_add_epi32(seed, lane_offset[h])), 9);
      const __m512 u = _mm512_sub_ps(_mm512_castsi512_ps(_mm512_or_si512(k, one_bits)), below_one);
      // Rounding toward zero never carries r + u past an integer it does not reach, so the
      // truncation is floor(r + u) exactly (integers up to 2^24 are floats).
      level[h] = _mm512_cvttps_epi32(_mm512_add_round_ps(r, u, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC));
    }
    uint8_t* o = out + bytes_per_group * g;
    store_u32(o, _cvtmask32_u32(_mm512_kunpackw(negative[1], negative[0])));
    store_planes(sh, level[0], level[1], level_bits, o + 4);
  }
}

void decode_add_levels(const uint8_t* in, int64_t groups, int level_bits, float unit, float* out) {
  const PlaneShuffles sh;
  const __m512 unit_v = _mm512_set1_ps(unit), sign_bit = _mm512_set1_ps(-0.0f);
  const int bytes_per_group = 4 * (1 + level_bits);
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* p = in + bytes_per_group * g;
    __m512i lo, hi;
    load_planes(sh, p + 4, level_bits, lo, hi);
    const uint32_t sign = load_u32(p);
    float* o = out + kGroup * g;
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), unit_v);
    v = _mm512_mask_xor_ps(v, static_cast<__mmask16>(sign), v, sign_bit);
    _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), v));
    v = _mm512_mul_ps(_mm512_cvtepi32_ps(hi), unit_v);
    v = _mm512_mask_xor_ps(v, static_cast<__mmask16>(sign >> 16), v, sign_bit);
    _mm512_storeu_ps(o + 16, _mm512_add_ps(_mm512_loadu_ps(o + 16), v));
  }
}

// Writes one word per group and adds binary_sums into lanes a[32], b[32]; returns the set bits.
template <bool kOnebit>
int64_t encode_binary(const float* x, int64_t groups, uint8_t* out, double* a, double* b) {
  constexpr int kPredicate = kOnebit ? _CMP_GE_OQ : _CMP_LT_OQ;
  __m512d acc_a[4], acc_b[4];
  for (int h = 0; h < 4; ++h) {
    acc_a[h] = _mm512_loadu_pd(a + 8 * h);
    acc_b[h] = _mm512_loadu_pd(b + 8 * h);
  }
  const __m512 zero = _mm512_setzero_ps();
  int64_t set = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const float* xg = x + kGroup * g;
    const __mmask16 lo = _mm512_cmp_ps_mask(_mm512_loadu_ps(xg), zero, kPredicate);
    const __mmask16 hi = _mm512_cmp_ps_mask(_mm512_loadu_ps(xg + 16), zero, kPredicate);
    const uint32_t w = _cvtmask32_u32(_mm512_kunpackw(hi, lo));
    store_u32(out + 4 * g, w);
    set += std::popcount(w);
    for (int h = 0; h < 4; ++h) {
      const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(xg + 8 * h));
      if constexpr (kOnebit) {
        acc_a[h] = _mm512_add_pd(acc_a[h], v);
        acc_b[h] = _mm512_mask_add_pd(acc_b[h], static_cast<__mmask8>(w >> (8 * h)), acc_b[h], v);
      } else {
        acc_a[h] = _mm512_add_pd(acc_a[h], _mm512_abs_pd(v));
      }
    }
  }
  for (int h = 0; h < 4; ++h) {
    _mm512_storeu_pd(a + 8 * h, acc_a[h]);
    _mm512_storeu_pd(b + 8 * h, acc_b[h]);
  }
  return set;
}

int64_t encode_binary(const float* x, int64_t groups, bool onebit, uint8_t* out, double* a, double* b) {
  return onebit ? encode_binary<true>(x, groups, out, a, b) : encode_binary<false>(x, groups, out, a, b);
}

// out[i] += bit i set ? v1 : v0.
void decode_add_binary(const uint8_t* in, int64_t groups, float v0, float v1, float* out) {
  const __m512 clear = _mm512_set1_ps(v0), set = _mm512_set1_ps(v1);
  for (int64_t g = 0; g < groups; ++g) {
    const uint32_t w = load_u32(in + 4 * g);
    float* o = out + kGroup * g;
    const __m512 lo = _mm512_mask_blend_ps(static_cast<__mmask16>(w), clear, set);
    const __m512 hi = _mm512_mask_blend_ps(static_cast<__mmask16>(w >> 16), clear, set);
    _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), lo));
    _mm512_storeu_ps(o + 16, _mm512_add_ps(_mm512_loadu_ps(o + 16), hi));
  }
}

#else  // plain loops, written so the compiler can vectorise them

void sum_squares(const float* __restrict x, int64_t groups, double* __restrict lanes) {
  for (int64_t g = 0; g < groups; ++g) {
    for (int j = 0; j < kGroup; ++j) lanes[j] += static_cast<double>(x[kGroup * g + j]) * x[kGroup * g + j];
  }
}

float max_abs(const float* __restrict x, int64_t groups) {
  float lanes[kGroup] = {};
  for (int64_t g = 0; g < groups; ++g) {
    for (int j = 0; j < kGroup; ++j) lanes[j] = std::max(lanes[j], std::fabs(x[kGroup * g + j]));
  }
  return *std::max_element(lanes, lanes + kGroup);
}

void encode_levels(const float* x, int64_t groups, const Rounding& q, uint64_t key, int level_bits,
                   uint8_t* out) {
  for (int64_t g = 0; g < groups; ++g) {
    encode_levels_group(x + kGroup * g, q, group_seed(key, g), level_bits, out + 4 * (1 + level_bits) * g);
  }
}

void decode_add_levels(const uint8_t* in, int64_t groups, int level_bits, float unit, float* out) {
  for (int64_t g = 0; g < groups; ++g) {
    decode_add_levels_group(in + 4 * (1 + level_bits) * g, level_bits, unit, out + kGroup * g);
  }
}

int64_t encode_binary(const float* __restrict x, int64_t groups, bool onebit, uint8_t* __restrict out,
                      double* __restrict a, double* __restrict b) {
  int64_t set = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const float* xg = x + kGroup * g;
    uint32_t w = 0;
    for (int j = 0; j < kGroup; ++j) {
      w |= static_cast<uint32_t>(binary_bit(xg[j], onebit)) << j;
      binary_sums(xg[j], onebit, a[j], b[j]);
    }
    store_u32(out + 4 * g, w);
    set += std::popcount(w);
  }
  return set;
}

void decode_add_binary(const uint8_t* __restrict in, int64_t groups, float v0, float v1,
                       float* __restrict out) {
  for (int64_t g = 0; g < groups; ++g) {
    const uint32_t w = load_u32(in + 4 * g);
    for (int j = 0; j < kGroup; ++j) out[kGroup * g + j] += ((w >> j) & 1u) ? v1 : v0;
  }
}

#endif

double sum_lanes(const double* lanes) {
  double sum = 0;
  for (int j = 0; j < kGroup; ++j) sum += lanes[j];
  return sum;
}

// ---- the codecs ----

class StochasticQuantizer : public Quantizer {
 public:
  // levels = s; by_max selects TernGrad's max|x| in place of QSGD's ||x||_2.
  StochasticQuantizer(int levels, bool by_max)
      : levels_(levels), level_bits_(std::bit_width(static_cast<uint32_t>(levels))), by_max_(by_max) {}

  std::string spec() const override {
    return by_max_ ? "terngrad" : "qsgd:levels=" + std::to_string(levels_);
  }
  bool unbiased() const override { return true; }
  size_t encoded_bytes(int64_t n) const override { return 4 + payload_bytes(n, bits()); }

  void encode(const float* x, int64_t n, uint8_t* out, Rng& rng) const override {
    TERN_CHECK(n >= 0, spec(), ": encode of a negative count (", n, ")");
    const uint64_t key = rng.next_u64();
    const int64_t groups = n / kGroup;
    const int r = static_cast<int>(n - groups * kGroup);
    const float* tail = x + groups * kGroup;
    float denom;
    if (by_max_) {
      denom = max_abs(x, groups);
      for (int j = 0; j < r; ++j) denom = std::max(denom, std::fabs(tail[j]));
    } else {
      double lanes[kGroup] = {};
      sum_squares(x, groups, lanes);
      for (int j = 0; j < r; ++j) lanes[j] += static_cast<double>(tail[j]) * tail[j];
      denom = static_cast<float>(std::sqrt(sum_lanes(lanes)));
    }
    store_f32(out, denom);
    const Rounding q = make_rounding(denom, levels_);
    uint8_t* payload = out + 4;
    encode_levels(x, groups, q, key, level_bits_, payload);
    if (r > 0) {
      float padded[kGroup] = {};
      std::copy(tail, tail + r, padded);
      uint32_t planes[kMaxBits];
      encode_levels_group(padded, q, group_seed(key, groups), level_bits_,
                          reinterpret_cast<uint8_t*>(planes));
      write_tail(planes, bits(), r, payload + 4 * bits() * groups);
    }
  }

  void decode_add(const uint8_t* in, int64_t n, float scale, float* out) const override {
    TERN_CHECK(n >= 0, spec(), ": decode of a negative count (", n, ")");
    const float unit = load_f32(in) / static_cast<float>(levels_) * scale;
    const uint8_t* payload = in + 4;
    const int64_t groups = n / kGroup;
    decode_add_levels(payload, groups, level_bits_, unit, out);
    const int r = static_cast<int>(n - groups * kGroup);
    if (r > 0) {
      uint32_t planes[kMaxBits];
      read_tail(payload + 4 * bits() * groups, bits(), r, planes);
      float padded[kGroup] = {};
      float* tail = out + groups * kGroup;
      std::copy(tail, tail + r, padded);
      decode_add_levels_group(reinterpret_cast<const uint8_t*>(planes), level_bits_, unit, padded);
      std::copy(padded, padded + r, tail);
    }
  }

 private:
  int bits() const { return 1 + level_bits_; }

  int levels_;
  int level_bits_;
  bool by_max_;
};

class BinaryQuantizer : public Quantizer {
 public:
  explicit BinaryQuantizer(bool onebit) : onebit_(onebit) {}

  std::string spec() const override { return onebit_ ? "onebit" : "signsgd"; }
  bool unbiased() const override { return false; }
  size_t encoded_bytes(int64_t n) const override { return header() + payload_bytes(n, 1); }

  void encode(const float* x, int64_t n, uint8_t* out, Rng& /*rng*/) const override {
    TERN_CHECK(n >= 0, spec(), ": encode of a negative count (", n, ")");
    // One pass: the bits, and the sums for the header, which is written last.
    double a[kGroup] = {}, b[kGroup] = {};
    uint8_t* payload = out + header();
    const int64_t groups = n / kGroup;
    int64_t set = encode_binary(x, groups, onebit_, payload, a, b);
    const int r = static_cast<int>(n - groups * kGroup);
    if (r > 0) {
      const float* tail = x + groups * kGroup;
      uint32_t w = 0;
      for (int j = 0; j < r; ++j) {
        w |= static_cast<uint32_t>(binary_bit(tail[j], onebit_)) << j;
        binary_sums(tail[j], onebit_, a[j], b[j]);
      }
      set += std::popcount(w);
      write_tail(&w, 1, r, payload + 4 * groups);
    }
    if (onebit_) {
      // Each class decodes to its own mean, so the decoded sum is the sum of x.
      const double nonneg_sum = sum_lanes(b), neg_sum = sum_lanes(a) - nonneg_sum;
      const auto neg_count = static_cast<double>(n - set);
      store_f32(out, set > 0 ? static_cast<float>(nonneg_sum / static_cast<double>(set)) : 0.0f);
      store_f32(out + 4, neg_count > 0 ? static_cast<float>(neg_sum / neg_count) : 0.0f);
    } else {
      store_f32(out, n > 0 ? static_cast<float>(sum_lanes(a) / static_cast<double>(n)) : 0.0f);
    }
  }

  void decode_add(const uint8_t* in, int64_t n, float scale, float* out) const override {
    TERN_CHECK(n >= 0, spec(), ": decode of a negative count (", n, ")");
    // What a clear and a set bit decode to.
    const float v0 = (onebit_ ? load_f32(in + 4) : load_f32(in)) * scale;
    const float v1 = onebit_ ? load_f32(in) * scale : -v0;
    const uint8_t* payload = in + header();
    const int64_t groups = n / kGroup;
    decode_add_binary(payload, groups, v0, v1, out);
    const int r = static_cast<int>(n - groups * kGroup);
    if (r > 0) {
      uint32_t w;
      read_tail(payload + 4 * groups, 1, r, &w);
      float* tail = out + groups * kGroup;
      for (int j = 0; j < r; ++j) tail[j] += ((w >> j) & 1u) ? v1 : v0;
    }
  }

 private:
  size_t header() const { return onebit_ ? 8 : 4; }

  bool onebit_;
};

}  // namespace

std::unique_ptr<Quantizer> make_qsgd(int levels) {
  TERN_CHECK(levels >= 1 && levels <= (1 << 24), "qsgd: levels must be in [1, 2^24], got ", levels);
  return std::make_unique<StochasticQuantizer>(levels, false);
}
std::unique_ptr<Quantizer> make_terngrad() { return std::make_unique<StochasticQuantizer>(1, true); }
std::unique_ptr<Quantizer> make_signsgd() { return std::make_unique<BinaryQuantizer>(false); }
std::unique_ptr<Quantizer> make_onebit() { return std::make_unique<BinaryQuantizer>(true); }

}  // namespace tern
