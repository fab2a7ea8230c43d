// make_tcp_communicator: Tern's collective algorithms (TransportCommunicator) over a TcpTransport,
// configured explicitly or from the environment ternrun sets.
#include "comm/tcp/tcp_communicator.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <numeric>
#include <thread>

#include "comm/tcp/shm_transport.h"
#include "comm/tcp/tcp_store.h"
#include "comm/tcp/tcp_transport.h"
#include "comm/transport_communicator.h"

namespace tern {
namespace {

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw Error(std::string("tcp communicator: environment variable ") + name +
                " is not set (ternrun sets it; or choose another backend with --comm)");
  }
  return value;
}

int int_env(const char* name, int min_value) {
  const std::string text = required_env(name);
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < min_value) {
    throw Error(std::string("tcp communicator: environment variable ") + name + "='" + text +
                "' is not an integer >= " + std::to_string(min_value));
  }
  return value;
}

// TERN_SHM=0 keeps a one-host world on TCP (for comparisons, or a /dev/shm that misbehaves).
bool shm_enabled() {
  const char* value = std::getenv("TERN_SHM");
  return value == nullptr || std::string(value) != "0";
}

// Cores of this host (online CPUs, not this process's affinity: mpirun binds each rank to one).
int cores_on_this_host() {
  const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(online) : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// Ranks that all share this host talk through shared-memory rings; any other world, or one whose
// segments cannot be created (every rank learns that together), uses the TCP mesh. Sets `here` to
// the number of the world's ranks on this host. Shared memory has to know that before any link
// is made; with it off (TERN_SHM=0) the ranks are counted once the mesh stands, so that setting up
// the mesh waits for no rank that is not yet there (a rank accepts connections while later ranks
// arrive). Which recvs poll the link: polled_recv_limit.
std::shared_ptr<Transport> make_transport(const TcpWorld& world, Store& store, const CommOptions& options, int cores,
                                          int& here) {
  here = 1;
  if (world.size > 1 && shm_enabled()) {
    here = ranks_on_this_host(world, store, options.timeout);
    if (here == world.size) {
      CommOptions tuned = options;
      tuned.poll_max_bytes = polled_recv_limit(options);
      try {
        return std::make_shared<ShmTransport>(world, store, tuned);
      } catch (const ShmUnavailable& e) {  // every rank, with the same reason: said once
        if (world.rank == 0) std::cerr << "tern tcp: " << e.what() << "; using TCP\n";
      }
    }
  }
  auto transport = std::make_shared<TcpTransport>(world, store, options);
  if (world.size > 1 && !shm_enabled()) here = ranks_on_this_host(world, store, options.timeout);
  transport->set_poll_max_bytes(polled_recv_limit(options));
  transport->set_read_after_send_bytes(read_after_send_limit(options, here, cores));
  return transport;
}

}  // namespace

size_t polled_recv_limit(const CommOptions& options) {
  return options.poll_every_size ? std::numeric_limits<size_t>::max() : options.poll_max_bytes;
}

size_t read_after_send_limit(const CommOptions& options, int ranks_here, int cores) {
  return ranks_here <= cores ? options.read_after_send_bytes : 0;
}

size_t ring_chunk_for_host(const CommOptions& options, int ranks_here, int cores) {
  if (options.ring_chunk_bytes != 0 || ranks_here <= cores) return options.ring_chunk_bytes;
  return kOversubscribedRingChunkBytes;
}

int64_t ring_chunk_max_for_host(const CommOptions& options, int ranks_here, int cores) {
  if (options.ring_chunk_max_bytes >= 0) return options.ring_chunk_max_bytes;
  if (options.ring_chunk_bytes != 0 || ranks_here > cores) return 0;
  return static_cast<int64_t>(kRingChunkMaxBytes);
}

int64_t halving_doubling_for_host(const CommOptions& options, int ranks_here, int cores) {
  if (options.halving_doubling_max_bytes >= 0) return options.halving_doubling_max_bytes;
  return ranks_here > cores ? kOversubscribedHalvingDoublingBytes : 0;
}

std::unique_ptr<Communicator> make_tcp_communicator(const TcpWorld& world, std::shared_ptr<Store> store,
                                                    const CommOptions& options) {
  TERN_CHECK(store != nullptr, "make_tcp_communicator: no store");
  const int cores = cores_on_this_host();
  int here = 1;
  auto transport = make_transport(world, *store, options, cores, here);
  CommOptions tuned = options;
  tuned.ring_chunk_bytes = ring_chunk_for_host(options, here, cores);
  tuned.ring_chunk_max_bytes = ring_chunk_max_for_host(options, here, cores);
  tuned.halving_doubling_max_bytes = halving_doubling_for_host(options, here, cores);
  std::vector<int> group(static_cast<size_t>(world.size));
  std::iota(group.begin(), group.end(), 0);
  return std::make_unique<TransportCommunicator>(std::move(transport), std::move(group), 0, "tcp", tuned,
                                                 /*world=*/true);
}

std::unique_ptr<Communicator> make_tcp_communicator_from_env(const CommOptions& options) {
  TcpWorld world;
  world.rank = int_env("TERN_RANK", 0);
  world.size = int_env("TERN_WORLD_SIZE", 1);
  if (world.rank >= world.size) {
    throw Error("tcp communicator: TERN_RANK=" + std::to_string(world.rank) +
                " is not below TERN_WORLD_SIZE=" + std::to_string(world.size));
  }
  const std::string store_address = required_env("TERN_STORE_ADDR");
  world.job_id = required_env("TERN_JOB_ID");
  // connect_tcp_store rejects a malformed address; name the variable it came from.
  std::shared_ptr<Store> store;
  try {
    store = connect_tcp_store(store_address, options.timeout);
  } catch (const CommError&) {
    throw;
  } catch (const Error& e) {
    throw Error(std::string("tcp communicator: TERN_STORE_ADDR: ") + e.what());
  }
  return make_tcp_communicator(world, std::move(store), options);
}

}  // namespace tern
