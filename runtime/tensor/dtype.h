// Element types a Tensor can hold, and the bit-exact conversions between f32 and the 16-bit
// floats that compressed gradients and mixed precision use (round to nearest, ties to even).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tern {

enum class DType : uint8_t { f32, f16, bf16, i8, i32, u8, i64 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
// Parses "f32", "f16", "bf16", "i8", "i32", "u8", "i64"; throws tern::Error on anything else.
DType dtype_from_name(std::string_view name);

// IEEE binary16 and bfloat16 as raw bits. NaN stays NaN (quiet), overflow goes to infinity,
// f16 subnormals are produced and read exactly.
uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t b);

// Bulk forms used by Tensor::to and by the reduced-precision collectives.
void f32_to_f16(const float* src, uint16_t* dst, size_t n);
void f16_to_f32(const uint16_t* src, float* dst, size_t n);
void f32_to_bf16(const float* src, uint16_t* dst, size_t n);
void bf16_to_f32(const uint16_t* src, float* dst, size_t n);

}  // namespace tern
