// Point-to-point, barrier, split, ordering, argument and counter checks of tern_collectives_check.
#include <algorithm>
#include <functional>

#include "tests/comm/multiprocess/checks.h"

namespace tern::check {

namespace {

void check_send_recv(Communicator& comm, Report& report, const Sizes& sizes, uint64_t& salt) {
  const int rank = comm.rank(), size = comm.size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  // A ring where every rank sends before it receives: sends must not wait for the receiver.
  for (int64_t n : sizes.counts) {
    for (int tag : {0, 7}) {
      const uint64_t s = ++salt;
      const Tensor out = make_input(DType::f32, s, rank, n);
      WorkPtr sent = comm.send_async(out, next, tag);
      Tensor in = Tensor::full({n}, 5, DType::f32);
      comm.recv(in, prev, tag);
      sent->wait();
      report.record("sendrecv.ring.tag" + std::to_string(tag) + ".n" + std::to_string(n),
                    compare_bytes(in, make_input(DType::f32, s, prev, n)));
    }
  }
  // Two messages to the same peer, received in the opposite order: matching is by tag.
  const uint64_t first = ++salt, second = ++salt;
  const Tensor a = make_input(DType::i32, first, rank, 13), b = make_input(DType::i32, second, rank, 1000);
  WorkPtr sent_a = comm.send_async(a, next, 101);
  WorkPtr sent_b = comm.send_async(b, next, 102);
  Tensor got_b = Tensor::zeros({1000}, DType::i32), got_a = Tensor::zeros({13}, DType::i32);
  comm.recv(got_b, prev, 102);
  comm.recv(got_a, prev, 101);
  sent_a->wait();
  sent_b->wait();
  std::string problem = compare_bytes(got_a, make_input(DType::i32, first, prev, 13));
  if (problem.empty()) problem = compare_bytes(got_b, make_input(DType::i32, second, prev, 1000));
  report.record("sendrecv.tags_matched_out_of_order", problem);
}

// Ranks in the group of `color`, in their order in the new communicator: by key, then old rank.
std::vector<int> members(int size, const std::function<int(int)>& color_of,
                         const std::function<int(int)>& key_of, int color) {
  std::vector<int> ranks;
  for (int r = 0; r < size; ++r)
    if (color_of(r) == color) ranks.push_back(r);
  std::stable_sort(ranks.begin(), ranks.end(), [&](int x, int y) { return key_of(x) < key_of(y); });
  return ranks;
}

// Splits, then checks the sub-communicator's rank, size and order (an allgather of old ranks) and
// an allreduce over its members only.
void check_split(Communicator& comm, Report& report, const std::string& name,
                 const std::function<int(int)>& color_of, const std::function<int(int)>& key_of,
                 uint64_t salt) {
  const int rank = comm.rank();
  const int color = color_of(rank);
  std::unique_ptr<Communicator> sub = comm.split(color, key_of(rank));
  if (color < 0) {
    report.record(name + ".excluded_rank_gets_none", sub ? "got a communicator for color -1" : "");
    return;
  }
  if (!sub) {
    report.record(name, "no communicator for color " + std::to_string(color));
    return;
  }
  const std::vector<int> group = members(comm.size(), color_of, key_of, color);
  const auto position = std::find(group.begin(), group.end(), rank) - group.begin();
  if (sub->size() != static_cast<int>(group.size()) || sub->rank() != position) {
    report.record(name, "rank " + std::to_string(sub->rank()) + " of " + std::to_string(sub->size()) +
                            ", expected " + std::to_string(position) + " of " + std::to_string(group.size()));
    return;
  }
  Tensor mine = Tensor::full({1}, rank, DType::i32), order = Tensor::zeros({sub->size()}, DType::i32);
  sub->allgather(mine, order);
  std::string problem;
  for (size_t i = 0; i < group.size() && problem.empty(); ++i)
    if (order.data<int32_t>()[i] != group[i])
      problem = "member " + std::to_string(i) + " is old rank " + std::to_string(order.data<int32_t>()[i]) +
                ", expected " + std::to_string(group[i]);
  report.record(name + ".order", problem);
  for (DType dtype : {DType::i64, DType::f32}) {
    for (int64_t n : {int64_t{7}, int64_t{1000003}}) {
      Tensor t = make_input(dtype, salt, rank, n);
      sub->allreduce(t, ReduceOp::sum);
      report.record(name + ".allreduce.sum." + std::string(dtype_name(dtype)) + ".n" + std::to_string(n),
                    compare_reduction(t, ReduceOp::sum, salt, group, 0));
    }
  }
}

// Operations queued together finish in queue order and each gives its own result.
void check_async_order(Communicator& comm, Report& report, uint64_t& salt) {
  const int rank = comm.rank();
  const uint64_t sa = ++salt, sb = ++salt, sc = ++salt;
  Tensor a = make_input(DType::f32, sa, rank, 1000003), b = make_input(DType::i32, sb, rank, 7),
         c = make_input(DType::bf16, sc, rank, 13);
  WorkPtr wa = comm.allreduce_async(a, ReduceOp::sum);
  WorkPtr wb = comm.allreduce_async(b, ReduceOp::max);
  WorkPtr wc = comm.allreduce_async(c, ReduceOp::avg);
  wc->wait();
  std::string problem = wa->test() && wb->test() ? "" : "the last operation finished before earlier ones";
  wb->wait();
  wa->wait();
  const std::vector<int> everyone = all_ranks(comm.size());
  for (const std::string& p : {compare_reduction(a, ReduceOp::sum, sa, everyone, 0),
                               compare_reduction(b, ReduceOp::max, sb, everyone, 0),
                               compare_reduction(c, ReduceOp::avg, sc, everyone, 0)})
    if (problem.empty()) problem = p;
  report.record("async.queued_operations_finish_in_order", problem);
}

// Bad arguments are a CommError on this rank alone; the communicator stays usable.
void check_rejections(Communicator& comm, Report& report, uint64_t& salt) {
  const int size = comm.size(), next = (comm.rank() + 1) % size;
  auto expect_rejected = [&](const std::string& name, const std::function<void()>& call) {
    std::string problem;
    try {
      call();
      problem = "accepted";
    } catch (const CommError&) {
    } catch (const std::exception& e) {
      problem = std::string("threw something other than CommError: ") + e.what();
    }
    report.record("rejects." + name, problem);
  };
  const Tensor seven = Tensor::zeros({7});
  expect_rejected("allgather_with_wrong_out_size", [&] {
    Tensor out = Tensor::zeros({7 * size + 1});
    comm.allgather(seven, out);
  });
  expect_rejected("allgatherv_with_wrong_number_of_counts", [&] {
    Tensor out = Tensor::zeros({7});
    comm.allgatherv(seven, out, std::vector<int64_t>(static_cast<size_t>(size + 1), 0));
  });
  expect_rejected("allreduce_of_u8", [&] {
    Tensor t = Tensor::zeros({7}, DType::u8);
    comm.allreduce(t, ReduceOp::sum);
  });
  expect_rejected("recv_from_missing_rank", [&] {
    Tensor t = Tensor::zeros({7});
    comm.recv(t, size, 0);
  });
  expect_rejected("send_with_negative_tag", [&] { comm.send(seven, next, -1); });
  expect_rejected("broadcast_from_missing_root", [&] {
    Tensor t = Tensor::zeros({7});
    comm.broadcast(t, -1);
  });
  const uint64_t s = ++salt;
  Tensor t = make_input(DType::f32, s, comm.rank(), 7);
  comm.allreduce(t, ReduceOp::sum);
  report.record("rejects.communicator_still_usable",
                compare_reduction(t, ReduceOp::sum, s, all_ranks(size), 0));
}

// Every allreduce algorithm moves at least (n-1)/n of the buffer in and out of each rank; one rank
// moves nothing.
void check_byte_counters(Communicator& comm, Report& report, uint64_t& salt) {
  const uint64_t sent = comm.bytes_sent(), received = comm.bytes_received();
  Tensor t = make_input(DType::f32, ++salt, comm.rank(), 1 << 18);
  comm.allreduce(t, ReduceOp::sum);
  const uint64_t ds = comm.bytes_sent() - sent, dr = comm.bytes_received() - received;
  const uint64_t floor =
      t.nbytes() * static_cast<uint64_t>(comm.size() - 1) / static_cast<uint64_t>(comm.size());
  std::string problem;
  if (comm.size() == 1 && (ds || dr)) problem = "one rank counted traffic";
  if (comm.size() > 1 && (ds < floor || dr < floor))
    problem = "counted " + std::to_string(ds) + " bytes sent and " + std::to_string(dr) +
              " received for a 1 MiB allreduce, expected at least " + std::to_string(floor) + " each";
  report.record("bytes.allreduce_counts_what_it_moves", problem);
}

}  // namespace

void run_group_checks(Communicator& comm, Report& report, const Sizes& sizes) {
  const int size = comm.size();
  uint64_t salt = 3000;
  check_send_recv(comm, report, sizes, salt);

  for (int i = 0; i < 3; ++i) comm.barrier();
  report.record("barrier.three_in_a_row", "");

  check_split(
      comm, report, "split.parity_reversed", [](int r) { return r % 2; }, [size](int r) { return size - r; },
      ++salt);
  if (size > 1)
    check_split(
        comm, report, "split.without_last_rank", [size](int r) { return r == size - 1 ? -1 : 0; },
        [](int r) { return r; }, ++salt);

  check_async_order(comm, report, salt);
  check_rejections(comm, report, salt);
  check_byte_counters(comm, report, salt);
}

}  // namespace tern::check
