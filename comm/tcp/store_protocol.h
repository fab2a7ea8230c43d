// The wire protocol between TcpStoreServer and its clients: on one connection, one request then one
// response, in turn, each a 4-byte little-endian length and a body. Anything else closes the
// connection (the server never trusts a client enough to crash on it).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace tern::net {

// Bodies above this are malformed: rendezvous values are addresses, not tensors.
constexpr uint32_t kMaxStoreBodyBytes = 16u << 20;

enum class StoreOp : uint8_t { set = 1, get = 2, add = 3 };
enum class StoreStatus : uint8_t { ok = 0, timed_out = 1, failed = 2 };

// Body: op, u32 key length, key, then for set the value (rest of the body), for get the u64
// timeout in milliseconds, for add the i64 delta.
struct StoreRequest {
  StoreOp op = StoreOp::get;
  std::string key;
  std::string value;   // set
  int64_t number = 0;  // get: timeout in ms; add: delta
};

// Body: status, then the value (get), the new integer in decimal (add) or the reason (failed).
struct StoreResponse {
  StoreStatus status = StoreStatus::ok;
  std::string value;
};

std::string encode_request(const StoreRequest& request);     // length prefix included
std::string encode_response(const StoreResponse& response);  // length prefix included
// Bodies without their prefix; nullopt when malformed.
std::optional<StoreRequest> decode_request(const std::string& body);
std::optional<StoreResponse> decode_response(const std::string& body);
uint32_t decode_length_prefix(const std::array<uint8_t, 4>& prefix);

}  // namespace tern::net
