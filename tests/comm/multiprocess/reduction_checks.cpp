// allreduce and reduce_scatter checks of tern_collectives_check (see checks.h).
#include <chrono>
#include <cmath>
#include <limits>

#include "runtime/tensor/dtype.h"
#include "tests/comm/multiprocess/checks.h"

namespace tern::check {

namespace {

constexpr DType kReducible[] = {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64};
constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max};

std::string check_name(const char* collective, ReduceOp op, DType dtype, int64_t n) {
  return std::string(collective) + "." + reduce_op_name(op) + "." + std::string(dtype_name(dtype)) + ".n" +
         std::to_string(n);
}

double read_real(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::f16:
      return f16_to_f32(t.data<uint16_t>()[i]);
    case DType::bf16:
      return bf16_to_f32(t.data<uint16_t>()[i]);
    default:
      return t.data<float>()[i];
  }
}

int64_t read_int(const Tensor& t, int64_t i) {
  return t.dtype() == DType::i32 ? t.data<int32_t>()[i] : t.data<int64_t>()[i];
}

}  // namespace

std::vector<int> all_ranks(int size) {
  std::vector<int> ranks(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) ranks[static_cast<size_t>(r)] = r;
  return ranks;
}

// The reduction is computed here in double (floats) or int64 (integers).
//  - f32: inputs are chosen so that sums are exact: sum and max must match exactly, avg within one
//    unit in the last place (a backend may divide or multiply by 1/n).
//  - f16/bf16: each combine of partial results rounds once (n-1 roundings; avg one more), each off
//    by at most the unit roundoff u (2^-11 for f16, 2^-8 for bf16) times a partial sum bounded by
//    the sum of magnitudes S. Tolerance: sum (n+1)*u*S, avg (n+1)*u*S/n, max exact.
//  - integers: exact; avg is the sum divided by n, truncated toward zero.
std::string compare_reduction(const Tensor& got, ReduceOp op, uint64_t salt, const std::vector<int>& ranks,
                              int64_t offset) {
  const DType dtype = got.dtype();
  const int size = static_cast<int>(ranks.size());
  const double u = dtype == DType::f16    ? std::ldexp(1.0, -11)
                   : dtype == DType::bf16 ? std::ldexp(1.0, -8)
                                          : 0.0;
  for (int64_t j = 0; j < got.numel(); ++j) {
    const int64_t i = offset + j;
    if (is_real(dtype)) {
      double sum = 0, magnitude = 0, max = -std::numeric_limits<double>::infinity();
      for (int r : ranks) {
        const double v = input_real(dtype, salt, r, i);
        sum += v;
        magnitude += std::fabs(v);
        max = std::max(max, v);
      }
      double want = max, tolerance = 0;
      if (op == ReduceOp::sum) {
        want = sum;
        tolerance = (size + 1) * u * magnitude;
      } else if (op == ReduceOp::avg) {
        want = dtype == DType::f32 ? static_cast<float>(sum) / static_cast<float>(size) : sum / size;
        tolerance =
            dtype == DType::f32 ? std::fabs(want) * std::ldexp(1.0, -23) : (size + 1) * u * magnitude / size;
      }
      const double value = read_real(got, j);
      if (!(std::fabs(value - want) <= tolerance))
        return "element " + std::to_string(i) + ": got " + std::to_string(value) + ", expected " +
               std::to_string(want) + " (tolerance " + std::to_string(tolerance) + ")";
    } else {
      int64_t sum = 0, max = std::numeric_limits<int64_t>::min();
      for (int r : ranks) {
        const int64_t v = input_int(dtype, salt, r, i);
        sum += v;
        max = std::max(max, v);
      }
      const int64_t want = op == ReduceOp::sum ? sum : op == ReduceOp::avg ? sum / size : max;
      const int64_t value = read_int(got, j);
      if (value != want)
        return "element " + std::to_string(i) + ": got " + std::to_string(value) + ", expected " +
               std::to_string(want);
    }
  }
  return "";
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

void run_reduction_checks(Communicator& comm, Report& report, const Sizes& sizes) {
  const int rank = comm.rank(), size = comm.size();
  const std::vector<int> everyone = all_ranks(size);
  uint64_t salt = 1000;

  for (DType dtype : kReducible) {
    for (ReduceOp op : kOps) {
      for (int64_t n : sizes.counts) {
        Tensor t = make_input(dtype, ++salt, rank, n);
        comm.allreduce(t, op);
        report.record(check_name("allreduce", op, dtype, n), compare_reduction(t, op, salt, everyone, 0));
      }
    }
  }

  // The big buffer: one timed allreduce, its time on rank 0 in the name's line.
  {
    Tensor t = make_input(DType::f32, ++salt, rank, sizes.big);
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    comm.allreduce(t, ReduceOp::sum);
    const double took = seconds_since(start);
    const std::string problem = compare_reduction(t, ReduceOp::sum, salt, everyone, 0);
    report.record(check_name("allreduce", ReduceOp::sum, DType::f32, sizes.big) + " (" +
                      std::to_string(t.nbytes() >> 20) + " MiB, " + std::to_string(took * 1e3) + " ms)",
                  problem);
  }

  for (DType dtype : kReducible) {
    for (ReduceOp op : kOps) {
      if (op == ReduceOp::avg && dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::i64) continue;
      for (int64_t n : sizes.counts) {
        const std::vector<int64_t> parts = even_counts(n, size);
        int64_t offset = 0;
        for (int r = 0; r < rank; ++r) offset += parts[static_cast<size_t>(r)];
        Tensor in = make_input(dtype, ++salt, rank, n);
        Tensor out = Tensor::full({parts[static_cast<size_t>(rank)]}, 3, dtype);
        comm.reduce_scatter(in, out, op);
        std::string problem = compare_reduction(out, op, salt, everyone, offset);
        // reduce_scatter must leave its input alone.
        if (problem.empty()) {
          const std::string changed = compare_bytes(in, make_input(dtype, salt, rank, n));
          if (!changed.empty()) problem = "in was modified: " + changed;
        }
        report.record(check_name("reduce_scatter", op, dtype, n), problem);
      }
    }
  }
}

}  // namespace tern::check
