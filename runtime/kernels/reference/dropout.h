// Naive references for the cpu dropout kernels: one Bernoulli decision per element, written as
// a branch. Tests only.
#pragma once

#include <cstdint>

#include "runtime/rng.h"

namespace tern::ref {

void dropout_mask(Rng& rng, float p, float* mask, int64_t n);
void dropout_apply(const float* x, const float* mask, float* y, int64_t n);

}  // namespace tern::ref
