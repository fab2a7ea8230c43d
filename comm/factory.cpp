#include "comm/factory.h"

#include <cstdlib>

#include "comm/local/local.h"
#include "comm/tcp/tcp_communicator.h"
#if defined(TERN_HAVE_MPI)
#include "comm/mpi/mpi_communicator.h"
#endif

namespace tern {

namespace {
bool have_env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

constexpr bool kHaveMpi =
#if defined(TERN_HAVE_MPI)
    true;
#else
    false;
#endif
}  // namespace

std::unique_ptr<Communicator> make_communicator(const std::string& name, const CommOptions& given) {
  CommOptions options = given;
  // ternrun --timeout S hands the ranks their communication timeout through the environment.
  if (const char* t = std::getenv("TERN_COMM_TIMEOUT"); t != nullptr && *t != '\0') {
    char* end = nullptr;
    const double seconds = std::strtod(t, &end);
    TERN_CHECK(end != t && *end == '\0' && seconds > 0, "TERN_COMM_TIMEOUT='", t,
               "' is not a positive number of seconds");
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  }
  std::string backend = name;
  if (backend == "auto") {
    // Open MPI sets OMPI_COMM_WORLD_SIZE in every rank it starts; ternrun sets TERN_STORE_ADDR.
    if (have_env("OMPI_COMM_WORLD_SIZE")) {
      TERN_CHECK(kHaveMpi, "started by mpirun, but this build has no mpi backend (Open MPI was not found "
                           "when it was configured); use ternrun or --comm tcp");
      backend = "mpi";
    } else if (have_env("TERN_STORE_ADDR")) {
      backend = "tcp";
    } else {
      backend = "single";
    }
  }
  if (backend == "single") return make_single_communicator(options);
  if (backend == "tcp") return make_tcp_communicator_from_env(options);
  if (backend == "mpi") {
#if defined(TERN_HAVE_MPI)
    return make_mpi_communicator(options);
#else
    throw Error("--comm mpi: this build has no mpi backend (Open MPI was not found when it was configured)");
#endif
  }
  if (backend == "local")
    throw Error("--comm local runs ranks as threads of one process: use run_local (tern-train --comm local "
                "--ranks N)");
  throw Error("unknown communicator backend '" + name + "' (choices: auto, single, tcp" +
              (kHaveMpi ? ", mpi" : "") + ", local)");
}

}  // namespace tern
