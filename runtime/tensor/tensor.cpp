#include "runtime/tensor/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace tern {

std::string shape_str(const Shape& s) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << ']';
  return out.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    TERN_CHECK(d >= 0, "negative dimension in shape ", shape_str(s));
    n *= d;
  }
  return n;
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  TERN_CHECK(device == Device::cpu, "CUDA tensors are not available in this build");
  // aligned_alloc needs a size that is a multiple of the alignment, and a non-zero one.
  const size_t rounded = ((bytes + 63) / 64) * 64;
  data_ = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  TERN_CHECK(data_ != nullptr, "out of memory allocating ", bytes, " bytes");
}

Storage::~Storage() { std::free(data_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(t.numel_) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.zero();
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype) {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

Tensor Tensor::from(const Shape& shape, const std::vector<float>& values) {
  Tensor t = empty(shape);
  TERN_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "Tensor::from: ", values.size(),
             " values for shape ", shape_str(shape));
  std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int j = i < 0 ? i + n : i;
  TERN_CHECK(j >= 0 && j < n, "dim ", i, " out of range for ", str());
  return shape_[j];
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      TERN_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    TERN_CHECK(known > 0 && numel_ % known == 0, "reshape: cannot view ", str(), " as ", shape_str(shape));
    s[infer] = numel_ / known;
  }
  TERN_CHECK(shape_numel(s) == numel_, "reshape: cannot view ", str(), " as ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  TERN_CHECK(ndim() >= 1, "slice of a 0-d tensor");
  TERN_CHECK(0 <= begin && begin <= end && end <= shape_[0], "slice [", begin, ", ", end,
             ") out of range for ", str());
  const int64_t row = shape_[0] == 0 ? 0 : numel_ / shape_[0];
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.numel_ = row * (end - begin);
  t.offset_ = offset_ + static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor t = empty(shape_, dtype);
  t.copy_from(*this);
  return t;
}

namespace {
// Reads element i of any dtype as double (16-bit floats exactly), for the generic conversions.
double load(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::i8: return static_cast<const int8_t*>(p)[i];
    case DType::i32: return static_cast<const int32_t*>(p)[i];
    case DType::u8: return static_cast<const uint8_t*>(p)[i];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
  }
  return 0;
}

void store(void* p, DType t, size_t i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = f32_to_f16(static_cast<float>(v)); break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::i8: static_cast<int8_t*>(p)[i] = static_cast<int8_t>(v); break;
    case DType::i32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::u8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v); break;
    case DType::i64: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
  }
}
}  // namespace

void Tensor::copy_from(const Tensor& src) {
  TERN_CHECK(src.numel() == numel_, "copy_from: ", src.str(), " into ", str(), ": sizes differ");
  const size_t n = static_cast<size_t>(numel_);
  if (n == 0) return;
  if (src.dtype() == dtype_) {
    std::memmove(raw(), src.raw(), nbytes());
  } else if (src.dtype() == DType::f32 && dtype_ == DType::f16) {
    f32_to_f16(src.data<float>(), data<uint16_t>(), n);
  } else if (src.dtype() == DType::f32 && dtype_ == DType::bf16) {
    f32_to_bf16(src.data<float>(), data<uint16_t>(), n);
  } else if (src.dtype() == DType::f16 && dtype_ == DType::f32) {
    f16_to_f32(src.data<uint16_t>(), data<float>(), n);
  } else if (src.dtype() == DType::bf16 && dtype_ == DType::f32) {
    bf16_to_f32(src.data<uint16_t>(), data<float>(), n);
  } else {
    // Integer conversions truncate toward zero, as a C cast does; they are for tests and I/O.
    for (size_t i = 0; i < n; ++i) store(raw(), dtype_, i, load(src.raw(), src.dtype(), i));
  }
}

void Tensor::fill(double value) {
  const size_t n = static_cast<size_t>(numel_);
  if (dtype_ == DType::f32) {
    float* p = data<float>();
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>(value);
  } else {
    for (size_t i = 0; i < n; ++i) store(raw(), dtype_, i, value);
  }
}

void Tensor::zero() {
  if (nbytes()) std::memset(raw(), 0, nbytes());
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype_)) + shape_str(shape_);
}

}  // namespace tern
