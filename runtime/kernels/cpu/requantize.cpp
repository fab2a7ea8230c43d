#include "runtime/kernels/cpu/requantize.h"

#include <cmath>

namespace tern::cpu {

QuantMultiplier quantize_multiplier(double m) noexcept {
  if (!(m > 0.0) || !std::isfinite(m)) return {};  // zero, negative or NaN: everything maps to 0
  int exponent = 0;
  const double fraction = std::frexp(m, &exponent);  // m = fraction * 2^exponent, fraction in [0.5, 1)
  int64_t q = std::llround(fraction * 2147483648.0);
  if (q == (int64_t{1} << 31)) {  // rounded up to 1.0
    q /= 2;
    ++exponent;
  }
  if (exponent < -30) return {};  // below 2^-31: the 62-bit shift limit, and negligible anyway
  if (exponent > 30) return {INT32_MAX, 30};
  return {static_cast<int32_t>(q), exponent};
}

double multiplier_value(QuantMultiplier q) noexcept {
  return std::ldexp(static_cast<double>(q.multiplier), q.shift - 31);
}

void requantize_rows(const int32_t* acc, int64_t pixels, int64_t channels, const Requant& rq,
                     int8_t* y) noexcept {
  for (int64_t p = 0; p < pixels; ++p) {
    const int32_t* a = acc + p * channels;
    int8_t* out = y + p * channels;
    for (int64_t c = 0; c < channels; ++c) out[c] = requantize(a[c], rq.multiplier[c], rq.shift[c], rq);
  }
}

}  // namespace tern::cpu
