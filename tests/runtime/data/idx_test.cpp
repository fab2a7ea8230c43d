#include "runtime/data/idx.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/data/fashion_mnist.h"
#include "runtime/rng.h"
#include "tests/support/scratch_dir.h"

namespace tern {
namespace {

using testing::ScratchDir;

namespace fs = std::filesystem;

void write_plain(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  ASSERT_EQ(std::fclose(f), 0);
}

std::vector<uint8_t> gzip_bytes(const std::vector<uint8_t>& bytes) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, bytes.size()) + 32);
  zs.next_in = const_cast<Bytef*>(bytes.data());
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// An IDX file image: the header as written by hand, then `data` verbatim.
std::vector<uint8_t> idx_bytes(uint8_t type, const std::vector<uint32_t>& dims,
                               const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<uint8_t> counting(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 3);
  return v;
}

// Runs read_idx and returns its error message, failing the test if it does not throw.
std::string read_error(const std::string& path) {
  try {
    read_idx(path);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "read_idx(" << path << ") did not throw";
  return "";
}

TEST(ReadIdx, RoundTripsU8PlainAndGzip) {
  ScratchDir dir;
  IdxArray a;
  a.type_code = kIdxU8;
  a.dims = {3, 5, 7};
  a.bytes = counting(105);
  for (bool gz : {false, true}) {
    const std::string path = dir.file(gz ? "a.idx.gz" : "a.idx");
    write_idx(path, a, gz);
    const IdxArray b = read_idx(path);
    EXPECT_EQ(b.type_code, kIdxU8);
    EXPECT_EQ(b.dims, a.dims);
    EXPECT_EQ(b.bytes, a.bytes);
    EXPECT_EQ(b.numel(), 105);
  }
}

TEST(ReadIdx, MultiByteElementsComeBackInHostOrder) {
  ScratchDir dir;
  // Written by hand in big-endian: i32 values 1, -2, 0x01020304.
  write_plain(dir.file("i32.idx"),
              idx_bytes(kIdxI32, {3}, {0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFE, 1, 2, 3, 4}));
  const IdxArray a = read_idx(dir.file("i32.idx"));
  ASSERT_EQ(a.bytes.size(), 12u);
  int32_t v[3];
  std::memcpy(v, a.bytes.data(), sizeof v);
  EXPECT_EQ(v[0], 1);
  EXPECT_EQ(v[1], -2);
  EXPECT_EQ(v[2], 0x01020304);

  // And write_idx produces the same big-endian bytes back.
  IdxArray f;
  f.type_code = kIdxF32;
  f.dims = {2};
  const float fv[2] = {1.5f, -0.25f};
  f.bytes.resize(8);
  std::memcpy(f.bytes.data(), fv, 8);
  write_idx(dir.file("f32.idx"), f, false);
  EXPECT_EQ(read_idx(dir.file("f32.idx")).bytes, f.bytes);
}

TEST(ReadIdx, DetectsGzipByMagicBytesNotByName) {
  ScratchDir dir;
  const auto plain = idx_bytes(kIdxU8, {4, 2}, counting(8));
  write_plain(dir.file("compressed.idx"), gzip_bytes(plain));
  write_plain(dir.file("uncompressed.gz"), plain);
  EXPECT_EQ(read_idx(dir.file("compressed.idx")).bytes, counting(8));
  EXPECT_EQ(read_idx(dir.file("uncompressed.gz")).bytes, counting(8));
}

TEST(ReadIdx, ReadsConcatenatedGzipMembers) {
  ScratchDir dir;
  const auto plain = idx_bytes(kIdxU8, {10}, counting(10));
  auto gz = gzip_bytes({plain.begin(), plain.begin() + 6});
  const auto tail = gzip_bytes({plain.begin() + 6, plain.end()});
  gz.insert(gz.end(), tail.begin(), tail.end());
  write_plain(dir.file("two_members.gz"), gz);
  EXPECT_EQ(read_idx(dir.file("two_members.gz")).bytes, counting(10));
}

TEST(ReadIdx, MissingFileIsNamed) {
  ScratchDir dir;
  const std::string path = dir.file("nope.idx");
  const std::string msg = read_error(path);
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
}

TEST(ReadIdx, BadMagicIsRejected) {
  ScratchDir dir;
  auto b = idx_bytes(kIdxU8, {4}, counting(4));
  b[1] = 0x42;
  write_plain(dir.file("magic.idx"), b);
  const std::string msg = read_error(dir.file("magic.idx"));
  EXPECT_NE(msg.find(dir.file("magic.idx")), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad magic"), std::string::npos) << msg;
  EXPECT_NE(msg.find("0x42"), std::string::npos) << msg;
}

TEST(ReadIdx, UnsupportedTypeCodeIsRejected) {
  ScratchDir dir;
  write_plain(dir.file("type.idx"), idx_bytes(0x07, {4}, counting(4)));
  const std::string msg = read_error(dir.file("type.idx"));
  EXPECT_NE(msg.find(dir.file("type.idx")), std::string::npos) << msg;
  EXPECT_NE(msg.find("unsupported type code 0x07"), std::string::npos) << msg;
}

TEST(ReadIdx, ZeroOrAbsurdDimensionCountIsRejected) {
  ScratchDir dir;
  write_plain(dir.file("zero.idx"), idx_bytes(kIdxU8, {}, counting(4)));
  std::string msg = read_error(dir.file("zero.idx"));
  EXPECT_NE(msg.find(dir.file("zero.idx")), std::string::npos) << msg;
  EXPECT_NE(msg.find("dimension count 0"), std::string::npos) << msg;

  auto b = idx_bytes(kIdxU8, {4}, counting(4));
  b[3] = 200;
  write_plain(dir.file("many.idx"), b);
  msg = read_error(dir.file("many.idx"));
  EXPECT_NE(msg.find(dir.file("many.idx")), std::string::npos) << msg;
  EXPECT_NE(msg.find("dimension count 200"), std::string::npos) << msg;
}

TEST(ReadIdx, AbsurdDimsAreRejectedWithoutAllocating) {
  ScratchDir dir;
  write_plain(dir.file("huge.idx"),
              idx_bytes(kIdxF64, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, counting(16)));
  const std::string msg = read_error(dir.file("huge.idx"));
  EXPECT_NE(msg.find("absurd size"), std::string::npos) << msg;
}

TEST(ReadIdx, TruncatedPlainFileSaysExpectedAndGot) {
  ScratchDir dir;
  write_plain(dir.file("short.idx"), idx_bytes(kIdxU8, {10, 28, 28}, counting(1000)));
  const std::string msg = read_error(dir.file("short.idx"));
  EXPECT_NE(msg.find(dir.file("short.idx")), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("need 7840 data bytes, got 1000"), std::string::npos) << msg;
}

TEST(ReadIdx, TruncatedHeaderIsRejected) {
  ScratchDir dir;
  write_plain(dir.file("header.idx"), {0, 0, kIdxU8, 3, 0, 0, 0, 10});
  const std::string msg = read_error(dir.file("header.idx"));
  EXPECT_NE(msg.find("truncated header"), std::string::npos) << msg;
  write_plain(dir.file("tiny.idx"), {0, 0});
  EXPECT_NE(read_error(dir.file("tiny.idx")).find("truncated"), std::string::npos);
}

TEST(ReadIdx, TruncatedGzipPayloadSaysExpectedAndGot) {
  // A well-formed gzip stream whose IDX content is short.
  ScratchDir dir;
  write_plain(dir.file("short.gz"), gzip_bytes(idx_bytes(kIdxU8, {10, 28, 28}, counting(1000))));
  const std::string msg = read_error(dir.file("short.gz"));
  EXPECT_NE(msg.find(dir.file("short.gz")), std::string::npos) << msg;
  EXPECT_NE(msg.find("need 7840 data bytes, got 1000"), std::string::npos) << msg;
}

TEST(ReadIdx, GzipFileCutOffIsReportedAsTruncated) {
  // A gzip file cut in the middle, as an interrupted download leaves it.
  ScratchDir dir;
  Rng rng(5);
  std::vector<uint8_t> data(20000);
  for (auto& x : data) x = static_cast<uint8_t>(rng.below(256));  // incompressible
  auto gz = gzip_bytes(idx_bytes(kIdxU8, {20000}, data));
  gz.resize(gz.size() / 2);
  write_plain(dir.file("cut.gz"), gz);
  const std::string msg = read_error(dir.file("cut.gz"));
  EXPECT_NE(msg.find(dir.file("cut.gz")), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("need 20000 data bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gzip stream ends early"), std::string::npos) << msg;

  // Cut inside the 8-byte trailer only: the data is all there but the CRC is not.
  auto whole = gzip_bytes(idx_bytes(kIdxU8, {4}, counting(4)));
  whole.resize(whole.size() - 3);
  write_plain(dir.file("trailer.gz"), whole);
  EXPECT_NE(read_error(dir.file("trailer.gz")).find("corrupt gzip stream"), std::string::npos);
}

TEST(ReadIdx, TrailingBytesAreRejected) {
  ScratchDir dir;
  const auto b = idx_bytes(kIdxU8, {2, 3}, counting(9));
  write_plain(dir.file("long.idx"), b);
  write_plain(dir.file("long.gz"), gzip_bytes(b));
  for (const char* name : {"long.idx", "long.gz"}) {
    const std::string msg = read_error(dir.file(name));
    EXPECT_NE(msg.find(dir.file(name)), std::string::npos) << msg;
    EXPECT_NE(msg.find("trailing garbage"), std::string::npos) << msg;
    EXPECT_NE(msg.find("need 6 data bytes, got 9 (3 extra)"), std::string::npos) << msg;
  }
}

TEST(ReadIdx, CorruptGzipStreamIsRejected) {
  ScratchDir dir;
  auto gz = gzip_bytes(idx_bytes(kIdxU8, {1000}, counting(1000)));
  Rng rng(11);
  // Scramble the deflate data after the 10-byte gzip header.
  for (size_t i = 10; i < gz.size(); ++i) gz[i] ^= static_cast<uint8_t>(1 + rng.below(255));
  write_plain(dir.file("corrupt.gz"), gz);
  const std::string msg = read_error(dir.file("corrupt.gz"));
  EXPECT_NE(msg.find(dir.file("corrupt.gz")), std::string::npos) << msg;
  EXPECT_NE(msg.find("corrupt gzip stream"), std::string::npos) << msg;

  // Bytes after a complete gzip stream that are not another member are corruption too.
  auto tail = gzip_bytes(idx_bytes(kIdxU8, {4}, counting(4)));
  tail.push_back(0x00);
  tail.push_back(0x17);
  write_plain(dir.file("tail.gz"), tail);
  EXPECT_NE(read_error(dir.file("tail.gz")).find("2 unexpected bytes after the end"),
            std::string::npos);
}

TEST(ReadIdx, DirectoryIsNotAFile) {
  ScratchDir dir;
  fs::create_directory(dir.file("sub"));
  EXPECT_NE(read_error(dir.file("sub")).find("is a directory"), std::string::npos);
}

TEST(ReadIdx, RealFashionMnistHeaders) {
  const std::string d = kDefaultFashionMnistDir;
  if (!fs::exists(fs::path(d) / "t10k-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed in " << d << " (Debian: dataset-fashion-mnist)";
  const IdxArray labels = read_idx(d + "/t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(labels.type_code, kIdxU8);
  EXPECT_EQ(labels.dims, std::vector<int64_t>({10000}));
  const IdxArray images = read_idx(d + "/t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(images.type_code, kIdxU8);
  EXPECT_EQ(images.dims, std::vector<int64_t>({10000, 28, 28}));
  EXPECT_EQ(images.bytes.size(), 10000u * 28 * 28);
}

}  // namespace
}  // namespace tern
