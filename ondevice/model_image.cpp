#include "ondevice/model_image.h"

#include <cstring>

namespace tern::ondevice {

// The records are read in place; a big-endian reader would need byte swaps the format does not do.
// (The predefined macro rather than std::endian, so the bare-metal build needs no <bit>.)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the int8 model format is little-endian");

namespace {

struct CrcTable {
  uint32_t entry[256];
};

constexpr CrcTable make_crc_table() {
  CrcTable t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t.entry[i] = c;
  }
  return t;
}
// In .rodata: on a microcontroller the table sits in flash with the model.
constexpr CrcTable kCrcTable = make_crc_table();

// Whether [offset, offset + bytes) lies inside the image and starts aligned (offset 0: absent,
// allowed only when bytes == 0).
bool array_ok(uint64_t offset, uint64_t bytes, uint64_t file_bytes) {
  if (offset == 0) return bytes == 0;
  return offset % kModelAlignment == 0 && offset >= sizeof(ModelFileHeader) && offset <= file_bytes &&
         bytes <= file_bytes - offset;
}

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size) noexcept {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = kCrcTable.entry[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

const char* format_status_name(FormatStatus s) noexcept {
  switch (s) {
    case FormatStatus::ok:
      return "ok";
    case FormatStatus::too_small:
      return "too small for a header";
    case FormatStatus::bad_magic:
      return "not a Tern int8 model (bad magic)";
    case FormatStatus::bad_version:
      return "unsupported format version";
    case FormatStatus::truncated:
      return "truncated";
    case FormatStatus::bad_checksum:
      return "checksum mismatch (corrupted)";
    case FormatStatus::bad_layout:
      return "inconsistent layout";
  }
  return "unknown";
}

FormatStatus check_model_image(const uint8_t* image, size_t size) noexcept {
  if (size < sizeof(ModelFileHeader)) return FormatStatus::too_small;
  ModelFileHeader h;
  std::memcpy(&h, image, sizeof h);
  if (std::memcmp(h.magic, kModelMagic, sizeof h.magic) != 0) return FormatStatus::bad_magic;
  if (h.version != kModelFormatVersion) return FormatStatus::bad_version;
  if (h.header_bytes != sizeof(ModelFileHeader) || h.file_bytes < sizeof(ModelFileHeader))
    return FormatStatus::bad_layout;
  if (h.file_bytes > size) return FormatStatus::truncated;
  if (crc32(image + h.header_bytes, static_cast<size_t>(h.file_bytes - h.header_bytes)) != h.payload_crc32)
    return FormatStatus::bad_checksum;
  if (h.tensor_count == 0 || h.output_tensor >= h.tensor_count ||
      !array_ok(h.tensors_offset, uint64_t{h.tensor_count} * sizeof(TensorRecord), h.file_bytes) ||
      !array_ok(h.ops_offset, uint64_t{h.op_count} * sizeof(OpRecord), h.file_bytes) ||
      (h.op_count == 0 && h.ops_offset != 0))
    return FormatStatus::bad_layout;
  for (uint32_t i = 0; i < h.op_count; ++i) {
    OpRecord r;
    std::memcpy(&r, image + h.ops_offset + uint64_t{i} * sizeof(OpRecord), sizeof r);
    const uint64_t c = r.out_channels;
    if (r.name[kOpNameBytes - 1] != '\0' || !array_ok(r.weight_offset, r.weight_count, h.file_bytes) ||
        !array_ok(r.bias_offset, r.bias_offset ? 4 * c : 0, h.file_bytes) ||
        !array_ok(r.weight_scale_offset, r.weight_scale_offset ? 4 * c : 0, h.file_bytes) ||
        !array_ok(r.multiplier_offset, r.multiplier_offset ? 4 * c : 0, h.file_bytes) ||
        !array_ok(r.shift_offset, r.shift_offset ? 4 * c : 0, h.file_bytes))
      return FormatStatus::bad_layout;
  }
  return FormatStatus::ok;
}

}  // namespace tern::ondevice
