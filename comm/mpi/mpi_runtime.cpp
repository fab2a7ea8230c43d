#include "comm/mpi/mpi_runtime.h"

#include <cstdint>

#include "comm/reduce.h"

namespace tern {

namespace {

// Our reduction operators run the same kernel as the other backends (comm/reduce.h): f16/bf16
// widened to f32 and rounded once per combine (MPI combines pairwise along its algorithm, so an
// n-rank reduction rounds n-1 times), and a max where a NaN wins. MPI gives (in, inout) and wants
// inout = in op inout; the operators are commutative.
template <DType kType, ReduceOp kOp>
void combine(void* in, void* inout, int* len, MPI_Datatype* /*type*/) {
  reduce_into(inout, in, *len, kType, kOp);
}

MPI_Op make_op(MPI_User_function* fn) {
  MPI_Op op = MPI_OP_NULL;
  check_mpi(MPI_Op_create(fn, /*commute=*/1, &op), "MPI_Op_create");
  return op;
}

}  // namespace

// MPI can be initialised once per process and must be finalised once, after every communicator is
// gone, so this function-local static mirrors state that is process-global in MPI itself. It is
// built on the first make_mpi_communicator() (after any static a caller built before, hence
// destroyed after them) and its destructor runs MPI_Finalize exactly once during exit().
MpiRuntime& MpiRuntime::get() {
  static MpiRuntime runtime;
  if (!runtime.init_error_.empty()) throw CommError(runtime.init_error_);
  return runtime;
}

MpiRuntime::MpiRuntime() {
  int already = 0;
  MPI_Initialized(&already);
  if (already) {
    MPI_Query_thread(&thread_level_);
  } else {
    // Errors before MPI_Init are fatal in Open MPI; there is no code to check here.
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &thread_level_);
    initialised_here_ = true;
    // Errors come back as codes, which every call checks: Open MPI reports some errors of
    // non-blocking collectives (a truncated message, when ranks passed different sizes) through
    // MPI_COMM_WORLD's handler, not the communicator's, and the default one aborts the job with no
    // word of which operation failed.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  if (thread_level_ < MPI_THREAD_SERIALIZED) {
    init_error_ = "mpi: the MPI library gives thread level " + std::to_string(thread_level_) +
                  ", the mpi backend needs at least MPI_THREAD_SERIALIZED (it calls MPI from its "
                  "communication thread)";
    return;
  }
  f32_max_ = make_op(&combine<DType::f32, ReduceOp::max>);
  f16_sum_ = make_op(&combine<DType::f16, ReduceOp::sum>);
  f16_max_ = make_op(&combine<DType::f16, ReduceOp::max>);
  bf16_sum_ = make_op(&combine<DType::bf16, ReduceOp::sum>);
  bf16_max_ = make_op(&combine<DType::bf16, ReduceOp::max>);
}

MpiRuntime::~MpiRuntime() {
  if (!initialised_here_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  // After a timeout a request stays posted forever; MPI_Finalize could then block on the peer that
  // never came. Exiting without it makes mpirun end the job, which is what a failed rank wants.
  if (finalized || abandoned_) return;
  for (MPI_Op* op : {&f32_max_, &f16_sum_, &f16_max_, &bf16_sum_, &bf16_max_}) {
    if (*op != MPI_OP_NULL) MPI_Op_free(op);
  }
  MPI_Finalize();
}

std::unique_lock<std::mutex> MpiRuntime::serialize() {
  if (thread_level_ >= MPI_THREAD_MULTIPLE) return {};
  return std::unique_lock(mu_);
}

MPI_Op MpiRuntime::reduce_op(ReduceOp op, DType dtype) const {
  const bool max = op == ReduceOp::max;
  switch (dtype) {
    case DType::f32:
    case DType::i32:
    case DType::i64:
      return max ? MPI_MAX : MPI_SUM;
    case DType::f16:
      return max ? f16_max_ : f16_sum_;
    case DType::bf16:
      return max ? bf16_max_ : bf16_sum_;
    default:
      break;
  }
  throw CommError("mpi: reductions support f32, f16, bf16, i32 and i64, not " +
                  std::string(dtype_name(dtype)));
}

MPI_Datatype mpi_datatype(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f16:
    case DType::bf16:
      return MPI_UINT16_T;
    case DType::i8:
      return MPI_INT8_T;
    case DType::i32:
      return MPI_INT32_T;
    case DType::u8:
      return MPI_UINT8_T;
    case DType::i64:
      return MPI_INT64_T;
  }
  throw CommError("mpi: no MPI datatype for dtype " + std::string(dtype_name(dtype)));
}

void check_mpi(int code, const std::string& what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  int error_class = code;
  MPI_Error_class(code, &error_class);
  const char* hint = error_class == MPI_ERR_TRUNCATE ? " (the ranks' calls disagree in size)" : "";
  throw CommError(what + ": " + std::string(text, static_cast<size_t>(length)) + hint);
}

}  // namespace tern
