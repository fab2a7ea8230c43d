// Elementwise reduction kernels of the collectives: dst = dst op src over raw buffers, with f16 and
// bf16 computed in f32. Used by comm/algorithms.cpp and by any backend that reduces on the CPU.
#pragma once

#include <cstdint>

#include "comm/communicator.h"
#include "runtime/tensor/dtype.h"

namespace tern {

// True for the dtypes reductions support: f32, f16, bf16, i32, i64.
bool reduce_supported(DType dtype);
// Throws CommError naming `what` and the dtype when reduce_supported(dtype) is false. Callers check
// before a collective starts, so every rank fails identically instead of some ranks waiting.
void check_reduce_dtype(DType dtype, const char* what);

// dst[i] = dst[i] op src[i] for i < n. avg sums here; finish_average divides once at the end.
// f16/bf16 are widened to f32, combined, and rounded back once per call (nearest even). Integer
// sums wrap around on overflow (two's complement) instead of being undefined. max propagates NaN.
void reduce_into(void* dst, const void* src, int64_t n, DType dtype, ReduceOp op);

// Turns a sum over `world` ranks into the average: data[i] /= world. Floats divide in f32 (f16/bf16
// widened and rounded once); integers use C++ integer division, which truncates toward zero.
void finish_average(void* data, int64_t n, DType dtype, int world);

}  // namespace tern
