// The tcp transport's wire format: every message is a fixed 64-byte header, its payload, and zeros up
// to a multiple of 64 bytes. The header lets a receiver reject bytes that are not ours (another
// program, another job, a lost or repeated frame, an absurd length) before it trusts the length
// enough to read on.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tern::net {

constexpr uint32_t kFrameMagic = 0x4E524554;  // the bytes "TERN" on the wire
constexpr uint16_t kFrameVersion = 2;         // 1: 48-byte headers, payloads not padded
constexpr size_t kFrameHeaderBytes = 64;
// Every header and payload starts at a multiple of this in the byte stream, so the kernel copies
// payloads out of the socket cache-line aligned into aligned buffers. With 48-byte headers and no
// padding, a 4-rank 4 MB allgather over sockets spent 36-40 % of its samples in the kernel's
// receive copy (_copy_to_iter), against 18 % (perf; README "Frames on the wire").
constexpr size_t kFrameAlign = 64;
constexpr uint8_t kFramePadding[kFrameAlign] = {};
// A handshake's payload is the job id; ids longer than this are refused before they are read.
constexpr size_t kMaxJobIdBytes = 1024;

enum class FrameKind : uint16_t { handshake = 1, data = 2 };

// Data frames: context and tag address the mailbox, sequence counts frames per connection and
// direction from 1. Handshakes: context is the world size, tag the sender's rank, sequence 0 and
// the payload the job id.
struct FrameHeader {
  uint32_t magic = kFrameMagic;
  uint16_t version = kFrameVersion;
  uint16_t kind = 0;
  uint64_t job_hash = 0;
  uint64_t context = 0;
  uint64_t tag = 0;
  uint64_t sequence = 0;
  uint64_t payload_bytes = 0;
};

using EncodedHeader = std::array<uint8_t, kFrameHeaderBytes>;

// The zeros that follow a payload of `payload_bytes` (0-63).
constexpr size_t frame_padding(uint64_t payload_bytes) {
  return static_cast<size_t>((kFrameAlign - payload_bytes % kFrameAlign) % kFrameAlign);
}

// Little-endian on the wire whatever the host's byte order.
EncodedHeader encode_header(const FrameHeader& header);
FrameHeader decode_header(const uint8_t* bytes);

// FNV-1a of the job id: cheap to compare on every frame; the handshake also compares the full id.
uint64_t job_hash(const std::string& job_id);

// What is wrong with a received header, or "" when it is acceptable. Checks the magic, version,
// kind, job, sequence number and that the payload is at most max_payload_bytes.
std::string frame_problem(const FrameHeader& header, FrameKind expected_kind, uint64_t expected_job_hash,
                          uint64_t expected_sequence, uint64_t max_payload_bytes);

}  // namespace tern::net
