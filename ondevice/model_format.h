// The on-device model file: a QuantizedModel as one flat, checksummed, versioned image that a
// bare-metal build reads in place from flash (plain structs at offsets, no parser), and the host
// writes with tern-finetune. Host-side load/save turn every defect into a tern::Error.
//
// Layout (little-endian; offsets are from the start of the image; every section starts on a
// 16-byte boundary, so int32/f32 arrays can be read in place when the image itself is 16-byte
// aligned, as flash sections and this file's loader are):
//
//   offset 0          ModelFileHeader (64 bytes): magic "TERNINT8", version, sizes, CRC-32
//   tensors_offset    TensorRecord[tensor_count]  (24 bytes each; record 0 is the model input)
//   ops_offset        OpRecord[op_count]          (128 bytes each, in execution order)
//   ...               per op with weights: weight int8[weight_count], bias int32[out_channels],
//                     weight_scale f32[out_channels], multiplier int32[out_channels],
//                     shift int32[out_channels], each at its own 16-aligned offset
//
// payload_crc32 is the CRC-32 (IEEE 802.3, the one zlib and PNG use) of bytes [64, file_bytes):
// everything after the header. The header itself is checked by magic, version and sizes.
// A reader of version N refuses any other version: bump kModelFormatVersion whenever a record's
// meaning changes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ondevice/model_image.h"  // the records and the in-place reader
#include "ondevice/quantized_model.h"

namespace tern::ondevice {

// --- Host side ---

// The image of a (valid) model. Throws tern::Error if an op name does not fit kOpNameBytes.
std::vector<uint8_t> encode_model(const QuantizedModel& model);
// Parses and validates an image; `source` names it in errors, which say which check failed
// (not a model, version N vs kModelFormatVersion, truncated: expected vs got bytes, checksum
// mismatch, inconsistent records).
QuantizedModel decode_model(const uint8_t* image, size_t size, const std::string& source);
// Writes atomically (a temp file renamed over path); the Error names the path and the OS error.
void save_model(const std::string& path, const QuantizedModel& model);
QuantizedModel load_model(const std::string& path);

}  // namespace tern::ondevice
