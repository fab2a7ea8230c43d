// "host:port" addresses, the form TERN_STORE_ADDR and the store's rendezvous entries take, and the
// Asio endpoint lookup both the store client and the transport use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "comm/tcp/asio.h"

namespace tern::net {

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

// "127.0.0.1:29500", "localhost:80", "[::1]:29500"; nullopt when there is no host, no port, or the
// port is not a number in 1..65535.
std::optional<HostPort> parse_host_port(const std::string& text);
std::string format_host_port(const std::string& host, uint16_t port);

// The endpoint for host (an IP literal or a name to resolve); throws CommError naming `what`.
boost::asio::ip::tcp::endpoint resolve_endpoint(boost::asio::io_context& io, const HostPort& address,
                                                const std::string& what);

}  // namespace tern::net
