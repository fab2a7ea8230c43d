#include "runtime/rng.h"

#include <cmath>
#include <utility>

namespace tern {

Rng::Rng(uint64_t seed, uint64_t stream) {
  // The PCG reference seeding: increment must be odd; advance once before and after adding seed.
  state_ = 0;
  inc_ = (stream << 1u) | 1u;
  next_u32();
  state_ += seed;
  next_u32();
}

uint32_t Rng::next_u32() {
  const uint64_t old = state_;
  state_ = old * 6364136223846793005ULL + inc_;
  const uint32_t xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
  const uint32_t rot = static_cast<uint32_t>(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
}

uint64_t Rng::next_u64() {
  const uint64_t hi = next_u32();
  return (hi << 32) | next_u32();
}

uint32_t Rng::below(uint32_t n) {
  // Rejection sampling on the low range that would bias a modulo.
  const uint32_t threshold = (0u - n) % n;
  for (;;) {
    const uint32_t r = next_u32();
    if (r >= threshold) return r % n;
  }
}

float Rng::uniform() { return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f); }

float Rng::normal() {
  // u1 in (0, 1] so the log is finite.
  const double u1 = (static_cast<double>(next_u32() >> 8) + 1.0) / 16777216.0;
  const double u2 = static_cast<double>(next_u32() >> 8) / 16777216.0;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

Rng Rng::fork(uint64_t stream) {
  // Seed the child from this stream, and give it a stream id that mixes in the caller's label.
  const uint64_t seed = next_u64();
  return Rng(seed, stream * 0x9E3779B97F4A7C15ULL + inc_);
}

}  // namespace tern
