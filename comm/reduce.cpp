#include "comm/reduce.h"

#include <algorithm>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace tern {
namespace {

// Plain loops over restrict pointers: the compiler vectorises them (-O3 -march=native).
template <typename T>
void sum_into(T* __restrict dst, const T* __restrict src, int64_t n) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;  // wrap on overflow instead of undefined behaviour
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(static_cast<U>(dst[i]) + static_cast<U>(src[i]));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
  }
}

template <typename T>
void max_into(T* __restrict dst, const T* __restrict src, int64_t n) {
  if constexpr (std::is_integral_v<T>) {
    for (int64_t i = 0; i < n; ++i) dst[i] = std::max(dst[i], src[i]);
  } else {
    // A NaN on either side wins, so a diverged rank is visible in the result.
    for (int64_t i = 0; i < n; ++i) dst[i] = (src[i] > dst[i] || src[i] != src[i]) ? src[i] : dst[i];
  }
}

template <typename T>
void combine(T* dst, const T* src, int64_t n, ReduceOp op) {
  if (op == ReduceOp::max) {
    max_into(dst, src, n);
  } else {
    sum_into(dst, src, n);
  }
}

template <typename T>
void divide(T* __restrict data, int64_t n, int world) {
  const T w = static_cast<T>(world);
  for (int64_t i = 0; i < n; ++i) data[i] /= w;
}

// 16-bit floats go through f32 in blocks that stay in L1.
constexpr int64_t kBlock = 1024;

void widen(const uint16_t* src, float* dst, int64_t n, DType dtype) {
  if (dtype == DType::bf16) {
    bf16_to_f32(src, dst, static_cast<size_t>(n));
    return;
  }
#if defined(__F16C__)
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  f16_to_f32(src + i, dst + i, static_cast<size_t>(n - i));
#else
  f16_to_f32(src, dst, static_cast<size_t>(n));
#endif
}

void narrow(const float* src, uint16_t* dst, int64_t n, DType dtype) {
  if (dtype == DType::bf16) {
    f32_to_bf16(src, dst, static_cast<size_t>(n));
    return;
  }
#if defined(__F16C__)
  // The hardware conversion rounds to nearest even like f32_to_f16 (they differ only in NaN payloads).
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h =
        _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  f32_to_f16(src + i, dst + i, static_cast<size_t>(n - i));
#else
  f32_to_f16(src, dst, static_cast<size_t>(n));
#endif
}

void reduce_half(uint16_t* dst, const uint16_t* src, int64_t n, DType dtype, ReduceOp op) {
  alignas(64) float a[kBlock];
  alignas(64) float b[kBlock];
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    widen(dst + begin, a, len, dtype);
    widen(src + begin, b, len, dtype);
    combine(a, b, len, op);
    narrow(a, dst + begin, len, dtype);
  }
}

void average_half(uint16_t* data, int64_t n, DType dtype, int world) {
  alignas(64) float a[kBlock];
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t len = std::min(kBlock, n - begin);
    widen(data + begin, a, len, dtype);
    divide(a, len, world);
    narrow(a, data + begin, len, dtype);
  }
}

}  // namespace

bool reduce_supported(DType dtype) {
  switch (dtype) {
    case DType::f32:
    case DType::f16:
    case DType::bf16:
    case DType::i32:
    case DType::i64:
      return true;
    default:
      return false;
  }
}

void check_reduce_dtype(DType dtype, const char* what) {
  if (!reduce_supported(dtype)) {
    throw CommError(detail::concat(what, ": dtype ", dtype_name(dtype),
                                   " cannot be reduced (expected f32, f16, bf16, i32 or i64)"));
  }
}

void reduce_into(void* dst, const void* src, int64_t n, DType dtype, ReduceOp op) {
  if (n <= 0) return;
  switch (dtype) {
    case DType::f32:
      combine(static_cast<float*>(dst), static_cast<const float*>(src), n, op);
      return;
    case DType::i32:
      combine(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), n, op);
      return;
    case DType::i64:
      combine(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), n, op);
      return;
    case DType::f16:
    case DType::bf16:
      reduce_half(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), n, dtype, op);
      return;
    default:
      check_reduce_dtype(dtype, "reduce_into");
  }
}

void finish_average(void* data, int64_t n, DType dtype, int world) {
  if (n <= 0 || world == 1) return;
  switch (dtype) {
    case DType::f32:
      divide(static_cast<float*>(data), n, world);
      return;
    case DType::i32:
      divide(static_cast<int32_t*>(data), n, world);
      return;
    case DType::i64:
      divide(static_cast<int64_t*>(data), n, world);
      return;
    case DType::f16:
    case DType::bf16:
      average_half(static_cast<uint16_t*>(data), n, dtype, world);
      return;
    default:
      check_reduce_dtype(dtype, "finish_average");
  }
}

}  // namespace tern
