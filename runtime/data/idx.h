// IDX files: the array format of MNIST-style datasets (a big-endian header, then raw elements).
// read_idx loads one, plain or gzip-compressed, and says exactly what is wrong with a bad file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tern {

// IDX element type codes (the third header byte).
enum IdxType : uint8_t {
  kIdxU8 = 0x08,
  kIdxI8 = 0x09,
  kIdxI16 = 0x0B,
  kIdxI32 = 0x0C,
  kIdxF32 = 0x0D,
  kIdxF64 = 0x0E,
};

// Bytes per element of an IDX type code; 0 for a code that is not one of the six above.
size_t idx_element_size(uint8_t type_code);

struct IdxArray {
  uint8_t type_code = kIdxU8;
  std::vector<int64_t> dims;
  // The elements, row-major, in HOST byte order (multi-byte types are swapped from the file's
  // big-endian order on read), so they can be reinterpreted as the element type directly.
  std::vector<uint8_t> bytes;

  int64_t numel() const;
};

// Reads an IDX file. A gzip stream is recognised by its magic bytes (1f 8b), not by the name.
// Throws tern::Error naming the file and the problem: missing/unreadable file, corrupt gzip
// stream, bad magic, unknown type code, a dimension count outside 1..kMaxIdxDims, fewer data
// bytes than the dims promise (expected vs got) or more (trailing garbage).
IdxArray read_idx(const std::string& path);

// Writes an IDX file (gzip-compressed when gzip is true). For tests and for exporting data.
void write_idx(const std::string& path, const IdxArray& array, bool gzip);

// IDX allows 255 dimensions; no real dataset has more than a handful, so more is corruption.
inline constexpr int kMaxIdxDims = 8;

}  // namespace tern
