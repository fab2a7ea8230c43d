// The on-device model image: the flat records of model_format.h and the in-place reader
// (check_model_image, offset accessors, CRC-32). No allocation, exceptions or library beyond
// <cstdint>/<cstddef>, so the bare-metal build (ondevice/baremetal) compiles it as is.
// The layout is documented in model_format.h, which adds the host side (encode, decode, save, load).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tern::ondevice {

inline constexpr char kModelMagic[8] = {'T', 'E', 'R', 'N', 'I', 'N', 'T', '8'};
inline constexpr uint32_t kModelFormatVersion = 1;
inline constexpr uint32_t kModelAlignment = 16;
inline constexpr size_t kOpNameBytes = 48;  // including the terminating NUL

struct ModelFileHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;   // sizeof(ModelFileHeader)
  uint64_t file_bytes;     // the whole image
  uint32_t payload_crc32;  // of bytes [header_bytes, file_bytes)
  uint32_t tensor_count;
  uint32_t op_count;
  uint32_t output_tensor;
  uint32_t tensors_offset;
  uint32_t ops_offset;
  uint32_t reserved[4];  // zero
};
static_assert(sizeof(ModelFileHeader) == 64);

struct TensorRecord {
  int32_t h, w, c;
  float scale;
  int32_t zero_point;
  uint32_t reserved;
};
static_assert(sizeof(TensorRecord) == 24);

// QuantOp's fields; an offset is 0 for an array the op does not have.
struct OpRecord {
  uint32_t kind;        // QuantOpKind
  uint32_t activation;  // Activation
  int32_t input, input2, output;
  int32_t kernel, stride, pad;
  int32_t act_min, act_max;
  float add_a_mult, add_b_mult;
  uint32_t out_channels;
  uint32_t weight_count;
  uint32_t weight_offset, bias_offset, weight_scale_offset, multiplier_offset, shift_offset;
  char name[kOpNameBytes];  // NUL-terminated
  uint32_t reserved;
};
static_assert(sizeof(OpRecord) == 128);

// --- Reading in place (no allocation, no exceptions: the bare-metal path) ---

enum class FormatStatus : uint8_t {
  ok = 0,
  too_small,     // shorter than a header
  bad_magic,     // not a Tern int8 model
  bad_version,   // written by another format version
  truncated,     // shorter than the header's file_bytes
  bad_checksum,  // the payload's CRC-32 differs: corrupted
  bad_layout,    // records or arrays outside the image or misaligned (a broken writer)
};
const char* format_status_name(FormatStatus s) noexcept;

// Checks an image of `size` bytes: header, checksum, and that every record and array lies inside
// it, aligned. After ok, the accessors below may be used. Extra bytes after file_bytes are
// allowed (a flash sector's padding).
FormatStatus check_model_image(const uint8_t* image, size_t size) noexcept;

inline const ModelFileHeader& image_header(const uint8_t* image) {
  return *reinterpret_cast<const ModelFileHeader*>(image);
}
inline const TensorRecord* image_tensors(const uint8_t* image) {
  return reinterpret_cast<const TensorRecord*>(image + image_header(image).tensors_offset);
}
inline const OpRecord* image_ops(const uint8_t* image) {
  return reinterpret_cast<const OpRecord*>(image + image_header(image).ops_offset);
}
template <typename T>
const T* image_array(const uint8_t* image, uint32_t offset) {
  return offset ? reinterpret_cast<const T*>(image + offset) : nullptr;
}

// CRC-32 (reflected polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF), table-driven from a
// compile-time table, so the device needs no zlib.
uint32_t crc32(const uint8_t* data, size_t size) noexcept;

}  // namespace tern::ondevice
