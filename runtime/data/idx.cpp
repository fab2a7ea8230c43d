#include "runtime/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "runtime/error.h"
#include "runtime/tensor/tensor.h"

namespace tern {

size_t idx_element_size(uint8_t type_code) {
  switch (type_code) {
    case kIdxU8:
    case kIdxI8:
      return 1;
    case kIdxI16:
      return 2;
    case kIdxI32:
    case kIdxF32:
      return 4;
    case kIdxF64:
      return 8;
    default:
      return 0;
  }
}

int64_t IdxArray::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

namespace {

const char* idx_type_name(uint8_t type_code) {
  switch (type_code) {
    case kIdxU8:
      return "u8";
    case kIdxI8:
      return "i8";
    case kIdxI16:
      return "i16";
    case kIdxI32:
      return "i32";
    case kIdxF32:
      return "f32";
    case kIdxF64:
      return "f64";
    default:
      return "?";
  }
}

std::string hex_byte(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", b);
  return buf;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error("read_idx: " + path + ": " + what);
}

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) fail(path, "no such file");
  if (std::filesystem::is_directory(status)) fail(path, "is a directory, not an IDX file");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<uint8_t> bytes;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(static_cast<size_t>(size));
  uint8_t chunk[1 << 16];
  for (;;) {
    const size_t n = std::fread(chunk, 1, sizeof chunk, f.get());
    bytes.insert(bytes.end(), chunk, chunk + n);
    if (n < sizeof chunk) break;
  }
  if (std::ferror(f.get())) fail(path, std::string("read error: ") + std::strerror(errno));
  return bytes;
}

struct Decoded {
  std::vector<uint8_t> bytes;
  bool gzip = false;
  bool cut = false;  // the gzip stream ended before its end marker: the file was cut off
};

// Inflates a whole gzip file (one or more concatenated members) held in memory. A stream that
// simply stops is not an error here: what was decoded is kept and `cut` is set, so the caller
// can report the truncation in terms of the IDX data (expected vs got).
Decoded gunzip(const std::string& path, const std::vector<uint8_t>& in) {
  Decoded out;
  out.gzip = true;
  // The gzip trailer's last four bytes hold the uncompressed size mod 2^32: a good first guess.
  // In a cut or corrupt file they are noise, so never trust them past deflate's maximum ratio
  // (about 1032:1); growth below handles anything larger.
  size_t guess = in.size() * 2;
  if (in.size() >= 18) {
    const uint8_t* t = in.data() + in.size() - 4;
    const size_t isize = static_cast<size_t>(t[0]) | static_cast<size_t>(t[1]) << 8 |
                         static_cast<size_t>(t[2]) << 16 | static_cast<size_t>(t[3]) << 24;
    if (isize <= in.size() * 1032) guess = std::max(guess, isize);
  }
  guess = std::min<size_t>(guess, size_t{1} << 30);
  std::vector<uint8_t>& buf = out.bytes;
  buf.resize(guess + 1);  // +1 so a correct guess needs no growth to see the stream end

  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail(path, "cannot initialise zlib");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, &inflateEnd);
  size_t in_pos = 0, used = 0;
  for (;;) {
    if (used == buf.size()) buf.resize(buf.size() * 2);
    const size_t in_left = in.size() - in_pos;
    zs.next_in = const_cast<Bytef*>(in.data() + in_pos);
    zs.avail_in = static_cast<uInt>(std::min<size_t>(in_left, UINT_MAX));
    zs.next_out = buf.data() + used;
    zs.avail_out = static_cast<uInt>(std::min<size_t>(buf.size() - used, UINT_MAX));
    const uInt avail_in_before = zs.avail_in;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    in_pos += avail_in_before - zs.avail_in;
    used = static_cast<size_t>(zs.next_out - buf.data());
    if (rc == Z_STREAM_END) {
      if (in_pos == in.size()) break;
      if (in.size() - in_pos >= 2 && in[in_pos] == 0x1f && in[in_pos + 1] == 0x8b) {
        inflateReset(&zs);  // another gzip member follows (as `cat a.gz b.gz` makes)
        continue;
      }
      fail(path, detail::concat("corrupt gzip stream: ", in.size() - in_pos,
                                " unexpected bytes after the end of the compressed data"));
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && in_pos == in.size()) {
      out.cut = true;
      break;
    }
    fail(path, std::string("corrupt gzip stream (") + (zs.msg ? zs.msg : zError(rc)) + ")");
  }
  buf.resize(used);
  return out;
}

// IDX stores multi-byte elements big-endian; swapping converts either way.
void swap_big_endian(uint8_t* p, size_t n, size_t elem) {
  if (elem == 1 || std::endian::native == std::endian::big) return;
  for (size_t i = 0; i + elem <= n; i += elem) std::reverse(p + i, p + i + elem);
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  std::vector<uint8_t> raw = read_whole_file(path);
  Decoded d;
  if (raw.size() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
    d = gunzip(path, raw);
    raw = {};
  } else {
    d.bytes = std::move(raw);
  }
  const std::vector<uint8_t>& b = d.bytes;
  const std::string cut_note = d.cut ? " (the gzip stream ends early: the file is cut off)" : "";

  if (b.size() < 4)
    fail(path,
         detail::concat("truncated: ", b.size(), " bytes", d.gzip ? " after decompression" : "",
                        ", too short for the 4-byte IDX header", cut_note));
  if (b[0] != 0 || b[1] != 0)
    fail(path, "bad magic: the first two bytes are " + hex_byte(b[0]) + " " + hex_byte(b[1]) +
                   ", an IDX file starts with 0x00 0x00 (not an IDX file?)");
  const uint8_t type = b[2];
  const size_t elem = idx_element_size(type);
  if (elem == 0)
    fail(path, "unsupported type code " + hex_byte(type) +
                   " (IDX types: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64)");
  const int ndims = b[3];
  if (ndims < 1 || ndims > kMaxIdxDims)
    fail(path, detail::concat("dimension count ", ndims, " is outside 1..", kMaxIdxDims,
                              " (corrupt header?)"));
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (b.size() < header)
    fail(path, detail::concat("truncated header: ", ndims, " dims need ", header,
                              " header bytes, got ", b.size(), cut_note));

  IdxArray out;
  out.type_code = type;
  uint64_t expected = elem;
  bool overflow = false;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* p = &b[4 + 4 * static_cast<size_t>(i)];
    const uint64_t dim = uint64_t{p[0]} << 24 | uint64_t{p[1]} << 16 | uint64_t{p[2]} << 8 | p[3];
    out.dims.push_back(static_cast<int64_t>(dim));
    overflow |= __builtin_mul_overflow(expected, dim, &expected);
  }
  const std::string what = shape_str(out.dims) + " of " + idx_type_name(type);
  const uint64_t got = b.size() - header;
  if (overflow || expected > (uint64_t{1} << 62))
    fail(path, "dims " + what + " describe an absurd size (corrupt header?)");
  if (got < expected)
    fail(path, detail::concat("truncated: dims ", what, " need ", expected, " data bytes, got ",
                              got, cut_note));
  if (got > expected)
    fail(path, detail::concat("trailing garbage: dims ", what, " need ", expected,
                              " data bytes, got ", got, " (", got - expected, " extra)"));
  if (d.cut) fail(path, "corrupt gzip stream: it ends before its end marker (the file is cut off)");

  out.bytes = std::move(d.bytes);
  out.bytes.erase(out.bytes.begin(), out.bytes.begin() + static_cast<std::ptrdiff_t>(header));
  swap_big_endian(out.bytes.data(), out.bytes.size(), elem);
  return out;
}

void write_idx(const std::string& path, const IdxArray& array, bool gzip) {
  const size_t elem = idx_element_size(array.type_code);
  TERN_CHECK(elem != 0, "write_idx: ", path, ": unsupported type code ", hex_byte(array.type_code));
  TERN_CHECK(!array.dims.empty() && array.dims.size() <= static_cast<size_t>(kMaxIdxDims),
             "write_idx: ", path, ": ", array.dims.size(), " dims, expected 1..", kMaxIdxDims);
  for (int64_t d : array.dims)
    TERN_CHECK(d >= 0 && d <= int64_t{UINT32_MAX}, "write_idx: ", path, ": dim ", d,
               " does not fit the 32-bit IDX header field");
  TERN_CHECK(static_cast<uint64_t>(array.numel()) * elem == array.bytes.size(), "write_idx: ", path,
             ": dims ", shape_str(array.dims), " need ", array.numel() * static_cast<int64_t>(elem),
             " bytes, the array holds ", array.bytes.size());

  std::vector<uint8_t> buf = {0, 0, array.type_code, static_cast<uint8_t>(array.dims.size())};
  for (int64_t d : array.dims)
    for (int shift = 24; shift >= 0; shift -= 8) buf.push_back(static_cast<uint8_t>(d >> shift));
  const size_t header = buf.size();
  buf.insert(buf.end(), array.bytes.begin(), array.bytes.end());
  swap_big_endian(buf.data() + header, buf.size() - header, elem);

  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    TERN_CHECK(f != nullptr, "write_idx: ", path,
               ": cannot open for writing: ", std::strerror(errno));
    size_t done = 0;
    bool ok = true;
    while (ok && done < buf.size()) {
      const unsigned n = static_cast<unsigned>(std::min<size_t>(buf.size() - done, 1u << 30));
      ok = gzwrite(f, buf.data() + done, n) == static_cast<int>(n);
      done += n;
    }
    ok = (gzclose(f) == Z_OK) && ok;
    TERN_CHECK(ok, "write_idx: ", path, ": write failed");
  } else {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    TERN_CHECK(f != nullptr, "write_idx: ", path,
               ": cannot open for writing: ", std::strerror(errno));
    const bool ok = std::fwrite(buf.data(), 1, buf.size(), f) == buf.size();
    TERN_CHECK((std::fclose(f) == 0) && ok, "write_idx: ", path, ": write failed");
  }
}

}  // namespace tern
