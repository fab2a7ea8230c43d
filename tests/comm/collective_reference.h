// Shared by the collective tests: per-rank inputs that are deterministic functions of (rank,
// index), the sequential reference results every rank can compute, and element-exact comparison.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "runtime/tensor/dtype.h"
#include "runtime/tensor/tensor.h"

namespace tern::testing {

// Small integers for the float types (so sums over <= 8 ranks are exact even in f16/bf16 and the
// order of reduction cannot change a bit), wider ones for i32/i64. Negative values included.
inline int64_t test_value(DType dtype, int rank, int64_t i) {
  switch (dtype) {
    case DType::i32:
      return ((i * 7919 + rank * 104729) % 200001) - 100000 + rank * 1000000;
    case DType::i64:
      return ((i * 7919 + rank * 104729) % 200001) - 100000 + rank * (int64_t{1} << 36);
    case DType::u8:
      return (i * 13 + rank * 101) % 256;
    default:
      return ((rank * 31 + i * 7) % 23) - 11;
  }
}

// Writes v, an exactly representable integer, as element i of a dtype buffer.
inline void store_value(DType dtype, void* data, int64_t i, int64_t v) {
  switch (dtype) {
    case DType::f32:
      static_cast<float*>(data)[i] = static_cast<float>(v);
      return;
    case DType::f16:
      static_cast<uint16_t*>(data)[i] = f32_to_f16(static_cast<float>(v));
      return;
    case DType::bf16:
      static_cast<uint16_t*>(data)[i] = f32_to_bf16(static_cast<float>(v));
      return;
    case DType::i32:
      static_cast<int32_t*>(data)[i] = static_cast<int32_t>(v);
      return;
    case DType::i64:
      static_cast<int64_t*>(data)[i] = v;
      return;
    case DType::u8:
      static_cast<uint8_t*>(data)[i] = static_cast<uint8_t>(v);
      return;
    case DType::i8:
      static_cast<int8_t*>(data)[i] = static_cast<int8_t>(v);
      return;
  }
}

// test_value(dtype, rank, first + j) for j < n.
inline Tensor rank_input(DType dtype, int rank, int64_t n, int64_t first = 0) {
  Tensor t = Tensor::empty({n}, dtype);
  for (int64_t j = 0; j < n; ++j) store_value(dtype, t.raw(), j, test_value(dtype, rank, first + j));
  return t;
}

// op over ranks 0..world-1 of rank_input, computed one element at a time. avg: floats divide the
// (exact) sum in f32 and round once; integers truncate toward zero.
inline Tensor reference_reduce(DType dtype, ReduceOp op, int world, int64_t n, int64_t first = 0) {
  Tensor t = Tensor::empty({n}, dtype);
  const bool is_float = dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16;
  for (int64_t j = 0; j < n; ++j) {
    int64_t acc = test_value(dtype, 0, first + j);
    for (int r = 1; r < world; ++r) {
      const int64_t v = test_value(dtype, r, first + j);
      acc = op == ReduceOp::max ? std::max(acc, v) : acc + v;
    }
    if (op == ReduceOp::avg && is_float) {
      const float avg = static_cast<float>(acc) / static_cast<float>(world);
      if (dtype == DType::f32) static_cast<float*>(t.raw())[j] = avg;
      if (dtype == DType::f16) static_cast<uint16_t*>(t.raw())[j] = f32_to_f16(avg);
      if (dtype == DType::bf16) static_cast<uint16_t*>(t.raw())[j] = f32_to_bf16(avg);
    } else {
      store_value(dtype, t.raw(), j, op == ReduceOp::avg ? acc / world : acc);
    }
  }
  return t;
}

// Index of the first element whose bytes differ, or -1 when the tensors are identical.
inline int64_t first_mismatch(const Tensor& got, const Tensor& expected) {
  if (got.numel() != expected.numel() || got.dtype() != expected.dtype()) return 0;
  const size_t size = dtype_size(got.dtype());
  const auto* a = static_cast<const char*>(got.raw());
  const auto* b = static_cast<const char*>(expected.raw());
  if (std::memcmp(a, b, got.nbytes()) == 0) return -1;
  for (int64_t i = 0; i < got.numel(); ++i) {
    if (std::memcmp(a + i * size, b + i * size, size) != 0) return i;
  }
  return -1;
}

}  // namespace tern::testing
