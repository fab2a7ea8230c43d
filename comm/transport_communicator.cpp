#include "comm/transport_communicator.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>

#include "comm/algorithms.h"
#include "comm/reduce.h"
#include "runtime/rng.h"

namespace tern {

// Everything the operations need, owned by the communicator and used on its CommThread. Byte
// counters are this communicator's own (its Group's), not the shared transport's, so a split's
// traffic is not counted in its parent.
struct TransportCommunicator::State {
  State(std::shared_ptr<Transport> transport_in, std::vector<int> members, int rank, uint64_t context,
        std::string backend_in, CommOptions options_in, bool world)
      : transport(std::move(transport_in)),
        backend(std::move(backend_in)),
        options(options_in),
        group(*transport, std::move(members), rank, context, options.timeout) {
    if (options.small_message_bytes) algorithms.small_message_bytes = options.small_message_bytes;
    if (options.small_gather_bytes >= 0) algorithms.small_gather_bytes = static_cast<size_t>(options.small_gather_bytes);
    if (options.ring_chunk_bytes) algorithms.ring_chunk_bytes = options.ring_chunk_bytes;
    if (options.ring_chunk_max_bytes > 0) algorithms.ring_chunk_max_bytes = static_cast<size_t>(options.ring_chunk_max_bytes);
    if (options.halving_doubling_max_bytes > 0)
      algorithms.halving_doubling_max_bytes = static_cast<size_t>(options.halving_doubling_max_bytes);
    if (world) {
      TERN_CHECK(group.size() == transport->size(), "TransportCommunicator: a world of ", group.size(),
                 " ranks over a transport of ", transport->size());
      for (int r = 0; r < group.size(); ++r) {
        TERN_CHECK(group.members()[static_cast<size_t>(r)] == r, "TransportCommunicator: the world's rank ", r,
                   " is transport rank ", group.members()[static_cast<size_t>(r)]);
      }
      algorithms.world_collectives = transport->world_collectives();
      algorithms.world_max_bytes = options.shm_collectives_max_bytes;
    }
  }

  std::shared_ptr<Transport> transport;
  std::string backend;
  CommOptions options;
  AlgorithmOptions algorithms;
  Group group;
  // Collective operations take their transport tag from this counter. It is only touched on the
  // communication thread, and every member runs the same collectives in the same order, so the
  // n-th collective has the same tag everywhere.
  uint64_t next_operation = 0;
};

namespace {

int index_of(const std::vector<int>& members, int transport_rank) {
  const auto it = std::find(members.begin(), members.end(), transport_rank);
  if (it == members.end()) {
    throw CommError(detail::concat("TransportCommunicator: transport rank ", transport_rank,
                                   " is not a member of the group it was given"));
  }
  return static_cast<int>(it - members.begin());
}

// The same on every member of a split: the parent's context, the split's position in the parent's
// sequence of collectives (distinct for each split of one parent), and the color (distinct for
// siblings of one split).
uint64_t split_context(uint64_t parent, uint64_t operation, int color) {
  return mix_seed(mix_seed(mix_seed(parent) ^ operation) ^ static_cast<uint64_t>(static_cast<uint32_t>(color)));
}

void check_tensor(const Tensor& t, const char* op, const char* name) {
  if (!t.defined()) throw CommError(detail::concat(op, ": ", name, " is an undefined tensor"));
  if (t.device() != Device::cpu) {
    throw CommError(
        detail::concat(op, ": ", name, " ", t.str(), " is not on the CPU (this backend moves CPU tensors)"));
  }
}

void check_same_dtype(const Tensor& in, const Tensor& out, const char* op) {
  if (in.dtype() != out.dtype()) {
    throw CommError(detail::concat(op, ": out ", out.str(), " must have the dtype of in ", in.str()));
  }
}

void check_peer(int peer, int size, const char* op, const char* role) {
  if (peer < 0 || peer >= size) {
    throw CommError(detail::concat(op, ": ", role, " rank ", peer, " is not in [0, ", size, ")"));
  }
}

}  // namespace

TransportCommunicator::TransportCommunicator(std::shared_ptr<Transport> transport, std::vector<int> group,
                                             uint64_t context, std::string backend, CommOptions options,
                                             bool world) {
  TERN_CHECK(transport != nullptr, "TransportCommunicator: no transport");
  const int rank = index_of(group, transport->rank());
  state_ = std::make_unique<State>(std::move(transport), std::move(group), rank, context, std::move(backend),
                                   options, world);
}

TransportCommunicator::~TransportCommunicator() = default;

int TransportCommunicator::rank() const { return state_->group.rank(); }
int TransportCommunicator::size() const { return state_->group.size(); }
std::string TransportCommunicator::backend() const { return state_->backend; }
uint64_t TransportCommunicator::bytes_sent() const { return state_->group.bytes_sent(); }
uint64_t TransportCommunicator::bytes_received() const { return state_->group.bytes_received(); }

namespace {

// Runs one queued operation and adds to any CommError what was running and on which rank, so the
// message reads "rank 2: recv from rank 0 timed out after 100 ms in allreduce(sum) of f32[7] (communicator
// rank 2 of 4)". The first ranks are the transport's (world) ranks, the last the communicator's.
template <typename Fn>
void run_described(const Group& group, const std::string& what, Fn&& fn) {
  try {
    fn();
  } catch (const CommError& e) {
    throw CommError(detail::concat(e.what(), " in ", what, " (communicator rank ", group.rank(), " of ",
                                   group.size(), ")"));
  }
}

}  // namespace

WorkPtr TransportCommunicator::allreduce_async(Tensor t, ReduceOp op) {
  check_tensor(t, "allreduce", "t");
  check_reduce_dtype(t.dtype(), "allreduce");
  State* s = state_.get();
  return thread_.enqueue([s, t, op] {
    run_described(s->group, detail::concat("allreduce(", reduce_op_name(op), ") of ", t.str()), [&] {
      tern::allreduce(s->group, algorithm_tag(s->next_operation++), t.raw(), t.numel(), t.dtype(), op,
                      s->algorithms);
    });
  });
}

WorkPtr TransportCommunicator::reduce_scatter_async(Tensor in, Tensor out, ReduceOp op) {
  check_tensor(in, "reduce_scatter", "in");
  check_tensor(out, "reduce_scatter", "out");
  check_reduce_dtype(in.dtype(), "reduce_scatter");
  check_same_dtype(in, out, "reduce_scatter");
  const int64_t expected = even_counts(in.numel(), size())[static_cast<size_t>(rank())];
  if (out.numel() != expected) {
    throw CommError(detail::concat("reduce_scatter: out ", out.str(), " on rank ", rank(), " must hold ",
                                   expected, " elements (its share of ", in.numel(), " over ", size(),
                                   " ranks)"));
  }
  State* s = state_.get();
  return thread_.enqueue([s, in, out, op] {
    run_described(s->group, detail::concat("reduce_scatter(", reduce_op_name(op), ") of ", in.str()), [&] {
      tern::reduce_scatter(s->group, algorithm_tag(s->next_operation++), in.raw(), out.raw(), in.numel(),
                           in.dtype(), op, s->algorithms);
    });
  });
}

WorkPtr TransportCommunicator::allgather_async(Tensor in, Tensor out) {
  check_tensor(in, "allgather", "in");
  check_tensor(out, "allgather", "out");
  check_same_dtype(in, out, "allgather");
  if (out.numel() != in.numel() * size()) {
    throw CommError(detail::concat("allgather: out ", out.str(), " must hold ", in.numel() * size(),
                                   " elements (", size(), " ranks x ", in.numel(), ")"));
  }
  State* s = state_.get();
  return thread_.enqueue([s, in, out] {
    run_described(s->group, detail::concat("allgather of ", in.str()), [&] {
      tern::allgather(s->group, algorithm_tag(s->next_operation++), in.raw(), out.raw(), in.nbytes(),
                      s->algorithms);
    });
  });
}

WorkPtr TransportCommunicator::allgatherv_async(Tensor in, Tensor out, std::vector<int64_t> counts) {
  check_tensor(in, "allgatherv", "in");
  check_tensor(out, "allgatherv", "out");
  check_same_dtype(in, out, "allgatherv");
  if (static_cast<int>(counts.size()) != size()) {
    throw CommError(
        detail::concat("allgatherv: got ", counts.size(), " counts, expected one per rank (", size(), ")"));
  }
  for (size_t r = 0; r < counts.size(); ++r) {
    if (counts[r] < 0)
      throw CommError(detail::concat("allgatherv: counts[", r, "] = ", counts[r], " is negative"));
  }
  if (in.numel() != counts[static_cast<size_t>(rank())]) {
    throw CommError(detail::concat("allgatherv: in ", in.str(), " on rank ", rank(), " must hold counts[",
                                   rank(), "] = ", counts[static_cast<size_t>(rank())], " elements"));
  }
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  if (out.numel() != total) {
    throw CommError(
        detail::concat("allgatherv: out ", out.str(), " must hold the sum of counts, ", total, " elements"));
  }
  State* s = state_.get();
  return thread_.enqueue([s, in, out, counts = std::move(counts)] {
    run_described(s->group, detail::concat("allgatherv of ", in.str()), [&] {
      tern::allgatherv(s->group, algorithm_tag(s->next_operation++), in.raw(), out.raw(), counts,
                       dtype_size(in.dtype()), s->algorithms);
    });
  });
}

WorkPtr TransportCommunicator::broadcast_async(Tensor t, int root) {
  check_tensor(t, "broadcast", "t");
  check_peer(root, size(), "broadcast", "root");
  State* s = state_.get();
  return thread_.enqueue([s, t, root] {
    run_described(s->group, detail::concat("broadcast of ", t.str(), " from rank ", root), [&] {
      tern::broadcast(s->group, algorithm_tag(s->next_operation++), t.raw(), t.nbytes(), root, s->algorithms);
    });
  });
}

WorkPtr TransportCommunicator::send_async(Tensor t, int dst, int tag) {
  check_tensor(t, "send", "t");
  check_peer(dst, size(), "send", "destination");
  if (tag < 0) throw CommError(detail::concat("send: tag ", tag, " is negative (user tags are >= 0)"));
  State* s = state_.get();
  return thread_.enqueue([s, t, dst, tag] {
    run_described(s->group, detail::concat("send of ", t.str(), " to rank ", dst, " with tag ", tag),
                  [&] { s->group.send(dst, user_tag(tag), t.raw(), t.nbytes()); });
  });
}

WorkPtr TransportCommunicator::recv_async(Tensor t, int src, int tag) {
  check_tensor(t, "recv", "t");
  check_peer(src, size(), "recv", "source");
  if (tag < 0) throw CommError(detail::concat("recv: tag ", tag, " is negative (user tags are >= 0)"));
  State* s = state_.get();
  return thread_.enqueue([s, t, src, tag] {
    run_described(s->group, detail::concat("recv of ", t.str(), " from rank ", src, " with tag ", tag),
                  [&] { s->group.recv(src, user_tag(tag), t.raw(), t.nbytes()); });
  });
}

WorkPtr TransportCommunicator::barrier_async() {
  State* s = state_.get();
  return thread_.enqueue([s] {
    run_described(s->group, "barrier", [&] { tern::barrier(s->group, algorithm_tag(s->next_operation++)); });
  });
}

std::unique_ptr<Communicator> TransportCommunicator::split(int color, int key) {
  // Every member learns every (color, key) through one allgather queued behind this rank's earlier
  // operations; the allgather's operation index then names this split in the new context.
  Tensor mine = Tensor::empty({2}, DType::i64);
  mine.data<int64_t>()[0] = color;
  mine.data<int64_t>()[1] = key;
  Tensor all = Tensor::empty({2 * static_cast<int64_t>(size())}, DType::i64);
  State* s = state_.get();
  uint64_t operation = 0;
  thread_
      .enqueue([s, mine, all, &operation] {
        run_described(s->group, detail::concat("split(color ", mine.data<int64_t>()[0], ")"), [&] {
          operation = s->next_operation++;
          tern::allgather(s->group, algorithm_tag(operation), mine.raw(), all.raw(), mine.nbytes(),
                          s->algorithms);
        });
      })
      ->wait();
  if (color < 0) return nullptr;

  // Members of this color, ordered by (key, old rank).
  const int64_t* entries = all.data<int64_t>();
  std::vector<std::pair<int64_t, int>> order;
  for (int r = 0; r < size(); ++r) {
    const size_t at = 2 * static_cast<size_t>(r);
    if (entries[at] == color) order.emplace_back(entries[at + 1], r);
  }
  std::sort(order.begin(), order.end());
  std::vector<int> members;
  members.reserve(order.size());
  for (const auto& [member_key, old_rank] : order) {
    members.push_back(s->group.members()[static_cast<size_t>(old_rank)]);
  }
  return std::make_unique<TransportCommunicator>(s->transport, std::move(members),
                                                 split_context(s->group.context(), operation, color),
                                                 s->backend, s->options);
}

}  // namespace tern
