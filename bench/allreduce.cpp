// Collective bandwidth in the nccl-tests convention: for each message size, the time of one
// allreduce (or allgather), algbw = size / time, busbw = algbw * 2(n-1)/n (allgather: (n-1)/n),
// and a correctness column. Runs inside a job of any backend; rank 0 prints the table.
// bench/allreduce.py runs it on every backend and prints them side by side.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/bare_exchange.h"
#include "comm/factory.h"
#include "comm/local/local.h"
#include "runtime/io/flags.h"
#include "runtime/io/jsonl.h"
#if defined(TERN_HAVE_MPI)
#include <mpi.h>
#endif

namespace {

using namespace tern;
using Clock = std::chrono::steady_clock;

// Values whose sums over ranks are exact in f32, so correctness is an equality test.
float value(int rank, int64_t i) { return static_cast<float>(rank + 1) + static_cast<float>(i % 7); }

struct Row {
  int64_t bytes;
  double us;
  int64_t wrong;
};

// What a row needs from a backend: its shape, the two collectives, and max/sum of a scalar.
struct Collectives {
  int rank, size;
  std::function<void(Tensor&)> allreduce_sum;
  std::function<void(const Tensor&, Tensor&)> allgather;
  std::function<double(double, bool /*max, else sum*/)> reduce_scalar;
};

Collectives through(Communicator& comm) {
  return {comm.rank(), comm.size(), [&comm](Tensor& t) { comm.allreduce(t, ReduceOp::sum); },
          [&comm](const Tensor& in, Tensor& out) { comm.allgather(in, out); },
          [&comm](double v, bool max) {
            Tensor t = Tensor::from({1}, {static_cast<float>(v)});
            comm.allreduce(t, max ? ReduceOp::max : ReduceOp::sum);
            return static_cast<double>(t.f32()[0]);
          }};
}

// --comm bare: a 2-rank allgather as a bare exchange over one loopback TCP connection (the own
// block copied into place first, as the collectives do); the scalars through the tcp backend.
Collectives bare(Communicator& comm, BareExchange& exchange) {
  Collectives c = through(comm);
  c.allgather = [&comm, &exchange](const Tensor& in, Tensor& out) {
    const size_t bytes = static_cast<size_t>(in.numel()) * sizeof(float);
    auto* slots = static_cast<char*>(out.raw());
    std::memmove(slots + static_cast<size_t>(comm.rank()) * bytes, in.raw(), bytes);
    exchange.exchange(in.raw(), slots + static_cast<size_t>(1 - comm.rank()) * bytes, bytes);
  };
  return c;
}

#if defined(TERN_HAVE_MPI)
// Open MPI called directly with its blocking collectives: the peer Tern's tcp backend is
// measured against (Tern's own mpi backend adds a comm thread and nonblocking calls).
Collectives raw_mpi() {
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return {rank, size,
          [](Tensor& t) {
            MPI_Allreduce(MPI_IN_PLACE, t.raw(), static_cast<int>(t.numel()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
          },
          [](const Tensor& in, Tensor& out) {
            MPI_Allgather(in.raw(), static_cast<int>(in.numel()), MPI_FLOAT, out.raw(), static_cast<int>(in.numel()),
                          MPI_FLOAT, MPI_COMM_WORLD);
          },
          [](double v, bool max) {
            double r = 0;
            MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, max ? MPI_MAX : MPI_SUM, MPI_COMM_WORLD);
            return r;
          }};
}
#endif

Row measure(const Collectives& comm, const std::string& op, int64_t bytes, int iters, int warmup) {
  const int n = comm.size, r = comm.rank;
  const int64_t count = std::max<int64_t>(1, bytes / 4);
  const bool gather = op == "allgather";
  const int64_t in_count = gather ? std::max<int64_t>(1, count / n) : count;
  Tensor src = Tensor::empty({in_count}), buf = Tensor::empty({in_count});
  Tensor out = gather ? Tensor::empty({in_count * n}) : Tensor();
  for (int64_t i = 0; i < in_count; ++i) src.f32()[i] = value(r, i);
  double seconds = 0;
  for (int it = 0; it < warmup + iters; ++it) {
    buf.copy_from(src);  // allreduce is in place: restore the input, outside the timed region
    const auto t0 = Clock::now();
    if (gather) {
      comm.allgather(buf, out);
    } else {
      comm.allreduce_sum(buf);
    }
    if (it >= warmup) seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  int64_t wrong = 0;
  if (gather) {
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < in_count; ++i) wrong += out.f32()[q * in_count + i] != value(q, i);
  } else {
    for (int64_t i = 0; i < in_count; ++i) {
      float expect = 0;
      for (int q = 0; q < n; ++q) expect += value(q, i);
      wrong += buf.f32()[i] != expect;
    }
  }
  // The slowest rank's time is the collective's time; wrong counts add up.
  const double slowest = comm.reduce_scalar(seconds, true);
  const double wrong_total = comm.reduce_scalar(static_cast<double>(wrong), false);
  const int64_t bytes_moved = gather ? in_count * n * 4 : in_count * 4;
  return {bytes_moved, slowest / iters * 1e6, static_cast<int64_t>(wrong_total)};
}

int64_t parse_size(const std::string& s) {
  const char unit = s.empty() ? '\0' : s.back();
  const int64_t mult = unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : unit == 'G' ? 1024LL * 1024 * 1024 : 1;
  const std::string digits = mult == 1 ? s : s.substr(0, s.size() - 1);
  try {
    return std::stoll(digits) * mult;
  } catch (...) {
    throw UsageError("bad size '" + s + "' (e.g. 4K, 64M)");
  }
}

void run(const Collectives& comm, const Flags& f, const std::string& label) {
  const std::string op = f.get_string("op");
  const int64_t lo = parse_size(f.get_string("min")), hi = parse_size(f.get_string("max"));
  if (lo < 1 || hi < lo) throw UsageError("--min must be at least 1 byte and --max at least --min");
  JsonlWriter json;
  if (comm.rank == 0 && !f.get_string("json").empty()) json.open(f.get_string("json"));
  const int n = comm.size;
  const double factor = op == "allgather" ? (n - 1.0) / n : 2.0 * (n - 1.0) / n;
  if (comm.rank == 0) {
    std::printf("# %s %s, %d ranks, f32\n", label.c_str(), op.c_str(), n);
    std::printf("%12s %12s %10s %10s %10s %6s\n", "size(B)", "count", "time(us)", "algbw", "busbw", "#wrong");
  }
  for (int64_t bytes = lo; bytes <= hi; bytes *= f.get_int("step-factor")) {
    // Fewer repetitions for big messages: each costs milliseconds.
    const int iters = static_cast<int>(std::clamp<int64_t>(f.get_int("iters") * (1 << 20) / std::max<int64_t>(bytes, 1), 5,
                                                           f.get_int("iters")));
    const Row row = measure(comm, op, bytes, iters, std::max(2, iters / 10));
    const double algbw = static_cast<double>(row.bytes) / (row.us * 1e-6) / 1e9;
    if (comm.rank == 0) {
      std::printf("%12lld %12lld %10.1f %10.3f %10.3f %6lld\n", static_cast<long long>(row.bytes),
                  static_cast<long long>(row.bytes / 4), row.us, algbw, algbw * factor,
                  static_cast<long long>(row.wrong));
      std::fflush(stdout);
      json.write(JsonObject()
                     .add("backend", label)
                     .add("op", op)
                     .add("ranks", n)
                     .add("bytes", row.bytes)
                     .add("time_us", row.us)
                     .add("algbw_gbs", algbw)
                     .add("busbw_gbs", algbw * factor)
                     .add("wrong", row.wrong));
    }
    // Every rank knows the total (measure reduces it), so every rank stops alike.
    if (row.wrong != 0 && f.get_int("check") != 0)
      throw Error(label + " " + op + ": " + std::to_string(row.wrong) + " wrong elements at " +
                  std::to_string(row.bytes) + " bytes");
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags f("tern_allreduce_bench", "nccl-tests-style bandwidth table for allreduce/allgather on any backend.");
  f.add_string(
      "comm", "auto",
      "backend: auto|tcp|mpi|single|local (--ranks threads in this process)|openmpi (MPI_Allreduce/"
      "MPI_Allgather called directly, under mpirun: the peer)|bare (under ternrun -n 2 with --op allgather: "
      "a bare exchange over one loopback TCP connection, no frames, no collective)");
  f.add_int("ranks", 2, "threads for --comm local");
  f.add_string("op", "allreduce", "allreduce|allgather");
  f.add_string("min", "4K", "smallest message (bytes; K/M suffixes)");
  f.add_string("max", "64M", "largest message");
  f.add_int("step-factor", 4, "size multiplier between rows");
  f.add_int("iters", 200, "timed repetitions at small sizes (fewer for large ones)");
  f.add_string("label", "", "backend label in the output (default: the backend's name)");
  f.add_string("json", "", "rank 0 writes one JSON line per row here");
  f.add_int("check", 0, "1 = exit non-zero at the first row with a wrong element (for tests)");
  f.add_int("shm-collectives-max-bytes", -1,
            "tcp on shared memory: allreduces/allgathers up to this size use the world segment (0: never; -1: default)");
  f.add_int("halving-doubling-max-bytes", -1,
            "local/tcp: power-of-two worlds of 4+ ranks use halving-doubling up to this size (0: never; -1: the host's rule)");
  f.add_int("small-message-bytes", 0, "local/tcp: allreduce switches from recursive doubling to ring here (0: default)");
  f.add_int("small-gather-bytes", -1,
            "local/tcp: power-of-two worlds of 4+ ranks: allgather outputs below this use recursive doubling (0: never; -1: default)");
  f.add_int("ring-chunk-bytes", 0, "local/tcp: ring pipelining chunk (0: default)");
  f.add_int("ring-chunk-max-bytes", -1,
            "local/tcp: the ring's chunks grow with its blocks (a quarter of one) up to this (0: fixed; -1: the "
            "tcp backend's rule, fixed on local)");
  f.add_int("poll-us", CommOptions{}.poll.count(),
            "tcp: microseconds a waiting recv polls the socket or shared-memory ring before sleeping (0: never)");
  f.add_int("poll-max-bytes", static_cast<int64_t>(CommOptions{}.poll_max_bytes),
            "tcp: recvs of at most this many bytes poll (with --poll-every-size 0)");
  f.add_int("poll-every-size", 1,
            "tcp: 1 = recvs of every size poll (shared memory and sockets); 0 = only up to --poll-max-bytes");
  f.add_int("socket-buffer-bytes", static_cast<int64_t>(CommOptions{}.socket_buffer_bytes),
            "tcp on sockets: SO_SNDBUF/SO_RCVBUF of each connection (0: the kernel's default and autotuning)");
  f.add_int(
      "read-after-send-bytes", static_cast<int64_t>(CommOptions{}.read_after_send_bytes),
      "tcp on sockets, a core per rank: a send of at least this many bytes then reads the whole messages "
      "already in (0: never)");
  return run_program(f, argc, argv, [&] {
    const std::string op = f.get_string("op");
    if (op != "allreduce" && op != "allgather") throw UsageError("--op must be allreduce or allgather");
    if (f.get_int("step-factor") < 2) throw UsageError("--step-factor must be >= 2");
    CommOptions options;
    options.small_message_bytes = static_cast<size_t>(std::max<int64_t>(0, f.get_int("small-message-bytes")));
    options.halving_doubling_max_bytes = f.get_int("halving-doubling-max-bytes");
    options.small_gather_bytes = f.get_int("small-gather-bytes");
    if (f.get_int("shm-collectives-max-bytes") >= 0)
      options.shm_collectives_max_bytes = static_cast<size_t>(f.get_int("shm-collectives-max-bytes"));
    options.ring_chunk_bytes = static_cast<size_t>(std::max<int64_t>(0, f.get_int("ring-chunk-bytes")));
    options.ring_chunk_max_bytes = f.get_int("ring-chunk-max-bytes");
    options.poll = std::chrono::microseconds(std::max<int64_t>(0, f.get_int("poll-us")));
    options.poll_max_bytes = static_cast<size_t>(std::max<int64_t>(0, f.get_int("poll-max-bytes")));
    options.poll_every_size = f.get_int("poll-every-size") != 0;
    options.socket_buffer_bytes = static_cast<size_t>(std::max<int64_t>(0, f.get_int("socket-buffer-bytes")));
    options.read_after_send_bytes =
        static_cast<size_t>(std::max<int64_t>(0, f.get_int("read-after-send-bytes")));
    if (f.get_string("comm") == "local") {
      run_local(
          static_cast<int>(f.get_int("ranks")),
          [&](Communicator& c) { run(through(c), f, f.get_string("label").empty() ? "local" : f.get_string("label")); },
          options);
    } else if (f.get_string("comm") == "openmpi") {
#if defined(TERN_HAVE_MPI)
      MPI_Init(&argc, &argv);
      run(raw_mpi(), f, f.get_string("label").empty() ? "openmpi" : f.get_string("label"));
      MPI_Finalize();
#else
      throw Error("--comm openmpi: this build has no MPI");
#endif
    } else if (f.get_string("comm") == "bare") {
      if (op != "allgather") throw UsageError("--comm bare measures allgather only (--op allgather)");
      auto comm = make_communicator("tcp", options);
      if (comm->size() != 2) throw UsageError("--comm bare needs 2 ranks (ternrun -n 2)");
      BareExchange exchange(*comm, options.socket_buffer_bytes);
      run(bare(*comm, exchange), f, f.get_string("label").empty() ? "bare" : f.get_string("label"));
    } else {
      auto comm = make_communicator(f.get_string("comm"), options);
      run(through(*comm), f, f.get_string("label").empty() ? comm->backend() : f.get_string("label"));
    }
    return 0;
  });
}
