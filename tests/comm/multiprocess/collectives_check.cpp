// tern_collectives_check: runs every collective of a Communicator across real processes and checks
// each result against a reduction every rank recomputes from the others' deterministic inputs.
// Launcher-independent: `mpirun -np N tern_collectives_check --comm mpi`, `ternrun -n N ... --comm
// tcp`, or plain (one rank). Rank 0 prints one line per check and, last, `N passed, M failed`
// (summed over ranks); the exit code is 0 only when nothing failed on any rank. Fault injection
// (--die-at-rank, --stall-at-rank) makes one rank die or hang before an allreduce, to check that the
// others fail within the timeout instead of hanging; --mismatch-at-rank gives one rank's allreduce
// another size, which every rank must refuse rather than return garbage.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>

#include "comm/factory.h"
#include "runtime/io/flags.h"
#include "tests/comm/multiprocess/checks.h"

namespace {

using namespace tern;
using Clock = std::chrono::steady_clock;

void declare(Flags& f) {
  f.add_string("comm", "auto", "communicator backend: auto | mpi | tcp | single");
  f.add_int("timeout-ms", 60000, "timeout of every blocking communication operation");
  f.add_int("big-mb", 16, "MiB of the large f32 buffer for allreduce and allgather");
  f.add_int("die-at-rank", -1,
            "fault test: this rank kills itself (SIGKILL) while the others enter an allreduce");
  f.add_int("stall-at-rank", -1,
            "fault test: this rank sleeps past the timeout instead of entering an allreduce (the others must "
            "time out)");
  f.add_int("mismatch-at-rank", -1,
            "fault test: this rank's allreduce has one element more than the others' (every rank must fail, "
            "saying so)");
}

// The world's rank before a communicator exists (for error messages), from whichever launcher's
// environment is present.
std::string launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "TERN_RANK"})
    if (const char* v = std::getenv(name)) return v;
  return "?";
}

// Fault injection: every rank but `victim` enters an allreduce; the victim dies or stalls. Returns
// only if the allreduce completed, which is a failure of the check (the victim never took part).
enum class Fault { die, stall, mismatch };

int run_fault(Communicator& comm, int victim, Fault fault, std::chrono::milliseconds timeout) {
  comm.barrier();  // everyone is up, so the fault happens mid-job, not at start-up
  if (fault == Fault::mismatch) {
    Tensor t = check::make_input(DType::f32, 1, comm.rank(), comm.rank() == victim ? 100001 : 100000);
    comm.allreduce(t, ReduceOp::sum);
    std::printf("rank %d: an allreduce whose rank %d had another size completed, which cannot be right\n",
                comm.rank(), victim);
    return 1;
  }
  const bool die = fault == Fault::die;
  if (comm.rank() == victim) {
    std::printf("rank %d: %s before the allreduce (fault injection)\n", victim, die ? "dying" : "stalling");
    std::fflush(stdout);
    // Give the others time to be inside the allreduce.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (die) std::raise(SIGKILL);
    std::this_thread::sleep_for(timeout + std::chrono::seconds(30));
    return 3;  // the launcher should have ended this rank long before
  }
  const auto start = Clock::now();
  Tensor t = check::make_input(DType::f32, 1, comm.rank(), 1000);
  comm.allreduce(t, ReduceOp::sum);
  std::printf("rank %d: the allreduce completed without rank %d after %.1f s, which cannot be right\n",
              comm.rank(), victim, std::chrono::duration<double>(Clock::now() - start).count());
  return 1;
}

int run(const Flags& f) {
  CommOptions options;
  options.timeout = std::chrono::milliseconds(f.get_int("timeout-ms"));
  if (options.timeout.count() <= 0) throw UsageError("--timeout-ms must be positive");
  const int64_t big_mb = f.get_int("big-mb");
  if (big_mb < 1) throw UsageError("--big-mb must be at least 1");

  const auto start = Clock::now();
  std::unique_ptr<Communicator> comm = make_communicator(f.get_string("comm"), options);
  const int rank = comm->rank(), size = comm->size();
  for (const auto& [flag, fault] : {std::pair{"die-at-rank", Fault::die}, std::pair{"stall-at-rank", Fault::stall},
                                     std::pair{"mismatch-at-rank", Fault::mismatch}}) {
    const int64_t victim = f.get_int(flag);
    if (victim == -1) continue;
    if (victim < 0 || victim >= size)
      throw UsageError(std::string("--") + flag + " " + std::to_string(victim) + " is not a rank of " +
                       std::to_string(size));
    return run_fault(*comm, static_cast<int>(victim), fault, options.timeout);
  }

  // Counts not divisible by 2, 3 or 4 ranks, plus the >= big_mb MiB buffer (one more element than
  // big_mb MiB, so it is odd too).
  check::Sizes sizes{{0, 1, 7, 13, 1000003}, big_mb * (int64_t{1} << 20) / 4 + 1};
  check::Report report(rank);
  if (rank == 0)
    std::printf("collectives check: backend %s, %d rank(s), timeout %lld ms\n", comm->backend().c_str(), size,
                static_cast<long long>(options.timeout.count()));
  check::run_reduction_checks(*comm, report, sizes);
  check::run_movement_checks(*comm, report, sizes);
  check::run_group_checks(*comm, report, sizes);

  Tensor totals = Tensor::empty({2}, DType::i64);
  totals.data<int64_t>()[0] = report.passed();
  totals.data<int64_t>()[1] = report.failed();
  comm->allreduce(totals, ReduceOp::sum);
  const int64_t passed = totals.data<int64_t>()[0], failed = totals.data<int64_t>()[1];
  if (rank == 0) {
    std::printf("time: %.2f s on %d rank(s); counts are rank-checks (each check counted on each rank)\n",
                std::chrono::duration<double>(Clock::now() - start).count(), size);
    std::printf("%lld passed, %lld failed\n", static_cast<long long>(passed), static_cast<long long>(failed));
  }
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  tern::Flags flags("tern_collectives_check", "Check every collective of a communicator across processes.");
  declare(flags);
  try {
    if (!flags.parse(argc, argv)) {
      std::fputs(flags.usage().c_str(), stdout);
      return 0;
    }
    return run(flags);
  } catch (const tern::UsageError& e) {
    std::fprintf(stderr, "tern_collectives_check: %s\n%s", e.what(), flags.short_usage().c_str());
    return 2;
  } catch (const std::exception& e) {
    // The message of a CommError names the rank already; the launcher's rank covers errors before
    // the communicator existed.
    std::fflush(stdout);
    std::fprintf(stderr, "tern_collectives_check (rank %s): error: %s\n", launcher_rank().c_str(), e.what());
    return 1;
  }
}
