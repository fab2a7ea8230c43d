// Naive references for cpu/int8_elementwise.h, in double precision. Tests only.
#pragma once

#include <cstdint>

#include "runtime/kernels/cpu/int8_elementwise.h"

namespace tern::ref {

void int8_add(const int8_t* a, const int8_t* b, int64_t n, const cpu::Int8AddParams& p, int8_t* y);
void int8_global_avg_pool(const int8_t* x, int32_t pixels, int32_t c, int32_t zero_point, int8_t* y);
void int8_max_pool2d(const cpu::Int8PoolShape& s, const int8_t* x, int8_t* y);

}  // namespace tern::ref
