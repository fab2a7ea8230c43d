#include "comm/mpi/mpi_communicator.h"

#include <mpi.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <thread>
#include <vector>

#include "comm/comm_thread.h"
#include "comm/mpi/mpi_runtime.h"
#include "comm/reduce.h"

namespace tern {

bool launched_by_mpirun() { return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr; }

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Open MPI makes progress only inside MPI calls (it has no progress thread), so the wait loop
// tests often while an operation is young, and backs off to short sleeps once it has waited a
// while, so that oversubscribed ranks (mpirun --oversubscribe) leave the cores to their peers.
void pause_between_tests(Clock::duration waited) {
  if (waited < 50us) return;
  if (waited < 2ms) {
    std::this_thread::yield();
    return;
  }
  std::this_thread::sleep_for(50us);
}

// Tests request until it completes or the deadline passes. Returns false on timeout (the request
// is then still posted); throws CommError when MPI reports the operation failed.
bool test_until(MpiRuntime& runtime, MPI_Request* request, Clock::time_point deadline, MPI_Status* status,
                const std::string& what) {
  const auto start = Clock::now();
  for (;;) {
    int done = 0;
    {
      auto lock = runtime.serialize();
      check_mpi(MPI_Test(request, &done, status), what);
    }
    if (done) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    pause_between_tests(now - start);
  }
}

bool overlaps(const Tensor& a, const Tensor& b) {
  const auto* pa = static_cast<const char*>(a.raw());
  const auto* pb = static_cast<const char*>(b.raw());
  return a.nbytes() > 0 && b.nbytes() > 0 && pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// bytes_sent / bytes_received count the payload this rank would exchange if every rank talked to
// every other directly (MPI hides its algorithm, so this is the data volume, not wire traffic):
//   allreduce       sent = received = reduce_scatter + allgather of the even split (~2(n-1)/n of t)
//   reduce_scatter  sent: the parts of in that other ranks own; received: (n-1) x this rank's part
//   allgather(v)    sent: (n-1) x this rank's in; received: everyone else's parts
//   broadcast       the root sends (n-1) x t, every other rank receives t
//   send / recv     the tensor's bytes; barrier and split count nothing
struct Traffic {
  uint64_t sent = 0, received = 0;
};

Traffic allreduce_traffic(const Tensor& t, int rank, int size) {
  const uint64_t own =
      static_cast<uint64_t>(even_counts(t.numel(), size)[static_cast<size_t>(rank)]) * dtype_size(t.dtype());
  const uint64_t moved = (t.nbytes() - own) + static_cast<uint64_t>(size - 1) * own;
  return {moved, moved};
}

class MpiCommunicator final : public Communicator {
 public:
  // Adopts comm (freed by the destructor); ranks and errors come from it.
  MpiCommunicator(MPI_Comm comm, CommOptions options);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  WorkPtr allreduce_async(Tensor t, ReduceOp op) override;
  WorkPtr reduce_scatter_async(Tensor in, Tensor out, ReduceOp op) override;
  WorkPtr allgather_async(Tensor in, Tensor out) override;
  WorkPtr allgatherv_async(Tensor in, Tensor out, std::vector<int64_t> counts) override;
  WorkPtr broadcast_async(Tensor t, int root) override;
  WorkPtr send_async(Tensor t, int dst, int tag) override;
  WorkPtr recv_async(Tensor t, int src, int tag) override;
  WorkPtr barrier_async() override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  uint64_t bytes_sent() const override { return sent_; }
  uint64_t bytes_received() const override { return received_; }

 private:
  struct PendingSend {
    MPI_Request request;
    Tensor copy;
    int dst, tag;
  };

  // Caller-thread validation; each throws CommError naming the operation.
  std::string where() const { return "mpi rank " + std::to_string(rank_) + " of " + std::to_string(size_); }
  void require_cpu(const Tensor& t, const char* op, const char* name) const;
  void require_reducible(const Tensor& t, const char* op) const;
  int mpi_count(int64_t n, const char* op) const;
  void require_rank(int peer, const char* op, const char* role) const;
  void require_tag(int tag, const char* op) const;

  // Communication-thread steps.
  void begin(const char* op);
  // Waits for request within the timeout. On timeout the communicator is marked broken and the
  // buffers are kept alive (MPI may still write them); then CommError "<op> timed out after T ms
  // (<what>); <hint>".
  void await(MPI_Request* request, MPI_Status* status, const char* op, const std::string& what,
             const std::string& hint, std::vector<Tensor> buffers);
  // Starts a nonblocking MPI call (under the runtime's lock) and throws CommError if MPI refuses it.
  template <typename Call>
  void post(const char* name, Call call) {
    auto lock = runtime_.serialize();
    check_mpi(call(), where() + ": " + name);
  }
  void reap_sends();
  void count(Traffic t) {
    sent_ += t.sent;
    received_ += t.received;
  }
  void shut_down() noexcept;

  MpiRuntime& runtime_;
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1, tag_ub_ = 32767;
  CommOptions options_;
  std::atomic<uint64_t> sent_{0}, received_{0};
  // Touched only on the communication thread.
  std::deque<PendingSend> pending_sends_;
  std::vector<Tensor> abandoned_;  // buffers of timed-out operations, which MPI may still write
  std::string broken_;             // why this communicator can no longer be used
  CommThread thread_;              // last member: joined first, while the state above is alive
};

const char* kCollectiveHint =
    "not every rank reached it: a rank died, is stuck elsewhere, or queued collectives in a different "
    "order or of different sizes (MPI does not say which rank)";

MpiCommunicator::MpiCommunicator(MPI_Comm comm, CommOptions options)
    : runtime_(MpiRuntime::get()), comm_(comm), options_(options) {
  auto lock = runtime_.serialize();
  check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "mpi: MPI_Comm_set_errhandler");
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  int* tag_ub = nullptr;
  int found = 0;
  MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &found);
  if (found && tag_ub) tag_ub_ = *tag_ub;
}

MpiCommunicator::~MpiCommunicator() {
  // Runs after every operation queued before it, on the thread that owns the MPI state.
  try {
    thread_.enqueue([this] { shut_down(); })->wait();
  } catch (...) {
    // shut_down does not throw; enqueue can only fail to allocate, and then there is nothing to do.
  }
}

void MpiCommunicator::shut_down() noexcept {
  const auto deadline = Clock::now() + options_.timeout;
  try {
    while (broken_.empty() && !pending_sends_.empty()) {
      if (Clock::now() >= deadline) {
        const PendingSend& s = pending_sends_.front();
        broken_ = where() + ": destroyed while " + std::to_string(pending_sends_.size()) +
                  " send(s) were never received (first: to rank " + std::to_string(s.dst) + ", tag " +
                  std::to_string(s.tag) + ")";
        std::fprintf(stderr, "%s\n", broken_.c_str());
        break;
      }
      reap_sends();
      if (!pending_sends_.empty()) std::this_thread::sleep_for(100us);
    }
  } catch (const std::exception& e) {
    broken_ = e.what();
  }
  if (!broken_.empty()) {
    // Requests are still posted into these buffers: keep them alive for the rest of the process
    // (a deliberate leak) and let exit skip MPI_Finalize.
    runtime_.mark_abandoned();
    try {
      auto* kept = new std::vector<Tensor>(std::move(abandoned_));
      for (auto& s : pending_sends_) kept->push_back(s.copy);
    } catch (...) {
      // Out of memory while leaking on purpose: the buffers go with this object; the process is
      // failing anyway.
    }
    return;
  }
  auto lock = runtime_.serialize();
  MPI_Comm_free(&comm_);
}

void MpiCommunicator::require_cpu(const Tensor& t, const char* op, const char* name) const {
  if (!t.defined()) throw CommError(where() + ": " + op + ": " + name + " is an undefined tensor");
  if (t.device() != Device::cpu)
    throw CommError(where() + ": " + op + ": " + name + " " + t.str() + " is not on the CPU");
}

void MpiCommunicator::require_reducible(const Tensor& t, const char* op) const {
  switch (t.dtype()) {
    case DType::f32:
    case DType::f16:
    case DType::bf16:
    case DType::i32:
    case DType::i64:
      return;
    default:
      throw CommError(where() + ": " + op + " of " + t.str() +
                      ": reductions support f32, f16, bf16, i32, i64");
  }
}

int MpiCommunicator::mpi_count(int64_t n, const char* op) const {
  if (n > INT_MAX)
    throw CommError(where() + ": " + op + ": " + std::to_string(n) +
                    " elements exceed MPI's count limit of " + std::to_string(INT_MAX) +
                    "; split the tensor");
  return static_cast<int>(n);
}

void MpiCommunicator::require_rank(int peer, const char* op, const char* role) const {
  if (peer < 0 || peer >= size_)
    throw CommError(where() + ": " + op + ": " + role + " rank " + std::to_string(peer) + " is not in [0, " +
                    std::to_string(size_) + ")");
}

void MpiCommunicator::require_tag(int tag, const char* op) const {
  if (tag < 0 || tag > tag_ub_)
    throw CommError(where() + ": " + op + ": tag " + std::to_string(tag) + " is not in [0, " +
                    std::to_string(tag_ub_) + "] (MPI_TAG_UB)");
}

void MpiCommunicator::begin(const char* op) {
  if (!broken_.empty())
    throw CommError(where() + ": " + op + " refused: the communicator failed earlier: " + broken_);
  reap_sends();
}

void MpiCommunicator::reap_sends() {
  auto lock = runtime_.serialize();
  for (auto it = pending_sends_.begin(); it != pending_sends_.end();) {
    int done = 0;
    check_mpi(
        MPI_Test(&it->request, &done, MPI_STATUS_IGNORE),
        where() + ": send to rank " + std::to_string(it->dst) + " (tag " + std::to_string(it->tag) + ")");
    it = done ? pending_sends_.erase(it) : it + 1;
  }
}

void MpiCommunicator::await(MPI_Request* request, MPI_Status* status, const char* op, const std::string& what,
                            const std::string& hint, std::vector<Tensor> buffers) {
  if (test_until(runtime_, request, Clock::now() + options_.timeout, status,
                 where() + ": " + op + " (" + what + ")"))
    return;
  broken_ = where() + ": " + op + " timed out after " + std::to_string(options_.timeout.count()) + " ms (" +
            what + "); " + hint;
  runtime_.mark_abandoned();
  for (Tensor& b : buffers) abandoned_.push_back(std::move(b));
  throw CommError(broken_);
}

WorkPtr MpiCommunicator::allreduce_async(Tensor t, ReduceOp op) {
  require_cpu(t, "allreduce", "t");
  require_reducible(t, "allreduce");
  const int n = mpi_count(t.numel(), "allreduce");
  const MPI_Op mpi_op = runtime_.reduce_op(op, t.dtype());
  return thread_.enqueue([this, t, op, n, mpi_op] {
    begin("allreduce");
    MPI_Request request;
    post("MPI_Iallreduce", [&] {
      return MPI_Iallreduce(MPI_IN_PLACE, t.raw(), n, mpi_datatype(t.dtype()), mpi_op, comm_, &request);
    });
    await(&request, MPI_STATUS_IGNORE, "allreduce", std::string(reduce_op_name(op)) + " of " + t.str(),
          kCollectiveHint, {t});
    if (op == ReduceOp::avg) finish_average(t.raw(), t.numel(), t.dtype(), size_);
    count(allreduce_traffic(t, rank_, size_));
  });
}

WorkPtr MpiCommunicator::reduce_scatter_async(Tensor in, Tensor out, ReduceOp op) {
  require_cpu(in, "reduce_scatter", "in");
  require_cpu(out, "reduce_scatter", "out");
  require_reducible(in, "reduce_scatter");
  const std::vector<int64_t> parts = even_counts(in.numel(), size_);
  if (out.dtype() != in.dtype() || out.numel() != parts[static_cast<size_t>(rank_)])
    throw CommError(where() + ": reduce_scatter of " + in.str() + ": out is " + out.str() + ", expected " +
                    std::to_string(parts[static_cast<size_t>(rank_)]) + " elements of " +
                    std::string(dtype_name(in.dtype())));
  if (overlaps(in, out)) throw CommError(where() + ": reduce_scatter: in and out overlap");
  mpi_count(in.numel(), "reduce_scatter");
  std::vector<int> recv_counts(parts.begin(), parts.end());
  const MPI_Op mpi_op = runtime_.reduce_op(op, in.dtype());
  return thread_.enqueue([this, in, out, op, mpi_op, recv_counts] {
    begin("reduce_scatter");
    MPI_Request request;
    post("MPI_Ireduce_scatter", [&] {
      return MPI_Ireduce_scatter(in.raw(), out.raw(), recv_counts.data(), mpi_datatype(in.dtype()), mpi_op,
                                 comm_, &request);
    });
    await(&request, MPI_STATUS_IGNORE, "reduce_scatter", std::string(reduce_op_name(op)) + " of " + in.str(),
          kCollectiveHint, {in, out});
    if (op == ReduceOp::avg) finish_average(out.raw(), out.numel(), out.dtype(), size_);
    count({in.nbytes() - out.nbytes(), static_cast<uint64_t>(size_ - 1) * out.nbytes()});
  });
}

WorkPtr MpiCommunicator::allgather_async(Tensor in, Tensor out) {
  require_cpu(in, "allgather", "in");
  require_cpu(out, "allgather", "out");
  if (out.dtype() != in.dtype() || out.numel() != in.numel() * size_)
    throw CommError(where() + ": allgather of " + in.str() + ": out is " + out.str() + ", expected " +
                    std::to_string(in.numel() * size_) + " elements of " +
                    std::string(dtype_name(in.dtype())));
  const int n = mpi_count(in.numel(), "allgather");
  // MPI wants MPI_IN_PLACE when in is this rank's slot of out; any other overlap is an error.
  const char* own_slot = static_cast<const char*>(out.raw()) + static_cast<size_t>(rank_) * in.nbytes();
  const bool in_place = in.nbytes() > 0 && in.raw() == own_slot;
  if (!in_place && overlaps(in, out))
    throw CommError(where() + ": allgather: in overlaps out other than as this rank's slot");
  return thread_.enqueue([this, in, out, n, in_place] {
    begin("allgather");
    const MPI_Datatype type = mpi_datatype(in.dtype());
    MPI_Request request;
    post("MPI_Iallgather", [&] {
      return MPI_Iallgather(in_place ? MPI_IN_PLACE : in.raw(), n, type, out.raw(), n, type, comm_, &request);
    });
    await(&request, MPI_STATUS_IGNORE, "allgather", in.str() + " per rank", kCollectiveHint, {in, out});
    count({static_cast<uint64_t>(size_ - 1) * in.nbytes(), out.nbytes() - in.nbytes()});
  });
}

WorkPtr MpiCommunicator::allgatherv_async(Tensor in, Tensor out, std::vector<int64_t> counts) {
  require_cpu(in, "allgatherv", "in");
  require_cpu(out, "allgatherv", "out");
  if (static_cast<int>(counts.size()) != size_)
    throw CommError(where() + ": allgatherv: " + std::to_string(counts.size()) + " counts for " +
                    std::to_string(size_) + " ranks");
  std::vector<int> recv_counts(counts.size()), displacements(counts.size());
  int64_t total = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    if (counts[r] < 0)
      throw CommError(where() + ": allgatherv: count " + std::to_string(counts[r]) + " for rank " +
                      std::to_string(r) + " is negative");
    recv_counts[r] = mpi_count(counts[r], "allgatherv");
    displacements[r] = mpi_count(total, "allgatherv (displacement)");
    total += counts[r];
  }
  mpi_count(total, "allgatherv (total)");
  const int64_t mine = counts[static_cast<size_t>(rank_)];
  if (in.numel() != mine || out.numel() != total || out.dtype() != in.dtype())
    throw CommError(where() + ": allgatherv: in is " + in.str() + " and out " + out.str() + ", expected " +
                    std::to_string(mine) + " and " + std::to_string(total) + " elements of one dtype");
  const char* own_slot =
      static_cast<const char*>(out.raw()) +
      static_cast<size_t>(displacements[static_cast<size_t>(rank_)]) * dtype_size(in.dtype());
  const bool in_place = in.nbytes() > 0 && in.raw() == own_slot;
  if (!in_place && overlaps(in, out))
    throw CommError(where() + ": allgatherv: in overlaps out other than as this rank's slot");
  return thread_.enqueue([this, in, out, recv_counts, displacements, in_place] {
    begin("allgatherv");
    const MPI_Datatype type = mpi_datatype(in.dtype());
    MPI_Request request;
    post("MPI_Iallgatherv", [&] {
      return MPI_Iallgatherv(in_place ? MPI_IN_PLACE : in.raw(), static_cast<int>(in.numel()), type,
                             out.raw(), recv_counts.data(), displacements.data(), type, comm_, &request);
    });
    await(&request, MPI_STATUS_IGNORE, "allgatherv", in.str() + " from this rank, " + out.str() + " in all",
          kCollectiveHint, {in, out});
    count({static_cast<uint64_t>(size_ - 1) * in.nbytes(), out.nbytes() - in.nbytes()});
  });
}

WorkPtr MpiCommunicator::broadcast_async(Tensor t, int root) {
  require_cpu(t, "broadcast", "t");
  require_rank(root, "broadcast", "root");
  const int n = mpi_count(t.numel(), "broadcast");
  return thread_.enqueue([this, t, root, n] {
    begin("broadcast");
    MPI_Request request;
    post("MPI_Ibcast",
         [&] { return MPI_Ibcast(t.raw(), n, mpi_datatype(t.dtype()), root, comm_, &request); });
    await(&request, MPI_STATUS_IGNORE, "broadcast", t.str() + " from rank " + std::to_string(root),
          kCollectiveHint, {t});
    if (rank_ == root)
      count({static_cast<uint64_t>(size_ - 1) * t.nbytes(), 0});
    else
      count({0, t.nbytes()});
  });
}

WorkPtr MpiCommunicator::send_async(Tensor t, int dst, int tag) {
  require_cpu(t, "send", "t");
  require_rank(dst, "send", "destination");
  require_tag(tag, "send");
  const int n = mpi_count(t.numel(), "send");
  return thread_.enqueue([this, t, dst, tag, n] {
    begin("send");
    // The send is buffered: it finishes once the data is copied and posted, without waiting for the
    // receiver, so send-then-recv rings cannot deadlock on the in-order communication thread (the
    // same promise the tcp transport makes). The copy is freed when MPI completes the send.
    PendingSend pending{MPI_REQUEST_NULL, t.clone(), dst, tag};
    post("MPI_Isend", [&] {
      return MPI_Isend(pending.copy.raw(), n, mpi_datatype(t.dtype()), dst, tag, comm_, &pending.request);
    });
    pending_sends_.push_back(std::move(pending));
    reap_sends();
    count({t.nbytes(), 0});
  });
}

WorkPtr MpiCommunicator::recv_async(Tensor t, int src, int tag) {
  require_cpu(t, "recv", "t");
  require_rank(src, "recv", "source");
  require_tag(tag, "recv");
  const int n = mpi_count(t.numel(), "recv");
  return thread_.enqueue([this, t, src, tag, n] {
    begin("recv");
    const MPI_Datatype type = mpi_datatype(t.dtype());
    const std::string what = t.str() + " from rank " + std::to_string(src) + ", tag " + std::to_string(tag);
    MPI_Request request;
    post("MPI_Irecv", [&] { return MPI_Irecv(t.raw(), n, type, src, tag, comm_, &request); });
    MPI_Status status;
    await(&request, &status, "recv", what,
          "rank " + std::to_string(src) + " sent no matching message (it may have died or be stuck)", {t});
    int got = 0;
    MPI_Get_count(&status, type, &got);
    if (got != n)
      throw CommError(where() + ": recv of " + what + ": the message has " + std::to_string(got) +
                      " elements, expected " + std::to_string(n));
    count({0, t.nbytes()});
  });
}

WorkPtr MpiCommunicator::barrier_async() {
  return thread_.enqueue([this] {
    begin("barrier");
    MPI_Request request;
    post("MPI_Ibarrier", [&] { return MPI_Ibarrier(comm_, &request); });
    await(&request, MPI_STATUS_IGNORE, "barrier", "all ranks", kCollectiveHint, {});
  });
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  std::unique_ptr<Communicator> result;
  thread_
      .enqueue([this, color, key, &result] {
        begin("split");
        // MPI_Comm_split blocks without a deadline. A nonblocking allgather first proves, within
        // the timeout, that every rank has reached the split; the split itself then only runs
        // among live, arrived ranks.
        int mine[2] = {color, key};
        std::vector<int> all(2 * static_cast<size_t>(size_));
        MPI_Request request;
        post("MPI_Iallgather (split)",
             [&] { return MPI_Iallgather(mine, 2, MPI_INT, all.data(), 2, MPI_INT, comm_, &request); });
        await(&request, MPI_STATUS_IGNORE, "split",
              "color " + std::to_string(color) + ", key " + std::to_string(key), kCollectiveHint, {});
        MPI_Comm sub = MPI_COMM_NULL;
        post("MPI_Comm_split",
             [&] { return MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &sub); });
        if (sub != MPI_COMM_NULL) result = std::make_unique<MpiCommunicator>(sub, options_);
      })
      ->wait();
  return result;
}

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& options) {
  MpiRuntime& runtime = MpiRuntime::get();
  // A private duplicate of MPI_COMM_WORLD, so our tags and collectives never match another
  // library's. MPI_Comm_idup has a request, so a rank that never arrives is a timeout, not a hang.
  MPI_Comm world = MPI_COMM_NULL;
  MPI_Request request;
  {
    auto lock = runtime.serialize();
    check_mpi(MPI_Comm_idup(MPI_COMM_WORLD, &world, &request), "mpi: MPI_Comm_idup(MPI_COMM_WORLD)");
  }
  if (!test_until(runtime, &request, Clock::now() + options.timeout, MPI_STATUS_IGNORE,
                  "mpi: MPI_Comm_idup")) {
    runtime.mark_abandoned();
    throw CommError("mpi: creating the world communicator timed out after " +
                    std::to_string(options.timeout.count()) +
                    " ms: not every rank of MPI_COMM_WORLD called it");
  }
  return std::make_unique<MpiCommunicator>(world, options);
}

}  // namespace tern
