// make_local_world, run_local and make_single_communicator: TransportCommunicators over one
// LocalFabric.
#include <exception>
#include <mutex>
#include <thread>

#include "comm/local/local.h"
#include "comm/local/local_transport.h"
#include "comm/transport_communicator.h"

namespace tern {
namespace {

std::vector<std::unique_ptr<Communicator>> make_world(int n, const CommOptions& options,
                                                      const std::string& backend,
                                                      std::shared_ptr<LocalFabric>* fabric) {
  TERN_CHECK(n >= 1, "local world: ", n, " ranks requested, expected at least 1");
  std::vector<int> members(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) members[static_cast<size_t>(r)] = r;
  std::vector<std::unique_ptr<Communicator>> world;
  for (auto& transport : make_local_transports(n, fabric)) {
    world.push_back(std::make_unique<TransportCommunicator>(std::move(transport), members, kLocalWorldContext,
                                                            backend, options, /*world=*/true));
  }
  return world;
}

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_local_world(int n, const CommOptions& options) {
  return make_world(n, options, "local", nullptr);
}

void run_local(int n, const std::function<void(Communicator&)>& body, const CommOptions& options) {
  std::shared_ptr<LocalFabric> fabric;
  auto world = make_world(n, options, "local", &fabric);
  std::mutex error_mu;
  std::exception_ptr first_error;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto& comm = world[static_cast<size_t>(r)];
      try {
        body(*comm);
      } catch (...) {
        const std::exception_ptr error = std::current_exception();
        {
          std::lock_guard lock(error_mu);
          if (!first_error) first_error = error;
        }
        // Recorded first, then broken: the failures this causes on other ranks come later.
        fabric->fail(r, describe(error));
      }
      // Drains this rank's queued operations (promptly, if the world is broken) and leaves the
      // fabric, so peers still waiting on this rank fail instead of waiting for their timeout.
      comm.reset();
    });
  }
  for (auto& thread : threads) thread.join();
  if (first_error) std::rethrow_exception(first_error);
}

std::unique_ptr<Communicator> make_single_communicator(const CommOptions& options) {
  return std::move(make_world(1, options, "single", nullptr).front());
}

}  // namespace tern
