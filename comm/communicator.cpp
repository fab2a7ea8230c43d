#include "comm/communicator.h"

namespace tern {

bool& detail::starting_blocking_call() {
  thread_local bool starting = false;
  return starting;
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
  }
  return "?";
}

std::vector<int64_t> even_counts(int64_t n, int size) {
  TERN_CHECK(size > 0 && n >= 0, "even_counts: n = ", n, ", size = ", size);
  std::vector<int64_t> counts(static_cast<size_t>(size), n / size);
  for (int64_t r = 0; r < n % size; ++r) counts[static_cast<size_t>(r)] += 1;
  return counts;
}

}  // namespace tern
