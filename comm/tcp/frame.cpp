#include "comm/tcp/frame.h"

#include <cstdio>

namespace tern::net {
namespace {

template <typename T>
void put_le(uint8_t* out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i)
    out[i] = static_cast<uint8_t>(static_cast<uint64_t>(value) >> (8 * i));
}

template <typename T>
T get_le(const uint8_t* in) {
  uint64_t value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<uint64_t>(in[i]) << (8 * i);
  return static_cast<T>(value);
}

std::string hex(uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

const char* kind_name(uint16_t kind) {
  switch (static_cast<FrameKind>(kind)) {
    case FrameKind::handshake:
      return "handshake";
    case FrameKind::data:
      return "data";
  }
  return "unknown";
}

}  // namespace

EncodedHeader encode_header(const FrameHeader& header) {
  EncodedHeader bytes{};
  put_le(bytes.data() + 0, header.magic);
  put_le(bytes.data() + 4, header.version);
  put_le(bytes.data() + 6, header.kind);
  put_le(bytes.data() + 8, header.job_hash);
  put_le(bytes.data() + 16, header.context);
  put_le(bytes.data() + 24, header.tag);
  put_le(bytes.data() + 32, header.sequence);
  put_le(bytes.data() + 40, header.payload_bytes);
  return bytes;
}

FrameHeader decode_header(const uint8_t* bytes) {
  FrameHeader header;
  header.magic = get_le<uint32_t>(bytes + 0);
  header.version = get_le<uint16_t>(bytes + 4);
  header.kind = get_le<uint16_t>(bytes + 6);
  header.job_hash = get_le<uint64_t>(bytes + 8);
  header.context = get_le<uint64_t>(bytes + 16);
  header.tag = get_le<uint64_t>(bytes + 24);
  header.sequence = get_le<uint64_t>(bytes + 32);
  header.payload_bytes = get_le<uint64_t>(bytes + 40);
  return header;
}

uint64_t job_hash(const std::string& job_id) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : job_id) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::string frame_problem(const FrameHeader& header, FrameKind expected_kind, uint64_t expected_job_hash,
                          uint64_t expected_sequence, uint64_t max_payload_bytes) {
  if (header.magic != kFrameMagic) {
    return "bad magic " + hex(header.magic) + ", expected " + hex(kFrameMagic) + " (not a tern frame)";
  }
  if (header.version != kFrameVersion) {
    return "protocol version " + std::to_string(header.version) + ", expected " +
           std::to_string(kFrameVersion);
  }
  if (header.kind != static_cast<uint16_t>(expected_kind)) {
    return std::string("a ") + kind_name(header.kind) + " frame (kind " + std::to_string(header.kind) +
           ") where a " + kind_name(static_cast<uint16_t>(expected_kind)) + " frame was expected";
  }
  if (header.job_hash != expected_job_hash) {
    return "job hash " + hex(header.job_hash) + ", expected " + hex(expected_job_hash) +
           " (a frame of another job)";
  }
  if (header.sequence != expected_sequence) {
    return "sequence number " + std::to_string(header.sequence) + ", expected " +
           std::to_string(expected_sequence) + " (a lost, repeated or reordered frame)";
  }
  if (header.payload_bytes > max_payload_bytes) {
    return "payload of " + std::to_string(header.payload_bytes) + " bytes exceeds the limit of " +
           std::to_string(max_payload_bytes) + " bytes (max_message_bytes)";
  }
  return "";
}

}  // namespace tern::net
