// allgather, allgatherv and broadcast checks of tern_collectives_check (see checks.h).
#include <chrono>
#include <cstring>

#include "tests/comm/multiprocess/checks.h"

namespace tern::check {

namespace {

std::string check_name(const std::string& what, DType dtype, int64_t n) {
  return what + "." + std::string(dtype_name(dtype)) + ".n" + std::to_string(n);
}

// Every rank's input (counts[r] elements from rank r), concatenated in rank order.
Tensor concatenated_inputs(DType dtype, uint64_t salt, const std::vector<int64_t>& counts) {
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  Tensor all = Tensor::empty({total}, dtype);
  int64_t at = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    const Tensor part = make_input(dtype, salt, static_cast<int>(r), counts[r]);
    if (part.nbytes())
      std::memcpy(static_cast<char*>(all.raw()) + at * dtype_size(dtype), part.raw(), part.nbytes());
    at += counts[r];
  }
  return all;
}

void check_allgather(Communicator& comm, Report& report, DType dtype, int64_t n, uint64_t salt,
                     const std::string& suffix = "") {
  const Tensor in = make_input(dtype, salt, comm.rank(), n);
  Tensor out = Tensor::full({n * comm.size()}, 7, dtype);
  comm.allgather(in, out);
  report.record(check_name("allgather", dtype, n) + suffix,
                compare_bytes(out, concatenated_inputs(dtype, salt, std::vector<int64_t>(comm.size(), n))));
}

void check_allgatherv(Communicator& comm, Report& report, const std::string& pattern, DType dtype,
                      const std::vector<int64_t>& counts, uint64_t salt) {
  const Tensor in = make_input(dtype, salt, comm.rank(), counts[static_cast<size_t>(comm.rank())]);
  const Tensor want = concatenated_inputs(dtype, salt, counts);
  Tensor out = Tensor::full({want.numel()}, 7, dtype);
  comm.allgatherv(in, out, counts);
  report.record("allgatherv." + pattern + "." + std::string(dtype_name(dtype)) + ".total" +
                    std::to_string(want.numel()),
                compare_bytes(out, want));
}

}  // namespace

void run_movement_checks(Communicator& comm, Report& report, const Sizes& sizes) {
  const int rank = comm.rank(), size = comm.size();
  uint64_t salt = 2000;

  for (DType dtype : {DType::f32, DType::bf16, DType::i64, DType::u8}) {
    for (int64_t n : sizes.counts) check_allgather(comm, report, dtype, n, ++salt);
  }
  {
    const Tensor in = make_input(DType::f32, ++salt, rank, sizes.big);
    Tensor out = Tensor::empty({sizes.big * size});
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    comm.allgather(in, out);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    report.record(
        check_name("allgather", DType::f32, sizes.big) + " (" + std::to_string(in.nbytes() >> 20) +
            " MiB per rank, " + std::to_string(took * 1e3) + " ms)",
        compare_bytes(out, concatenated_inputs(DType::f32, salt, std::vector<int64_t>(size, sizes.big))));
  }

  // Per-rank counts that differ, that are zero on some ranks, on all ranks, or on all but one.
  const int64_t large = sizes.counts.empty() ? 1 : sizes.counts.back();
  std::vector<int64_t> unequal, zeros_between, all_zero(size, 0), one_rank(size, 0);
  for (int r = 0; r < size; ++r) {
    unequal.push_back(7 + 13 * r);
    zeros_between.push_back(r % 2 == 0 ? 0 : large - r);
  }
  one_rank[static_cast<size_t>(size - 1)] = large;
  check_allgatherv(comm, report, "unequal", DType::f32, unequal, ++salt);
  check_allgatherv(comm, report, "unequal", DType::i64, unequal, ++salt);
  check_allgatherv(comm, report, "unequal", DType::f16, unequal, ++salt);
  check_allgatherv(comm, report, "zero_on_even_ranks", DType::f32, zeros_between, ++salt);
  check_allgatherv(comm, report, "zero_everywhere", DType::f32, all_zero, ++salt);
  check_allgatherv(comm, report, "one_rank_only", DType::i32, one_rank, ++salt);

  for (int root = 0; root < size; ++root) {
    for (int64_t n : sizes.counts) {
      const uint64_t s = ++salt;
      // Non-roots start from data of their own, which must be overwritten.
      Tensor t = make_input(DType::f32, rank == root ? s : s + 7919, rank, n);
      comm.broadcast(t, root);
      report.record("broadcast.root" + std::to_string(root) + ".f32.n" + std::to_string(n),
                    compare_bytes(t, make_input(DType::f32, s, root, n)));
    }
    for (DType dtype : {DType::i64, DType::u8, DType::bf16}) {
      const uint64_t s = ++salt;
      Tensor t = make_input(dtype, rank == root ? s : s + 7919, rank, 13);
      comm.broadcast(t, root);
      report.record(check_name("broadcast.root" + std::to_string(root), dtype, 13),
                    compare_bytes(t, make_input(dtype, s, root, 13)));
    }
  }
}

}  // namespace tern::check
