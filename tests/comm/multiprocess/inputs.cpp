// Deterministic inputs and the report of tern_collectives_check (see checks.h).
#include <cstring>

#include "runtime/tensor/dtype.h"
#include "tests/comm/multiprocess/checks.h"

namespace tern::check {

void Report::record(const std::string& name, const std::string& problem) {
  if (problem.empty()) {
    ++passed_;
    if (rank_ == 0) std::printf("ok   %s\n", name.c_str());
  } else {
    ++failed_;
    std::printf("FAIL %s [rank %d]: %s\n", name.c_str(), rank_, problem.c_str());
  }
  std::fflush(stdout);
}

namespace {

// splitmix64's finaliser over a combination of the three coordinates.
uint64_t mix(uint64_t salt, int rank, int64_t index) {
  uint64_t x = salt * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(rank) * 0xBF58476D1CE4E5B9ull +
               static_cast<uint64_t>(index);
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

int64_t spread(uint64_t h, uint64_t span) {
  return static_cast<int64_t>(h % span) - static_cast<int64_t>(span / 2);
}

}  // namespace

bool is_real(DType dtype) { return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16; }

double input_real(DType dtype, uint64_t salt, int rank, int64_t index) {
  const uint64_t h = mix(salt, rank, index);
  switch (dtype) {
    case DType::f32:
      return static_cast<double>(spread(h, 8001)) * 0.25;
    case DType::f16:
      return f16_to_f32(f32_to_f16(static_cast<float>(spread(h, 2001)) / 64.0f));
    case DType::bf16:
      return bf16_to_f32(f32_to_bf16(static_cast<float>(spread(h, 2001)) / 64.0f));
    default:
      return static_cast<double>(input_int(dtype, salt, rank, index));
  }
}

int64_t input_int(DType dtype, uint64_t salt, int rank, int64_t index) {
  const uint64_t h = mix(salt, rank, index);
  switch (dtype) {
    case DType::i32:
      return spread(h, uint64_t{1} << 29);
    case DType::i64:
      return spread(h, uint64_t{1} << 61);
    case DType::i8:
      return static_cast<int8_t>(h & 0xff);
    case DType::u8:
      return static_cast<int64_t>(h & 0xff);
    default:
      return static_cast<int64_t>(input_real(dtype, salt, rank, index));
  }
}

Tensor make_input(DType dtype, uint64_t salt, int rank, int64_t numel) {
  Tensor t = Tensor::empty({numel}, dtype);
  for (int64_t i = 0; i < numel; ++i) {
    switch (dtype) {
      case DType::f32:
        t.data<float>()[i] = static_cast<float>(input_real(dtype, salt, rank, i));
        break;
      case DType::f16:
        t.data<uint16_t>()[i] = f32_to_f16(static_cast<float>(input_real(dtype, salt, rank, i)));
        break;
      case DType::bf16:
        t.data<uint16_t>()[i] = f32_to_bf16(static_cast<float>(input_real(dtype, salt, rank, i)));
        break;
      case DType::i32:
        t.data<int32_t>()[i] = static_cast<int32_t>(input_int(dtype, salt, rank, i));
        break;
      case DType::i64:
        t.data<int64_t>()[i] = input_int(dtype, salt, rank, i);
        break;
      case DType::i8:
        t.data<int8_t>()[i] = static_cast<int8_t>(input_int(dtype, salt, rank, i));
        break;
      case DType::u8:
        t.data<uint8_t>()[i] = static_cast<uint8_t>(input_int(dtype, salt, rank, i));
        break;
    }
  }
  return t;
}

std::string element_str(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::f32:
      return std::to_string(t.data<float>()[i]);
    case DType::f16:
      return std::to_string(f16_to_f32(t.data<uint16_t>()[i]));
    case DType::bf16:
      return std::to_string(bf16_to_f32(t.data<uint16_t>()[i]));
    case DType::i32:
      return std::to_string(t.data<int32_t>()[i]);
    case DType::i64:
      return std::to_string(t.data<int64_t>()[i]);
    case DType::i8:
      return std::to_string(t.data<int8_t>()[i]);
    case DType::u8:
      return std::to_string(t.data<uint8_t>()[i]);
  }
  return "?";
}

std::string compare_bytes(const Tensor& got, const Tensor& want) {
  if (got.dtype() != want.dtype() || got.numel() != want.numel())
    return "got " + got.str() + ", expected " + want.str();
  const size_t width = dtype_size(got.dtype());
  const auto* a = static_cast<const char*>(got.raw());
  const auto* b = static_cast<const char*>(want.raw());
  if (std::memcmp(a, b, got.nbytes()) == 0) return "";
  for (int64_t i = 0; i < got.numel(); ++i) {
    const size_t at = static_cast<size_t>(i) * width;
    if (std::memcmp(a + at, b + at, width) != 0)
      return "element " + std::to_string(i) + ": got " + element_str(got, i) + ", expected " +
             element_str(want, i);
  }
  return "";
}

}  // namespace tern::check
