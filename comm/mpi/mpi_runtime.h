// MpiRuntime: the process-wide Open MPI state under the mpi backend (MPI_Init_thread on first use,
// MPI_Finalize at exit, the f16/bf16 reduction operators); used only by comm/mpi/*.cpp.
#pragma once

#include <mpi.h>

#include <atomic>
#include <mutex>
#include <string>

#include "comm/communicator.h"
#include "runtime/tensor/dtype.h"

namespace tern {

class MpiRuntime {
 public:
  // Initialises MPI on the first call (call it from the thread that will exit the program: MPI wants
  // MPI_Finalize on the thread that initialised it). Throws CommError when MPI cannot give at least
  // MPI_THREAD_SERIALIZED.
  static MpiRuntime& get();

  // Holds a process-wide lock when the library gives only MPI_THREAD_SERIALIZED (then two
  // communicators' threads must not call MPI at once); an empty lock under MPI_THREAD_MULTIPLE.
  std::unique_lock<std::mutex> serialize();

  // The MPI operator for op over dtype: MPI's own MPI_SUM for f32, i32, i64 and MPI_MAX for the
  // integers; ours (comm/reduce.h's kernel) for f16 and bf16 (f32 accumulation, one rounding per
  // combine) and for f32 max (a NaN wins, as on the other backends). avg reduces with the sum
  // operator; the caller divides. Throws CommError for a dtype reductions do not support.
  MPI_Op reduce_op(ReduceOp op, DType dtype) const;

  // An operation was left pending in MPI (it timed out, so its peers may never come). MPI_Finalize
  // would then wait for them, so the exit path skips it and lets mpirun clean up.
  void mark_abandoned() { abandoned_ = true; }

  int thread_level() const { return thread_level_; }

  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

 private:
  MpiRuntime();
  ~MpiRuntime();

  bool initialised_here_ = false;  // false when someone else called MPI_Init: they finalise
  int thread_level_ = MPI_THREAD_SINGLE;
  std::string init_error_;  // non-empty when MPI is unusable; get() throws it
  std::mutex mu_;
  std::atomic<bool> abandoned_{false};
  MPI_Op f32_max_ = MPI_OP_NULL, f16_sum_ = MPI_OP_NULL, f16_max_ = MPI_OP_NULL, bf16_sum_ = MPI_OP_NULL,
         bf16_max_ = MPI_OP_NULL;
};

// The MPI element type that moves a dtype (f16 and bf16 travel as 16-bit unsigned integers).
MPI_Datatype mpi_datatype(DType dtype);

// Throws CommError "<what>: <MPI's message>" when code is not MPI_SUCCESS.
void check_mpi(int code, const std::string& what);

}  // namespace tern
