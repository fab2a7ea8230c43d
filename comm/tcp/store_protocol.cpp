#include "comm/tcp/store_protocol.h"

namespace tern::net {
namespace {

void put_u64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}

void put_u32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(value >> (8 * i)));
}

uint64_t get_u64(const std::string& in, size_t at) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value |= static_cast<uint64_t>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  return value;
}

std::string with_prefix(const std::string& body) {
  std::string out;
  out.reserve(4 + body.size());
  put_u32(out, static_cast<uint32_t>(body.size()));
  return out + body;
}

}  // namespace

uint32_t decode_length_prefix(const std::array<uint8_t, 4>& prefix) {
  return static_cast<uint32_t>(prefix[0]) | static_cast<uint32_t>(prefix[1]) << 8 |
         static_cast<uint32_t>(prefix[2]) << 16 | static_cast<uint32_t>(prefix[3]) << 24;
}

std::string encode_request(const StoreRequest& request) {
  std::string body;
  body.push_back(static_cast<char>(request.op));
  put_u32(body, static_cast<uint32_t>(request.key.size()));
  body += request.key;
  if (request.op == StoreOp::set) {
    body += request.value;
  } else {
    put_u64(body, static_cast<uint64_t>(request.number));
  }
  return with_prefix(body);
}

std::optional<StoreRequest> decode_request(const std::string& body) {
  if (body.size() < 5) return std::nullopt;
  StoreRequest request;
  const uint8_t op = static_cast<uint8_t>(body[0]);
  if (op < static_cast<uint8_t>(StoreOp::set) || op > static_cast<uint8_t>(StoreOp::add)) return std::nullopt;
  request.op = static_cast<StoreOp>(op);
  uint64_t key_bytes = 0;
  for (int i = 0; i < 4; ++i)
    key_bytes |= static_cast<uint64_t>(static_cast<uint8_t>(body[1 + i])) << (8 * i);
  if (key_bytes > body.size() - 5) return std::nullopt;
  request.key = body.substr(5, key_bytes);
  const size_t rest = 5 + key_bytes;
  if (request.op == StoreOp::set) {
    request.value = body.substr(rest);
    return request;
  }
  if (body.size() != rest + 8) return std::nullopt;
  request.number = static_cast<int64_t>(get_u64(body, rest));
  if (request.op == StoreOp::get && request.number < 0) return std::nullopt;
  return request;
}

std::string encode_response(const StoreResponse& response) {
  std::string body;
  body.push_back(static_cast<char>(response.status));
  body += response.value;
  return with_prefix(body);
}

std::optional<StoreResponse> decode_response(const std::string& body) {
  if (body.empty()) return std::nullopt;
  const uint8_t status = static_cast<uint8_t>(body[0]);
  if (status > static_cast<uint8_t>(StoreStatus::failed)) return std::nullopt;
  return StoreResponse{static_cast<StoreStatus>(status), body.substr(1)};
}

}  // namespace tern::net
