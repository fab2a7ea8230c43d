// Inverted-dropout kernels: draw a keep mask from tern::Rng and apply it, forward and backward,
// used by the Dropout module. Plain functions, never throw.
#pragma once

#include <cstdint>

#include "runtime/rng.h"

namespace tern::cpu {

// mask[i] = 0 with probability p, else 1 / (1 - p), so E[mask] = 1 and eval needs no rescaling.
// Element i is dropped when the i-th rng.uniform() draw is < p: exactly n draws are consumed, so
// the mask (and the stream after it) depends only on the generator's state, p and n.
// Requires 0 <= p < 1.
void dropout_mask(Rng& rng, float p, float* mask, int64_t n);

// y = x * mask. The same product is the backward (dx = dy * mask), so one kernel serves both;
// y may alias x.
void dropout_apply(const float* x, const float* mask, float* y, int64_t n);

}  // namespace tern::cpu
