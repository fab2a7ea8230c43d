// mix32: the counter-based 32-bit hash behind Tern's stochastic rounding — the fixed-point weight
// updates (sparse_update.h, also on the Cortex-M) and the stochastic gradient quantisers (comm/compress).
#pragma once

#include <cstdint>

namespace tern::cpu {

// Lowbias32 (C. Wellons): a 32-bit bijection with good avalanche, cheap enough to vectorise.
inline uint32_t mix32(uint32_t x) noexcept {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

}  // namespace tern::cpu
