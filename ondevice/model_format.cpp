#include "ondevice/model_format.h"

#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "runtime/error.h"

namespace tern::ondevice {

// The records are read in place; a big-endian reader would need byte swaps the format does not do.
static_assert(std::endian::native == std::endian::little, "the int8 model format is little-endian");

namespace {

constexpr uint64_t align_up(uint64_t n) {
  return (n + kModelAlignment - 1) / kModelAlignment * kModelAlignment;
}

}  // namespace

std::vector<uint8_t> encode_model(const QuantizedModel& model) {
  model.validate();
  // Sections in order; each array's offset is assigned first, then everything is copied.
  const uint64_t tensors_offset = align_up(sizeof(ModelFileHeader));
  const uint64_t ops_offset = align_up(tensors_offset + model.tensors.size() * sizeof(TensorRecord));
  uint64_t end = ops_offset + model.ops.size() * sizeof(OpRecord);
  std::vector<OpRecord> records(model.ops.size());
  auto place = [&end](uint64_t bytes) -> uint32_t {
    if (bytes == 0) return 0;
    const uint64_t at = align_up(end);
    end = at + bytes;
    TERN_CHECK(end < (uint64_t{1} << 32), "encode_model: the model needs more than 4 GiB");
    return static_cast<uint32_t>(at);
  };
  for (size_t i = 0; i < model.ops.size(); ++i) {
    const QuantOp& op = model.ops[i];
    OpRecord& r = records[i];
    std::memset(&r, 0, sizeof r);
    r.kind = static_cast<uint32_t>(op.kind);
    r.activation = static_cast<uint32_t>(op.activation);
    r.input = op.input;
    r.input2 = op.input2;
    r.output = op.output;
    r.kernel = op.kernel;
    r.stride = op.stride;
    r.pad = op.pad;
    r.act_min = op.act_min;
    r.act_max = op.act_max;
    r.add_a_mult = op.add_a_mult;
    r.add_b_mult = op.add_b_mult;
    TERN_CHECK(op.name.size() < kOpNameBytes, "encode_model: op name '", op.name, "' is longer than ",
               kOpNameBytes - 1, " characters");
    std::memcpy(r.name, op.name.data(), op.name.size());
    if (op.has_weights()) {
      const uint64_t c = op.weight_scale.size();
      r.out_channels = static_cast<uint32_t>(c);
      r.weight_count = static_cast<uint32_t>(op.weight.size());
      r.weight_offset = place(op.weight.size());
      r.bias_offset = place(4 * c);
      r.weight_scale_offset = place(4 * c);
      r.multiplier_offset = place(4 * c);
      r.shift_offset = place(4 * c);
    }
  }
  std::vector<uint8_t> image(static_cast<size_t>(align_up(end)), 0);
  auto put = [&image](uint64_t offset, const void* src, size_t bytes) {
    if (bytes) std::memcpy(image.data() + offset, src, bytes);
  };
  for (size_t t = 0; t < model.tensors.size(); ++t) {
    const QuantTensor& q = model.tensors[t];
    const TensorRecord r{q.h, q.w, q.c, q.scale, q.zero_point, 0};
    put(tensors_offset + t * sizeof(TensorRecord), &r, sizeof r);
  }
  for (size_t i = 0; i < model.ops.size(); ++i) {
    const QuantOp& op = model.ops[i];
    const OpRecord& r = records[i];
    put(ops_offset + i * sizeof(OpRecord), &r, sizeof r);
    if (!op.has_weights()) continue;
    const size_t c = op.weight_scale.size();
    put(r.weight_offset, op.weight.data(), op.weight.size());
    put(r.bias_offset, op.bias.data(), 4 * c);
    put(r.weight_scale_offset, op.weight_scale.data(), 4 * c);
    put(r.multiplier_offset, op.multiplier.data(), 4 * c);
    put(r.shift_offset, op.shift.data(), 4 * c);
  }
  ModelFileHeader h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, kModelMagic, sizeof h.magic);
  h.version = kModelFormatVersion;
  h.header_bytes = sizeof(ModelFileHeader);
  h.file_bytes = image.size();
  h.tensor_count = static_cast<uint32_t>(model.tensors.size());
  h.op_count = static_cast<uint32_t>(model.ops.size());
  h.output_tensor = static_cast<uint32_t>(model.output);
  h.tensors_offset = static_cast<uint32_t>(tensors_offset);
  h.ops_offset = model.ops.empty() ? 0 : static_cast<uint32_t>(ops_offset);
  h.payload_crc32 = crc32(image.data() + sizeof h, image.size() - sizeof h);
  put(0, &h, sizeof h);
  return image;
}

QuantizedModel decode_model(const uint8_t* image, size_t size, const std::string& source) {
  const FormatStatus status = check_model_image(image, size);
  if (status != FormatStatus::ok) {
    ModelFileHeader h{};
    if (size >= sizeof h) std::memcpy(&h, image, sizeof h);
    switch (status) {
      case FormatStatus::too_small:
        throw Error(detail::concat(source, ": truncated or not a Tern int8 model: ", size,
                                   " bytes, shorter than the ", sizeof(ModelFileHeader), "-byte header"));
      case FormatStatus::bad_magic:
        throw Error(
            detail::concat(source, ": not a Tern int8 model (the file does not start with \"TERNINT8\")"));
      case FormatStatus::bad_version:
        throw Error(detail::concat(source, ": int8 model format version ", h.version,
                                   "; this build reads version ", kModelFormatVersion,
                                   " (convert the checkpoint again with this build)"));
      case FormatStatus::truncated:
        throw Error(detail::concat(source, ": truncated int8 model: the header says ", h.file_bytes,
                                   " bytes, the file has ", size));
      case FormatStatus::bad_checksum:
        throw Error(detail::concat(source, ": corrupted int8 model: CRC-32 of the payload is ",
                                   crc32(image + sizeof h, static_cast<size_t>(h.file_bytes - sizeof h)),
                                   ", the header says ", h.payload_crc32));
      default:
        throw Error(detail::concat(source, ": int8 model with an inconsistent layout (",
                                   format_status_name(status), "): records or arrays outside the file"));
    }
  }
  ModelFileHeader h;
  std::memcpy(&h, image, sizeof h);
  QuantizedModel m;
  m.output = static_cast<int32_t>(h.output_tensor);
  for (uint32_t t = 0; t < h.tensor_count; ++t) {
    TensorRecord r;
    std::memcpy(&r, image + h.tensors_offset + uint64_t{t} * sizeof r, sizeof r);
    m.tensors.push_back(QuantTensor{r.h, r.w, r.c, r.scale, r.zero_point});
  }
  for (uint32_t i = 0; i < h.op_count; ++i) {
    OpRecord r;
    std::memcpy(&r, image + h.ops_offset + uint64_t{i} * sizeof r, sizeof r);
    QuantOp op;
    op.kind = static_cast<QuantOpKind>(r.kind);
    op.activation = static_cast<Activation>(r.activation);
    op.name = r.name;
    op.input = r.input;
    op.input2 = r.input2;
    op.output = r.output;
    op.kernel = r.kernel;
    op.stride = r.stride;
    op.pad = r.pad;
    op.act_min = r.act_min;
    op.act_max = r.act_max;
    op.add_a_mult = r.add_a_mult;
    op.add_b_mult = r.add_b_mult;
    auto take = [image](auto& vec, uint32_t offset, size_t count) {
      vec.resize(offset ? count : 0);
      if (!vec.empty()) std::memcpy(vec.data(), image + offset, count * sizeof(vec[0]));
    };
    take(op.weight, r.weight_offset, r.weight_count);
    take(op.bias, r.bias_offset, r.out_channels);
    take(op.weight_scale, r.weight_scale_offset, r.out_channels);
    take(op.multiplier, r.multiplier_offset, r.out_channels);
    take(op.shift, r.shift_offset, r.out_channels);
    m.ops.push_back(std::move(op));
  }
  try {
    m.validate();
  } catch (const Error& e) {
    throw Error(detail::concat(source, ": inconsistent int8 model: ", e.what()));
  }
  return m;
}

void save_model(const std::string& path, const QuantizedModel& model) {
  const std::vector<uint8_t> image = encode_model(model);
  const std::string tmp = detail::concat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TERN_CHECK(out.good(), "save_model: cannot create ", tmp, ": ", std::strerror(errno));
    out.write(reinterpret_cast<const char*>(image.data()), static_cast<std::streamsize>(image.size()));
    out.flush();
    if (!out.good()) {
      const int err = errno;
      std::remove(tmp.c_str());
      throw Error(detail::concat("save_model: cannot write ", tmp, ": ", std::strerror(err)));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(detail::concat("save_model: cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
}

QuantizedModel load_model(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TERN_CHECK(in.good(), "load_model: cannot open ", path, ": ", std::strerror(errno));
  const std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TERN_CHECK(!in.bad(), "load_model: cannot read ", path, ": ", std::strerror(errno));
  return decode_model(image.data(), image.size(), path);
}

}  // namespace tern::ondevice
