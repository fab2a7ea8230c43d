// Tensor: an n-dimensional, contiguous, row-major array of one dtype over shared storage.
// Views (reshape, slice of the leading dim) share storage; nothing here tracks gradients.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/error.h"
#include "runtime/tensor/dtype.h"

namespace tern {

enum class Device : uint8_t { cpu, cuda };

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// A block of 64-byte-aligned memory owned by one or more tensors.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor: defined() is false
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
  static Tensor from(const Shape& shape, const std::vector<float>& values);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu; }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  // Typed access; throws if T does not match the dtype's element size and kind.
  template <typename T>
  T* data() const;
  float* f32() const { return data<float>(); }

  // Views sharing storage.
  Tensor reshape(const Shape& shape) const;  // one dim may be -1
  Tensor slice(int64_t begin, int64_t end) const;  // rows [begin, end) of the leading dim
  bool shares_storage(const Tensor& other) const { return storage_ == other.storage_; }

  // Copies.
  Tensor clone() const;
  Tensor to(DType dtype) const;        // converts (f32<->f16/bf16 round to nearest even)
  void copy_from(const Tensor& src);   // same numel; converts dtype if they differ
  void fill(double value);
  void zero();

  std::string str() const;  // "f32[64, 1, 28, 28]"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
};

template <typename T>
constexpr bool dtype_matches(DType t) {
  if constexpr (std::is_same_v<T, float>) return t == DType::f32;
  if constexpr (std::is_same_v<T, uint16_t>) return t == DType::f16 || t == DType::bf16;
  if constexpr (std::is_same_v<T, int8_t>) return t == DType::i8;
  if constexpr (std::is_same_v<T, int32_t>) return t == DType::i32;
  if constexpr (std::is_same_v<T, uint8_t>) return t == DType::u8;
  if constexpr (std::is_same_v<T, int64_t>) return t == DType::i64;
  return false;
}

template <typename T>
T* Tensor::data() const {
  TERN_CHECK(defined(), "access to an undefined tensor");
  TERN_CHECK(dtype_matches<T>(dtype_), "tensor ", str(), " accessed with the wrong element type");
  return static_cast<T*>(raw());
}

}  // namespace tern
