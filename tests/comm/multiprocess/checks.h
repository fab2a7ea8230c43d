// The pieces of tern_collectives_check: deterministic per-(rank, index) inputs that every rank can
// recompute, a report of pass/fail lines, and the groups of checks the program runs on any backend.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace tern::check {

// One line per check: rank 0 prints every check it ran ("ok   name"), every rank prints its own
// failures ("FAIL name [rank r]: what differed"), so a failure is visible whichever rank saw it.
class Report {
 public:
  explicit Report(int rank) : rank_(rank) {}
  // problem is empty when the check passed.
  void record(const std::string& name, const std::string& problem);
  int64_t passed() const { return passed_; }
  int64_t failed() const { return failed_; }

 private:
  int rank_;
  int64_t passed_ = 0, failed_ = 0;
};

// Inputs are a hash of (salt, rank, index), so every rank knows every other rank's data:
//   f32        multiples of 1/4 in [-1000, 1000]: sums over up to 4 ranks are exact in f32
//   f16, bf16  multiples of 1/64 in [-15.6, 15.6]: exact in f16, rounded in bf16 (8 bits), so
//              that sums need rounding in both
//   i32, i64   spread over 2^29 and 2^61: sums over up to 4 ranks fit, high bits are exercised
//   i8, u8     any byte
// input_real/input_int return the value as stored in the dtype (after its rounding).
double input_real(DType dtype, uint64_t salt, int rank, int64_t index);
int64_t input_int(DType dtype, uint64_t salt, int rank, int64_t index);
Tensor make_input(DType dtype, uint64_t salt, int rank, int64_t numel);
bool is_real(DType dtype);

// Empty when got holds elements [offset, offset + got.numel()) of op over the inputs of the given
// ranks (salt as in make_input), within the tolerance reduction_checks.cpp states; else the first
// element that is off.
std::string compare_reduction(const Tensor& got, ReduceOp op, uint64_t salt, const std::vector<int>& ranks,
                              int64_t offset);
std::vector<int> all_ranks(int size);  // 0, 1, ..., size - 1

// Element i as text, for failure messages.
std::string element_str(const Tensor& t, int64_t i);
// Empty when got equals want byte for byte, else where they first differ.
std::string compare_bytes(const Tensor& got, const Tensor& want);

struct Sizes {
  std::vector<int64_t> counts;  // element counts every collective runs over
  int64_t big = 0;              // elements of the >= 16 MB f32 buffer
};

// allreduce (sum/avg/max x f32/f16/bf16/i32/i64) and reduce_scatter, compared with a reduction
// computed here from every rank's inputs.
void run_reduction_checks(Communicator& comm, Report& report, const Sizes& sizes);
// allgather, allgatherv (unequal and zero counts), broadcast from every root.
void run_movement_checks(Communicator& comm, Report& report, const Sizes& sizes);
// send/recv rings with tags, barrier, split and collectives in the groups, queued async operations
// completing in order, invalid arguments rejected, byte counters.
void run_group_checks(Communicator& comm, Report& report, const Sizes& sizes);

}  // namespace tern::check
