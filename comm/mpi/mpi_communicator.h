// The mpi backend: Open MPI's collectives behind the Communicator interface, for jobs started by
// `mpirun -np N` on one or many hosts. Built when CMake finds MPI (TERN_HAVE_MPI).
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace tern {

// True when this process was started by mpirun (Open MPI's environment is present).
bool launched_by_mpirun();
// MPI_COMM_WORLD; initialises MPI on first use (MPI_Init_thread) and finalises at exit.
std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options = {});

}  // namespace tern
