// Rng: the one source of randomness in Tern (init, shuffling, dropout, stochastic rounding).
// PCG32 (O'Neill 2014) with integer-only derivations, so a seed gives the same stream everywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace tern {

// SplitMix64's finaliser: turns related seeds (seed, epoch 0, 1, 2...) into unrelated ones
// before they reach PCG, whose streams from nearby seeds would otherwise start alike.
constexpr uint64_t mix_seed(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed = 0, uint64_t stream = 0);

  uint32_t next_u32();
  uint64_t next_u64();
  // Uniform in [0, n), without modulo bias. n must be > 0.
  uint32_t below(uint32_t n);
  // Uniform float in [0, 1) with 24 random bits.
  float uniform();
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal by Box-Muller on two uniforms (the pair's second value is discarded, so the
  // stream position depends only on how many values were drawn).
  float normal();
  // Fisher-Yates.
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) {
      const size_t j = below(static_cast<uint32_t>(i));
      std::swap(v[i - 1], v[j]);
    }
  }
  // A new generator whose stream is independent of this one's (for a child: a layer, a rank).
  Rng fork(uint64_t stream);

  // Checkpointable state.
  uint64_t state() const { return state_; }
  uint64_t increment() const { return inc_; }
  void set_state(uint64_t state, uint64_t increment) { state_ = state; inc_ = increment; }

 private:
  uint64_t state_ = 0;
  uint64_t inc_ = 1;
};

}  // namespace tern
