// make_communicator: picks a backend by name (`--comm NAME`) or from how the program was started:
// under mpirun -> mpi, under ternrun -> tcp, otherwise a single rank.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace tern {

// name: auto | single | mpi | tcp. ("local" runs ranks as threads and needs run_local.)
// An unknown name, or a backend this build lacks, is an Error that says which are available.
// TERN_COMM_TIMEOUT (seconds, set by ternrun --timeout) overrides options.timeout.
std::unique_ptr<Communicator> make_communicator(const std::string& name, const CommOptions& options = {});

}  // namespace tern
