#include "ondevice/model_format.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "models/registry.h"
#include "ondevice/quantize.h"
#include "runtime/rng.h"
#include "tests/support/scratch_dir.h"

namespace tern::ondevice {
namespace {

using tern::testing::ScratchDir;

QuantizedModel small_model() {
  ModelConfig cfg;
  cfg.width_mult = 0.35f;
  cfg.height = cfg.width = 16;
  auto net = make_mobilenetv2(cfg);  // every op kind but max_pool: conv, depthwise, add, pool, linear
  Rng rng(61);
  Tensor x = Tensor::empty({8, 1, 16, 16});
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = rng.normal();
  return quantize_model(*net, x);
}

void expect_same(const QuantizedModel& a, const QuantizedModel& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t t = 0; t < a.tensors.size(); ++t) {
    EXPECT_EQ(a.tensors[t].h, b.tensors[t].h);
    EXPECT_EQ(a.tensors[t].w, b.tensors[t].w);
    EXPECT_EQ(a.tensors[t].c, b.tensors[t].c);
    EXPECT_EQ(a.tensors[t].scale, b.tensors[t].scale);
    EXPECT_EQ(a.tensors[t].zero_point, b.tensors[t].zero_point);
  }
  ASSERT_EQ(a.ops.size(), b.ops.size());
  for (size_t i = 0; i < a.ops.size(); ++i) {
    const QuantOp &x = a.ops[i], &y = b.ops[i];
    EXPECT_EQ(x.kind, y.kind);
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.input, y.input);
    EXPECT_EQ(x.input2, y.input2);
    EXPECT_EQ(x.output, y.output);
    EXPECT_EQ(x.kernel, y.kernel);
    EXPECT_EQ(x.stride, y.stride);
    EXPECT_EQ(x.pad, y.pad);
    EXPECT_EQ(x.activation, y.activation);
    EXPECT_EQ(x.act_min, y.act_min);
    EXPECT_EQ(x.act_max, y.act_max);
    EXPECT_EQ(x.add_a_mult, y.add_a_mult);
    EXPECT_EQ(x.add_b_mult, y.add_b_mult);
    EXPECT_EQ(x.weight, y.weight);
    EXPECT_EQ(x.bias, y.bias);
    EXPECT_EQ(x.weight_scale, y.weight_scale);
    EXPECT_EQ(x.multiplier, y.multiplier);
    EXPECT_EQ(x.shift, y.shift);
  }
  EXPECT_EQ(a.output, b.output);
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string load_error(const std::string& path) {
  try {
    load_model(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelFormat, Crc32IsTheStandardOne) {
  const char* check = "123456789";
  EXPECT_EQ(crc32(reinterpret_cast<const uint8_t*>(check), 9), 0xCBF43926u);  // the CRC-32 check value
  Rng rng(62);
  std::vector<uint8_t> bytes(10007);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng.below(256));
  EXPECT_EQ(crc32(bytes.data(), bytes.size()), ::crc32(0L, bytes.data(), static_cast<uInt>(bytes.size())));
}

TEST(ModelFormat, SaveThenLoadIsTheSameModelAndTheSameOutputs) {
  const QuantizedModel m = small_model();
  ScratchDir dir;
  save_model(dir.file("m.tern8"), m);
  const QuantizedModel back = load_model(dir.file("m.tern8"));
  expect_same(m, back);
  std::vector<float> image(16 * 16);
  for (size_t i = 0; i < image.size(); ++i) image[i] = std::sin(static_cast<float>(i));
  EXPECT_EQ(m.forward(image.data()), back.forward(image.data()));
  // Encoding is deterministic: the same model gives the same bytes.
  EXPECT_EQ(encode_model(m), encode_model(back));
}

TEST(ModelFormat, ImageIsReadableInPlaceWithAlignedArrays) {
  const QuantizedModel m = small_model();
  const std::vector<uint8_t> bytes = encode_model(m);
  // A flash image is 16-byte aligned; copy into such a buffer.
  std::vector<uint8_t> storage(bytes.size() + kModelAlignment);
  uint8_t* image =
      storage.data() + (kModelAlignment - reinterpret_cast<uintptr_t>(storage.data()) % kModelAlignment);
  std::memcpy(image, bytes.data(), bytes.size());
  ASSERT_EQ(check_model_image(image, bytes.size()), FormatStatus::ok);
  const ModelFileHeader& h = image_header(image);
  EXPECT_EQ(h.file_bytes, bytes.size());
  EXPECT_EQ(h.file_bytes % kModelAlignment, 0u);
  ASSERT_EQ(h.op_count, m.ops.size());
  ASSERT_EQ(h.tensor_count, m.tensors.size());
  EXPECT_EQ(image_tensors(image)[0].c, 1);
  for (uint32_t i = 0; i < h.op_count; ++i) {
    const OpRecord& r = image_ops(image)[i];
    const QuantOp& op = m.ops[i];
    EXPECT_STREQ(r.name, op.name.c_str());
    if (!op.has_weights()) {
      EXPECT_EQ(r.weight_offset, 0u);
      continue;
    }
    for (uint32_t off :
         {r.weight_offset, r.bias_offset, r.weight_scale_offset, r.multiplier_offset, r.shift_offset})
      EXPECT_EQ(off % kModelAlignment, 0u);
    EXPECT_EQ(std::memcmp(image_array<int8_t>(image, r.weight_offset), op.weight.data(), op.weight.size()),
              0);
    EXPECT_EQ(image_array<int32_t>(image, r.bias_offset)[r.out_channels - 1], op.bias.back());
    EXPECT_EQ(image_array<float>(image, r.weight_scale_offset)[0], op.weight_scale[0]);
  }
  // Padding after the image (a flash sector) is allowed.
  EXPECT_EQ(check_model_image(image, bytes.size() + 3), FormatStatus::ok);
}

TEST(ModelFormat, AFlippedBitAnywhereInThePayloadIsACorruptionError) {
  const QuantizedModel m = small_model();
  const std::vector<uint8_t> good = encode_model(m);
  ScratchDir dir;
  Rng rng(63);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<uint8_t> bad = good;
    const size_t at =
        sizeof(ModelFileHeader) + rng.below(static_cast<uint32_t>(good.size() - sizeof(ModelFileHeader)));
    bad[at] ^= static_cast<uint8_t>(1u << rng.below(8));
    EXPECT_EQ(check_model_image(bad.data(), bad.size()), FormatStatus::bad_checksum) << at;
    write_file(dir.file("bad.tern8"), bad);
    const std::string err = load_error(dir.file("bad.tern8"));
    EXPECT_NE(err.find("bad.tern8: corrupted int8 model: CRC-32"), std::string::npos) << err;
  }
}

TEST(ModelFormat, TruncatedFilesSayHowMuchIsMissing) {
  const std::vector<uint8_t> good = encode_model(small_model());
  ScratchDir dir;
  std::vector<uint8_t> cut(good.begin(), good.end() - 100);
  write_file(dir.file("cut.tern8"), cut);
  const std::string err = load_error(dir.file("cut.tern8"));
  EXPECT_NE(err.find("truncated int8 model: the header says " + std::to_string(good.size()) +
                     " bytes, the file has " + std::to_string(cut.size())),
            std::string::npos)
      << err;
  write_file(dir.file("tiny.tern8"), std::vector<uint8_t>(good.begin(), good.begin() + 20));
  EXPECT_NE(load_error(dir.file("tiny.tern8")).find("shorter than the 64-byte header"), std::string::npos);
  write_file(dir.file("empty.tern8"), {});
  EXPECT_NE(load_error(dir.file("empty.tern8")).find("truncated or not a Tern int8 model"),
            std::string::npos);
}

TEST(ModelFormat, ForeignFilesAndOtherVersionsAreRefused) {
  const std::vector<uint8_t> good = encode_model(small_model());
  ScratchDir dir;
  std::vector<uint8_t> foreign = good;
  std::memcpy(foreign.data(), "TERNCKPT", 8);  // a training checkpoint's magic
  write_file(dir.file("ckpt.tern"), foreign);
  EXPECT_NE(load_error(dir.file("ckpt.tern")).find("ckpt.tern: not a Tern int8 model"), std::string::npos);

  std::vector<uint8_t> future = good;
  const uint32_t v = kModelFormatVersion + 1;
  std::memcpy(future.data() + offsetof(ModelFileHeader, version), &v, 4);
  write_file(dir.file("v2.tern8"), future);
  const std::string err = load_error(dir.file("v2.tern8"));
  EXPECT_NE(err.find("format version " + std::to_string(v) + "; this build reads version " +
                     std::to_string(kModelFormatVersion)),
            std::string::npos)
      << err;
  EXPECT_NE(load_error(dir.file("missing.tern8")).find("cannot open " + dir.file("missing.tern8")),
            std::string::npos);
}

// A record pointing outside the image (a broken writer, with a valid checksum over the broken
// bytes) is refused by the layout check before anything reads through it.
TEST(ModelFormat, RecordsOutsideTheImageAreRefusedEvenWithAValidChecksum) {
  std::vector<uint8_t> image = encode_model(small_model());
  ModelFileHeader h;
  std::memcpy(&h, image.data(), sizeof h);
  OpRecord r;
  const size_t at = h.ops_offset;  // op 0: the stem convolution
  std::memcpy(&r, image.data() + at, sizeof r);
  r.weight_offset = static_cast<uint32_t>(image.size() - kModelAlignment);  // its weights run past the end
  std::memcpy(image.data() + at, &r, sizeof r);
  h.payload_crc32 = crc32(image.data() + sizeof h, image.size() - sizeof h);
  std::memcpy(image.data(), &h, sizeof h);
  EXPECT_EQ(check_model_image(image.data(), image.size()), FormatStatus::bad_layout);
  try {
    decode_model(image.data(), image.size(), "broken");
    ADD_FAILURE() << "decoded a broken image";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken: int8 model with an inconsistent layout"), std::string::npos)
        << e.what();
  }
}

TEST(ModelFormat, InconsistentRecordsInsideTheImageFailValidation) {
  std::vector<uint8_t> image = encode_model(small_model());
  ModelFileHeader h;
  std::memcpy(&h, image.data(), sizeof h);
  OpRecord r;
  std::memcpy(&r, image.data() + h.ops_offset, sizeof r);
  r.stride = 0;  // a stride the kernels cannot run
  std::memcpy(image.data() + h.ops_offset, &r, sizeof r);
  h.payload_crc32 = crc32(image.data() + sizeof h, image.size() - sizeof h);
  std::memcpy(image.data(), &h, sizeof h);
  try {
    decode_model(image.data(), image.size(), "odd");
    ADD_FAILURE() << "decoded an inconsistent model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("odd: inconsistent int8 model"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("stride 0"), std::string::npos) << e.what();
  }
}

TEST(ModelFormat, OverlongOpNamesAreRefusedWhenEncoding) {
  QuantizedModel m = small_model();
  m.ops[0].name = std::string(kOpNameBytes, 'x');
  EXPECT_THROW(encode_model(m), Error);
}

}  // namespace
}  // namespace tern::ondevice
