// Rendezvous of the tcp backend: every rank publishes where it listens in the store, then rank i
// connects to every rank below it and accepts every rank above it, each link opened by a
// handshake (job id, rank, world size) that both ends check. Strangers are logged and dropped.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "comm/store.h"
#include "comm/tcp/asio.h"
#include "comm/tcp/tcp_communicator.h"

namespace tern::net {

using Socket = boost::asio::ip::tcp::socket;

// One connected socket per rank of the world (null at world.rank), TCP_NODELAY on, or a CommError
// by `timeout` naming the ranks that never arrived. The sockets belong to `io`, which is only run
// during the call.
std::vector<std::unique_ptr<Socket>> connect_mesh(boost::asio::io_context& io, const TcpWorld& world,
                                                  Store& store, std::chrono::milliseconds timeout);

// The store key under which `rank` publishes its address for the `generation`-th tcp world its
// job creates (so a second world of the same job never dials the first one's stale ports).
std::string address_key(const std::string& job_id, int64_t generation, int rank);

}  // namespace tern::net
