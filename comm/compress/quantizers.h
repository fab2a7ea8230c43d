// Quantizers: stateless codecs that turn n f32 values into a few bits each (QSGD, TernGrad,
// sign/1-bit). Error feedback and the collectives around them live in the compressors that use them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/rng.h"

namespace tern {

class Quantizer {
 public:
  virtual ~Quantizer() = default;
  // Canonical spec, e.g. "qsgd:levels=16", "terngrad", "signsgd", "onebit".
  virtual std::string spec() const = 0;
  // Unbiased: E[decode(encode(x))] = x. Biased ones (sign, 1-bit) need error feedback.
  virtual bool unbiased() const = 0;
  // Exact size of encode()'s output for n values (header with the scale(s) + packed bits).
  virtual size_t encoded_bytes(int64_t n) const = 0;
  // Encodes x[0, n) into out[0, encoded_bytes(n)). rng drives stochastic rounding (unused by
  // deterministic codecs). n may be 0. Non-finite input is the caller's problem (not checked).
  virtual void encode(const float* x, int64_t n, uint8_t* out, Rng& rng) const = 0;
  // out[i] += scale * decoded[i] for i in [0, n).
  virtual void decode_add(const uint8_t* in, int64_t n, float scale, float* out) const = 0;
};

// QSGD (Alistarh et al., NeurIPS 2017): x_i = ||x||_2 * sign(x_i) * xi_i / s with xi_i in {0..s}
// by stochastic rounding of s|x_i|/||x||_2; unbiased. Header: the f32 norm; then per value one
// sign bit and ceil(log2(s+1)) level bits, bit-packed. levels in [1, 2^24] (throws otherwise).
std::unique_ptr<Quantizer> make_qsgd(int levels);
// TernGrad (Wen et al., NeurIPS 2017): x_i = max|x| * sign(x_i) * b_i, b_i ~ Bernoulli(|x_i|/max|x|);
// unbiased. Header: the f32 max; 2 bits per value.
std::unique_ptr<Quantizer> make_terngrad();
// Scaled sign (EF-SignSGD, Karimireddy et al., ICML 2019): x_i = mean|x| * sign(x_i) (sign(0) = +).
// Header: the f32 scale; 1 bit per value. Biased.
std::unique_ptr<Quantizer> make_signsgd();
// 1-bit SGD (Seide et al., Interspeech 2014): 1 bit per value; a set bit decodes to the mean of
// the values >= 0, a clear one to the mean of the values < 0 (two f32 in the header), which
// keeps the sum exact. Biased.
std::unique_ptr<Quantizer> make_onebit();

}  // namespace tern
