// Quantizers: sizes and the documented bit-plane layout (against a naive reader), QSGD's and
// TernGrad's unbiasedness, levels and variance, the biased codecs' scales, exactness on the grid,
// determinism, and decode_add's accumulation.
#include "comm/compress/quantizers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace tern {
namespace {

constexpr int kQsgdLevels[] = {1, 4, 16, 255, 1000, 1 << 24};  // 1 to 25 level bits
constexpr int64_t kSizes[] = {0, 1, 7, 31, 32, 33, 100, 1000003};

std::vector<float> normal_values(int64_t n, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = rng.normal();
  return v;
}

struct Codec {
  std::unique_ptr<Quantizer> q;
  int bits;     // B: bits per value
  int header;   // bytes of f32 scales
  int levels;   // s for qsgd/terngrad, 0 for the binary ones
  bool by_max;  // terngrad
};

std::vector<Codec> all_codecs() {
  std::vector<Codec> c;
  for (int s : kQsgdLevels) {
    int level_bits = 0;
    while ((1 << level_bits) <= s) ++level_bits;  // ceil(log2(s + 1))
    c.push_back({make_qsgd(s), 1 + level_bits, 4, s, false});
  }
  c.push_back({make_terngrad(), 2, 4, 1, true});
  c.push_back({make_signsgd(), 1, 4, 0, false});
  c.push_back({make_onebit(), 1, 8, 0, false});
  return c;
}

std::vector<uint8_t> encode(const Quantizer& q, const std::vector<float>& x, Rng& rng) {
  std::vector<uint8_t> bytes(q.encoded_bytes(static_cast<int64_t>(x.size())));
  q.encode(x.data(), static_cast<int64_t>(x.size()), bytes.data(), rng);
  return bytes;
}

std::vector<float> decode(const Quantizer& q, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n), 0.0f);
  q.decode_add(bytes.data(), n, 1.0f, out.data());
  return out;
}

float header_f32(const std::vector<uint8_t>& bytes, int at) {
  float v;
  std::memcpy(&v, bytes.data() + at, sizeof v);
  return v;
}

// The layout as documented in quantizers.cpp, read one bit at a time: groups of 32 values are B
// little-endian u32 planes (bit j of plane k = bit k of value j's code); the last n % 32 values are
// B planes of r bits, back to back, LSB-first. Bit t of the payload is bit t % 8 of byte t / 8.
int64_t code_bit_position(int64_t i, int k, int64_t n, int bits) {
  const int64_t full = n / 32, g = i / 32, j = i % 32;
  if (g < full) return (g * bits + k) * 32 + j;
  const int64_t r = n - full * 32;
  return full * bits * 32 + k * r + j;
}

std::vector<uint32_t> read_codes(const uint8_t* payload, int64_t n, int bits) {
  std::vector<uint32_t> codes(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < bits; ++k) {
      const int64_t t = code_bit_position(i, k, n, bits);
      codes[static_cast<size_t>(i)] |= static_cast<uint32_t>((payload[t / 8] >> (t % 8)) & 1) << k;
    }
  }
  return codes;
}

std::vector<uint8_t> write_codes(const std::vector<uint32_t>& codes, int bits) {
  const auto n = static_cast<int64_t>(codes.size());
  std::vector<uint8_t> payload(static_cast<size_t>((n * bits + 7) / 8), 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < bits; ++k) {
      const int64_t t = code_bit_position(i, k, n, bits);
      if ((codes[static_cast<size_t>(i)] >> k) & 1)
        payload[t / 8] = static_cast<uint8_t>(payload[t / 8] | (1 << (t % 8)));
    }
  }
  return payload;
}

// QSGD/TernGrad codes: bit 0 = sign (1: negative), bits 1.. = the level.
struct Level {
  bool negative;
  uint32_t level;
};
std::vector<Level> read_levels(const Codec& c, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<Level> out;
  for (uint32_t code : read_codes(bytes.data() + c.header, n, c.bits))
    out.push_back({(code & 1) != 0, code >> 1});
  return out;
}

double l2(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += static_cast<double>(v) * v;
  return std::sqrt(s);
}
double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float v : x) m = std::max(m, std::fabs(static_cast<double>(v)));
  return m;
}

// FNV-1a, to pin encoded bytes.
uint64_t fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint8_t b : bytes) h = (h ^ b) * 0x100000001b3ULL;
  return h;
}

TEST(Quantizers, SpecsAndBias) {
  EXPECT_EQ(make_qsgd(16)->spec(), "qsgd:levels=16");
  EXPECT_EQ(make_terngrad()->spec(), "terngrad");
  EXPECT_EQ(make_signsgd()->spec(), "signsgd");
  EXPECT_EQ(make_onebit()->spec(), "onebit");
  EXPECT_TRUE(make_qsgd(4)->unbiased());
  EXPECT_TRUE(make_terngrad()->unbiased());
  EXPECT_FALSE(make_signsgd()->unbiased());
  EXPECT_FALSE(make_onebit()->unbiased());
  EXPECT_THROW(make_qsgd(0), Error);
}

// encoded_bytes = header + ceil(nB / 8); encode writes exactly that many bytes and decode_add touches
// exactly n floats (guards around both stay intact), for n = 0, short and long tails, and a large odd
// n, at unaligned addresses.
TEST(Quantizers, EncodedBytesMatchFormulaAndStayInBounds) {
  Rng data(1);
  for (const Codec& c : all_codecs()) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(c.q->spec() + " n=" + std::to_string(n));
      const size_t bytes = c.q->encoded_bytes(n);
      ASSERT_EQ(bytes, static_cast<size_t>(c.header + (n * c.bits + 7) / 8));
      const std::vector<float> x = normal_values(n + 1, data);  // read from x + 1: not 64-byte aligned
      constexpr size_t kGuard = 61;                             // nor are the bytes and the floats
      std::vector<uint8_t> buf(bytes + 2 * kGuard, 0xAB);
      Rng rng(7);
      c.q->encode(x.data() + 1, n, buf.data() + kGuard, rng);
      for (size_t i = 0; i < kGuard; ++i) {
        ASSERT_EQ(buf[i], 0xAB);
        ASSERT_EQ(buf[kGuard + bytes + i], 0xAB);
      }
      std::vector<float> out(static_cast<size_t>(n) + 2 * kGuard, 5.0f);
      c.q->decode_add(buf.data() + kGuard, n, 1.0f, out.data() + kGuard);
      for (size_t i = 0; i < kGuard; ++i) {
        ASSERT_EQ(out[i], 5.0f);
        ASSERT_EQ(out[kGuard + static_cast<size_t>(n) + i], 5.0f);
      }
    }
  }
}

// The binary codecs' bytes equal a naive writer of the documented layout, bit for bit.
TEST(Quantizers, BinaryLayoutMatchesNaiveWriter) {
  Rng data(2);
  for (bool onebit : {false, true}) {
    const auto q = onebit ? make_onebit() : make_signsgd();
    for (int64_t n : kSizes) {
      SCOPED_TRACE(q->spec() + " n=" + std::to_string(n));
      std::vector<float> x = normal_values(n, data);
      if (n > 3) x[3] = 0.0f;  // sign(0) = +, and 0 >= 0
      Rng rng(1);
      const std::vector<uint8_t> bytes = encode(*q, x, rng);
      std::vector<uint32_t> codes;
      for (float v : x) codes.push_back(onebit ? v >= 0 : v < 0);
      const std::vector<uint8_t> expected = write_codes(codes, 1);
      const size_t header = onebit ? 8 : 4;
      ASSERT_EQ(bytes.size(), header + expected.size());
      ASSERT_TRUE(std::equal(expected.begin(), expected.end(), bytes.begin() + static_cast<long>(header)));
    }
  }
}

// decode_add of QSGD/TernGrad equals the naive reading of the layout: +-level * scale / s.
TEST(Quantizers, StochasticDecodeMatchesNaiveReader) {
  Rng data(3);
  for (const Codec& c : all_codecs()) {
    if (c.levels == 0) continue;
    for (int64_t n : kSizes) {
      SCOPED_TRACE(c.q->spec() + " n=" + std::to_string(n));
      const std::vector<float> x = normal_values(n, data);
      Rng rng(11);
      const std::vector<uint8_t> bytes = encode(*c.q, x, rng);
      const std::vector<float> decoded = decode(*c.q, bytes, n);
      const std::vector<Level> levels = read_levels(c, bytes, n);
      const float unit = header_f32(bytes, 0) / static_cast<float>(c.levels);
      for (int64_t i = 0; i < n; ++i) {
        const Level& l = levels[static_cast<size_t>(i)];
        const float v = static_cast<float>(l.level) * unit;
        ASSERT_EQ(decoded[static_cast<size_t>(i)], l.negative ? -v : v) << "value " << i;
      }
    }
  }
}

// Stochastic rounding only ever picks one of the two levels around s|x_i|/scale, with x_i's sign, and
// the header holds ||x||_2 (QSGD) or max|x| (TernGrad).
TEST(Quantizers, StochasticLevelsAreTheNeighbours) {
  Rng data(4);
  for (const Codec& c : all_codecs()) {
    if (c.levels == 0) continue;
    SCOPED_TRACE(c.q->spec());
    const int64_t n = 4099;
    std::vector<float> x = normal_values(n, data);
    x[10] = 0.0f;
    Rng rng(5);
    const std::vector<uint8_t> bytes = encode(*c.q, x, rng);
    const double scale = c.by_max ? max_abs(x) : l2(x);
    ASSERT_NEAR(header_f32(bytes, 0), scale, 1e-6 * scale);
    const std::vector<Level> levels = read_levels(c, bytes, n);
    for (int64_t i = 0; i < n; ++i) {
      const double r = c.levels * std::fabs(static_cast<double>(x[static_cast<size_t>(i)])) / scale;
      const Level& l = levels[static_cast<size_t>(i)];
      ASSERT_LE(l.level, static_cast<uint32_t>(c.levels));
      ASSERT_GE(l.level, std::floor(r - 1e-5)) << "value " << i;
      ASSERT_LE(l.level, std::ceil(r + 1e-5)) << "value " << i;
      if (l.level > 0) {
        ASSERT_EQ(l.negative, x[static_cast<size_t>(i)] < 0) << "value " << i;
      }
    }
  }
}

// E[Q(x)] = x. Q(x)_i is unit * (floor(r_i) + Bernoulli(p_i)) with unit = scale / s, p_i = frac(r_i),
// so over T independent encodings the mean's error has variance v_i = unit^2 p_i (1 - p_i) / T.
// Bounds (fixed seed): every element within 5 sigma of the worst case, sqrt(unit^2 / 4T), plus 1e-6
// relative for float rounding; and sum_i err_i^2 <= 1.5 sum_i v_i (the sum is ~ chi-square with n
// degrees of freedom around 1, so 1.5 is ~11 standard deviations for n = 1000, yet a bias of a
// fraction of a sigma per element fails it) plus sum_i (4 eps x_i)^2, eps = 2^-24, for the fixed
// float roundings of the scale, the unit and the product (they dominate at s = 2^24).
TEST(Quantizers, QsgdAndTernGradAreUnbiased) {
  Rng data(6);
  const int64_t n = 1000;  // 31 groups and a tail of 8
  constexpr int kTrials = 2000;
  for (const Codec& c : all_codecs()) {
    if (c.levels == 0) continue;
    SCOPED_TRACE(c.q->spec());
    const std::vector<float> x = normal_values(n, data);
    std::vector<double> mean(static_cast<size_t>(n), 0.0);
    Rng rng(9);
    for (int t = 0; t < kTrials; ++t) {
      const std::vector<float> d = decode(*c.q, encode(*c.q, x, rng), n);
      for (int64_t i = 0; i < n; ++i) mean[static_cast<size_t>(i)] += d[static_cast<size_t>(i)];
    }
    const double scale = c.by_max ? max_abs(x) : l2(x), unit = scale / c.levels;
    double err2 = 0, var = 0, rounding = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double xi = x[static_cast<size_t>(i)];
      const double m = mean[static_cast<size_t>(i)] / kTrials;
      const double r = std::fabs(xi) / unit, p = r - std::floor(r);
      ASSERT_NEAR(m, xi, 5 * unit / (2 * std::sqrt(kTrials)) + 1e-6 * scale) << "value " << i;
      err2 += (m - xi) * (m - xi);
      var += unit * unit * p * (1 - p) / kTrials;
      rounding += std::pow(4 * 0x1p-24 * xi, 2);
    }
    EXPECT_LE(err2, 1.5 * var + rounding);
  }
}

// QSGD's variance: E||Q(x) - x||^2 <= min(n / s^2, sqrt(n) / s) ||x||^2 (Alistarh et al., Lemma 3.1),
// and it equals sum_i unit^2 p_i (1 - p_i). Estimated over T = 400 trials: e_i^2 is unit^2 (1 - p_i)^2
// with probability p_i, else unit^2 p_i^2, so Var(e_i^2) = unit^4 p_i (1 - p_i) (1 - 2 p_i)^2 and the
// estimate is within 5 sqrt(sum_i Var(e_i^2) / T) of the exact value (fixed seed).
TEST(Quantizers, QsgdVarianceWithinThePaperBound) {
  Rng data(7);
  const int64_t n = 2000;
  constexpr int kTrials = 400;
  std::vector<float> gaussian = normal_values(n, data), spiky(static_cast<size_t>(n), 1e-3f);
  spiky[5] = 10.0f;
  for (int s : kQsgdLevels) {
    for (const std::vector<float>* x : {&gaussian, &spiky}) {
      SCOPED_TRACE("s=" + std::to_string(s));
      const auto q = make_qsgd(s);
      Rng rng(3);
      double sum = 0;
      for (int t = 0; t < kTrials; ++t) {
        const std::vector<float> d = decode(*q, encode(*q, *x, rng), n);
        for (int64_t i = 0; i < n; ++i) {
          const double e = d[static_cast<size_t>(i)] - (*x)[static_cast<size_t>(i)];
          sum += e * e;
        }
      }
      const double measured = sum / kTrials, norm = l2(*x), unit = norm / s;
      double exact = 0, spread = 0;
      for (float v : *x) {
        const double r = std::fabs(static_cast<double>(v)) / unit, p = r - std::floor(r);
        exact += unit * unit * p * (1 - p);
        spread += std::pow(unit, 4) * p * (1 - p) * (1 - 2 * p) * (1 - 2 * p);
      }
      const double levels = s, size = static_cast<double>(n);
      const double bound = std::min(size / (levels * levels), std::sqrt(size) / levels) * norm * norm;
      EXPECT_LE(measured, bound);
      EXPECT_NEAR(measured, exact, 5 * std::sqrt(spread / kTrials) + 1e-9 * norm * norm);
    }
  }
}

// signsgd: decoded = mean|x| * sign(x), sign(0) = +.
TEST(Quantizers, SignSgdDecodesToMeanMagnitudeTimesSign) {
  Rng data(8);
  const auto q = make_signsgd();
  for (int64_t n : {int64_t{1}, int64_t{33}, int64_t{100003}}) {
    std::vector<float> x = normal_values(n, data);
    x[0] = 0.0f;
    double abs_sum = 0;
    for (float v : x) abs_sum += std::fabs(v);
    const double scale = abs_sum / static_cast<double>(n);
    Rng rng(1);
    const std::vector<float> d = decode(*q, encode(*q, x, rng), n);
    for (int64_t i = 0; i < n; ++i) {
      const double expected = x[static_cast<size_t>(i)] < 0 ? -scale : scale;
      ASSERT_NEAR(d[static_cast<size_t>(i)], expected, 1e-6 * scale) << "n=" << n << " value " << i;
    }
  }
}

// onebit: values >= 0 decode to the mean of the values >= 0, the others to the mean of the negatives,
// so the decoded sum is the sum of x (to float rounding of the two means); one-sided inputs too.
TEST(Quantizers, OneBitKeepsTheSumAndTheClassMeans) {
  Rng data(9);
  const auto q = make_onebit();
  for (int shift : {0, 10, -10}) {  // mixed signs, all positive, all negative
    for (int64_t n : {int64_t{1}, int64_t{33}, int64_t{100003}}) {
      SCOPED_TRACE("shift=" + std::to_string(shift) + " n=" + std::to_string(n));
      std::vector<float> x = normal_values(n, data);
      for (float& v : x) v += static_cast<float>(shift);
      double pos = 0, neg = 0, abs_sum = 0;
      int64_t pos_count = 0;
      for (float v : x) {
        (v >= 0 ? pos : neg) += v;
        pos_count += v >= 0;
        abs_sum += std::fabs(v);
      }
      const double pos_mean = pos_count ? pos / static_cast<double>(pos_count) : 0;
      const double neg_mean = pos_count < n ? neg / static_cast<double>(n - pos_count) : 0;
      Rng rng(1);
      const std::vector<float> d = decode(*q, encode(*q, x, rng), n);
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float xi = x[static_cast<size_t>(i)], di = d[static_cast<size_t>(i)];
        ASSERT_NEAR(di, xi >= 0 ? pos_mean : neg_mean, 1e-6 * std::fabs(xi >= 0 ? pos_mean : neg_mean))
            << "value " << i;
        sum += di;
      }
      EXPECT_NEAR(sum, pos + neg, 1e-6 * abs_sum);
    }
  }
}

// Values already on the grid come back exactly, whatever the random bits: TernGrad of {-a, 0, a},
// QSGD of a single non-zero (its norm; s a power of two, so norm / s * s is exact), signsgd of {+-a},
// onebit of two values.
TEST(Quantizers, GridValuesRoundTripExactly) {
  const int64_t n = 1000;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    Rng rng(seed), pick(100 + seed);
    std::vector<float> tern(static_cast<size_t>(n)), sign(static_cast<size_t>(n)),
        two(static_cast<size_t>(n));
    const float a = 0.3721f;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t k = pick.below(3);
      tern[static_cast<size_t>(i)] = k == 0 ? -a : k == 1 ? 0.0f : a;
      sign[static_cast<size_t>(i)] = k == 0 ? -a : a;
      two[static_cast<size_t>(i)] = k == 0 ? -1.75f : 0.625f;
    }
    std::vector<float> single(static_cast<size_t>(n), 0.0f);
    single[pick.below(static_cast<uint32_t>(n))] = -a;
    EXPECT_EQ(decode(*make_terngrad(), encode(*make_terngrad(), tern, rng), n), tern);
    for (int s : {1, 4, 16}) {
      const auto q = make_qsgd(s);
      EXPECT_EQ(decode(*q, encode(*q, single, rng), n), single) << "s=" << s;
    }
    EXPECT_EQ(decode(*make_signsgd(), encode(*make_signsgd(), sign, rng), n), sign);
    EXPECT_EQ(decode(*make_onebit(), encode(*make_onebit(), two, rng), n), two);
  }
  // All zeros: every codec decodes to zeros.
  const std::vector<float> zeros(37, 0.0f);
  for (const Codec& c : all_codecs()) {
    Rng rng(1);
    EXPECT_EQ(decode(*c.q, encode(*c.q, zeros, rng), 37), zeros) << c.q->spec();
  }
}

// Extreme magnitudes (denormal, tiny, huge) stay finite, keep their levels in range and their signs.
TEST(Quantizers, ExtremeMagnitudesStayFiniteAndInRange) {
  Rng data(10);
  for (float magnitude : {1e-44f, 1e-38f, 1e-30f, 1e30f}) {
    std::vector<float> x = normal_values(333, data);
    for (float& v : x) v *= magnitude;
    for (const Codec& c : all_codecs()) {
      if (c.levels == 0) continue;
      SCOPED_TRACE(c.q->spec() + " magnitude " + std::to_string(magnitude));
      Rng rng(2);
      const std::vector<uint8_t> bytes = encode(*c.q, x, rng);
      const std::vector<float> d = decode(*c.q, bytes, 333);
      const double bound = header_f32(bytes, 0) * (1 + 1e-6);
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_TRUE(std::isfinite(d[i]));
        ASSERT_LE(std::fabs(d[i]), bound);
        if (d[i] != 0) {
          ASSERT_EQ(d[i] < 0, x[i] < 0);
        }
      }
      // The largest |x| is on or next to the top level, so it cannot vanish.
      size_t top = 0;
      for (size_t i = 0; i < x.size(); ++i) top = std::fabs(x[i]) > std::fabs(x[top]) ? i : top;
      if (c.by_max) {
        EXPECT_EQ(d[top], x[top] < 0 ? -header_f32(bytes, 0) : header_f32(bytes, 0));
      }
    }
  }
}

// The same rng state gives the same bytes and leaves rng in the same state; another state gives
// other bytes (for the stochastic codecs).
TEST(Quantizers, SameRngStateSameBytes) {
  Rng data(11);
  const std::vector<float> x = normal_values(1027, data);
  for (const Codec& c : all_codecs()) {
    SCOPED_TRACE(c.q->spec());
    Rng a(42, 3), b(42, 3), other(43, 3);
    const std::vector<uint8_t> first = encode(*c.q, x, a), second = encode(*c.q, x, b);
    EXPECT_EQ(first, second);
    EXPECT_EQ(a.state(), b.state());
    if (c.levels != 0) {
      EXPECT_NE(encode(*c.q, x, other), first);
      // A second encode with the advanced rng differs too: each call draws fresh bits.
      EXPECT_NE(encode(*c.q, x, a), first);
    }
  }
}

// The bytes for a fixed input and seed, pinned: the vector path (AVX-512) and the plain path must
// produce these same bytes on every machine. Input from Rng::uniform, which is integer-only.
// A deliberate change of the format or of the random bits updates these numbers.
TEST(Quantizers, EncodedBytesArePinned) {
  Rng data(12);
  std::vector<float> x(1000003);
  for (float& v : x) v = data.uniform(-1.0f, 1.0f);
  std::vector<uint64_t> hashes;
  for (const Codec& c : all_codecs()) {
    Rng rng(2024);
    hashes.push_back(fnv1a(encode(*c.q, x, rng)));
  }
  const std::vector<uint64_t> pinned = {
      0x7d49d0f57e043071ULL, 0x02e4101547c66ca6ULL, 0x159461e3a9218898ULL,  // qsgd 1, 4, 16
      0x75f32e2345a5d7d5ULL, 0x118f00173f7115b1ULL, 0x1b2add400edc1aadULL,  // qsgd 255, 1000, 2^24
      0x0408d8a075a5c2ceULL, 0x907d8a547bd30b86ULL, 0xbfabca086632318eULL,  // terngrad, signsgd, onebit
  };
  EXPECT_EQ(hashes, pinned);
}

// decode_add adds scale * decoded to what out already holds.
TEST(Quantizers, DecodeAddAccumulatesWithScale) {
  Rng data(13);
  const int64_t n = 1061;
  const std::vector<float> x = normal_values(n, data), start = normal_values(n, data);
  for (const Codec& c : all_codecs()) {
    SCOPED_TRACE(c.q->spec());
    Rng rng(5);
    const std::vector<uint8_t> bytes = encode(*c.q, x, rng);
    const std::vector<float> decoded = decode(*c.q, bytes, n);
    std::vector<float> out = start;
    c.q->decode_add(bytes.data(), n, 0.25f, out.data());
    c.q->decode_add(bytes.data(), n, -2.0f, out.data());
    for (int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<size_t>(i);
      const double expected = start[k] + 0.25 * decoded[k] - 2.0 * decoded[k];
      ASSERT_NEAR(out[k], expected, 1e-6 * (std::fabs(start[k]) + 2.25 * std::fabs(decoded[k])))
          << "value " << i;
    }
  }
}

}  // namespace
}  // namespace tern
