// TransportCommunicator through the local backend: asynchronous ordering, split sub-groups, tagged
// point-to-point, validation on the caller's thread, and failures that end in CommError, not hangs.
#include "comm/transport_communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "comm/local/local.h"
#include "tests/comm/collective_reference.h"

namespace tern {
namespace {

using testing::first_mismatch;
using testing::rank_input;
using testing::reference_reduce;

CommOptions with_timeout(std::chrono::milliseconds timeout) {
  CommOptions options;
  options.timeout = timeout;
  return options;
}
const CommOptions kTestOptions = with_timeout(std::chrono::seconds(10));

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(TransportCommunicator, OperationsQueuedTogetherAndWaitedInReverseGiveTheRightResults) {
  const int world = 3;
  run_local(
      world,
      [&](Communicator& comm) {
        const int rank = comm.rank();
        Tensor a = rank_input(DType::f32, rank, 13);
        Tensor b = rank_input(DType::f32, rank, 200000);
        const Tensor gather_in = rank_input(DType::i32, rank, 5);
        Tensor gathered = Tensor::empty({5 * world}, DType::i32);
        Tensor c = rank_input(DType::i64, rank, 9);
        WorkPtr work_a = comm.allreduce_async(a, ReduceOp::sum);
        WorkPtr work_b = comm.allreduce_async(b, ReduceOp::max);
        WorkPtr work_g = comm.allgather_async(gather_in, gathered);
        WorkPtr work_c = comm.broadcast_async(c, 2);
        WorkPtr work_barrier = comm.barrier_async();
        work_barrier->wait();
        work_c->wait();
        work_g->wait();
        work_b->wait();
        work_a->wait();
        for (const WorkPtr& w : {work_a, work_b, work_g, work_c, work_barrier}) EXPECT_TRUE(w->test());
        EXPECT_EQ(first_mismatch(a, reference_reduce(DType::f32, ReduceOp::sum, world, 13)), -1);
        EXPECT_EQ(first_mismatch(b, reference_reduce(DType::f32, ReduceOp::max, world, 200000)), -1);
        for (int r = 0; r < world; ++r) {
          EXPECT_EQ(first_mismatch(gathered.slice(5 * r, 5 * r + 5), rank_input(DType::i32, r, 5)), -1);
        }
        EXPECT_EQ(first_mismatch(c, rank_input(DType::i64, 2, 9)), -1);
      },
      kTestOptions);
}

TEST(TransportCommunicator, SplitIntoRowsAndColumnsRanksByKeyAndReducesWithinEachGroup) {
  const int world = 4;
  run_local(
      world,
      [&](Communicator& comm) {
        const int rank = comm.rank();
        auto row = comm.split(rank / 2, rank);      // {0, 1}, {2, 3}
        auto column = comm.split(rank % 2, -rank);  // {2, 0}, {3, 1}: key reverses the order
        ASSERT_NE(row, nullptr);
        ASSERT_NE(column, nullptr);
        EXPECT_EQ(row->size(), 2);
        EXPECT_EQ(row->rank(), rank % 2);
        EXPECT_EQ(column->size(), 2);
        EXPECT_EQ(column->rank(), rank < 2 ? 1 : 0);
        EXPECT_EQ(row->backend(), "local");

        // All three communicators busy at once, each with a ring-sized and a small operation.
        Tensor in_row = Tensor::full({100000}, rank + 1, DType::i32);
        Tensor in_column = Tensor::full({7}, 10 * (rank + 1), DType::i32);
        Tensor in_world = Tensor::full({50000}, 100 * (rank + 1), DType::i32);
        WorkPtr w_row = row->allreduce_async(in_row, ReduceOp::sum);
        WorkPtr w_column = column->allreduce_async(in_column, ReduceOp::sum);
        WorkPtr w_world = comm.allreduce_async(in_world, ReduceOp::sum);
        w_world->wait();
        w_column->wait();
        w_row->wait();
        const int row_sum = rank < 2 ? 1 + 2 : 3 + 4;
        const int column_sum = rank % 2 == 0 ? 10 * (1 + 3) : 10 * (2 + 4);
        EXPECT_EQ(first_mismatch(in_row, Tensor::full({100000}, row_sum, DType::i32)), -1);
        EXPECT_EQ(first_mismatch(in_column, Tensor::full({7}, column_sum, DType::i32)), -1);
        EXPECT_EQ(first_mismatch(in_world, Tensor::full({50000}, 1000, DType::i32)), -1);

        // Grandchildren with the same color in both rows must not meet either.
        auto single = row->split(0, 0);
        ASSERT_NE(single, nullptr);
        Tensor x = Tensor::full({3}, rank, DType::i64);
        single->allreduce(x, ReduceOp::max);
        EXPECT_EQ(x.data<int64_t>()[0], rank < 2 ? 1 : 3);

        // Point to point inside a split uses the split's ranks.
        Tensor token = Tensor::full({1}, rank, DType::i32);
        if (column->rank() == 0) {
          column->send(token, 1, 0);
        } else {
          column->recv(token, 0, 0);
          EXPECT_EQ(token.data<int32_t>()[0], rank + 2);
        }
      },
      kTestOptions);
}

TEST(TransportCommunicator, SplitWithNegativeColorLeavesTheRankOut) {
  run_local(
      3,
      [&](Communicator& comm) {
        auto sub = comm.split(comm.rank() == 1 ? -1 : 0, 0);
        if (comm.rank() == 1) {
          EXPECT_EQ(sub, nullptr);
          return;
        }
        ASSERT_NE(sub, nullptr);
        EXPECT_EQ(sub->size(), 2);
        Tensor t = Tensor::full({4}, 1, DType::f32);
        sub->allreduce(t, ReduceOp::sum);
        EXPECT_EQ(t.f32()[3], 2.0f);
      },
      kTestOptions);
}

TEST(TransportCommunicator, RecvMatchesByTagWhateverTheOrderOfSends) {
  run_local(
      2,
      [&](Communicator& comm) {
        if (comm.rank() == 0) {
          const std::pair<int, float> sends[] = {{1, 10.0f}, {2, 20.0f}, {3, 30.0f}, {2, 21.0f}};
          for (const auto& [tag, value] : sends) comm.send(Tensor::full({2}, value, DType::f32), 1, tag);
        } else {
          Tensor t = Tensor::empty({2}, DType::f32);
          comm.recv(t, 0, 3);
          EXPECT_EQ(t.f32()[0], 30.0f);
          comm.recv(t, 0, 2);
          EXPECT_EQ(t.f32()[0], 20.0f);  // same tag: first sent, first received
          comm.recv(t, 0, 1);
          EXPECT_EQ(t.f32()[0], 10.0f);
          comm.recv(t, 0, 2);
          EXPECT_EQ(t.f32()[0], 21.0f);
        }
      },
      kTestOptions);
}

TEST(TransportCommunicator, UserMessagesWaitingInTheMailboxDoNotDisturbCollectives) {
  run_local(
      2,
      [&](Communicator& comm) {
        // Tag 0 is also the first collective's operation index: the ranges must stay apart.
        if (comm.rank() == 0) comm.send(Tensor::full({1}, 42, DType::f32), 1, 0);
        Tensor t = Tensor::full({1}, 1, DType::f32);
        comm.allreduce(t, ReduceOp::sum);
        EXPECT_EQ(t.f32()[0], 2.0f);
        if (comm.rank() == 1) {
          Tensor got = Tensor::empty({1}, DType::f32);
          comm.recv(got, 0, 0);
          EXPECT_EQ(got.f32()[0], 42.0f);
        }
      },
      kTestOptions);
}

TEST(TransportCommunicator, CountsBytesSentAndReceived) {
  auto world = make_local_world(2, kTestOptions);
  Tensor a = Tensor::full({1000}, 1, DType::f32);
  Tensor b = Tensor::full({1000}, 2, DType::f32);
  WorkPtr wa = world[0]->allreduce_async(a, ReduceOp::sum);
  WorkPtr wb = world[1]->allreduce_async(b, ReduceOp::sum);
  wa->wait();
  wb->wait();
  EXPECT_GE(world[0]->bytes_sent(), a.nbytes() / 2);
  EXPECT_EQ(world[0]->bytes_sent(), world[1]->bytes_received());
  EXPECT_EQ(world[1]->bytes_sent(), world[0]->bytes_received());
}

template <typename Fn>
std::string comm_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const CommError& e) {
    return e.what();
  }
  return "no CommError";
}

TEST(TransportCommunicator, RejectsBadArgumentsOnTheCallersThreadNamingTheOperation) {
  auto world = make_local_world(2, kTestOptions);
  Communicator& comm = *world[0];
  Tensor f = Tensor::zeros({10});
  Tensor bytes = Tensor::zeros({10}, DType::u8);
  EXPECT_TRUE(
      contains(comm_error_of([&] { comm.allreduce_async(bytes, ReduceOp::sum); }), "allreduce: dtype u8"));
  Tensor wrong_share = Tensor::zeros({4});
  EXPECT_TRUE(contains(comm_error_of([&] { comm.reduce_scatter_async(f, wrong_share, ReduceOp::sum); }),
                       "must hold 5 elements"));
  Tensor other_dtype = Tensor::zeros({5}, DType::f16);
  EXPECT_TRUE(
      contains(comm_error_of([&] { comm.reduce_scatter_async(f, other_dtype, ReduceOp::sum); }), "dtype"));
  Tensor short_gather = Tensor::zeros({19});
  EXPECT_TRUE(
      contains(comm_error_of([&] { comm.allgather_async(f, short_gather); }), "must hold 20 elements"));
  EXPECT_TRUE(contains(comm_error_of([&] { comm.allgatherv_async(f, short_gather, {10}); }), "one per rank"));
  EXPECT_TRUE(contains(comm_error_of([&] { comm.allgatherv_async(f, short_gather, {10, -1}); }), "negative"));
  EXPECT_TRUE(contains(comm_error_of([&] { comm.allgatherv_async(f, short_gather, {9, 10}); }), "counts[0]"));
  EXPECT_TRUE(contains(comm_error_of([&] {
                         comm.allgatherv_async(f, short_gather, {10, 10});
                       }),
                       "sum of counts"));
  EXPECT_TRUE(contains(comm_error_of([&] { comm.broadcast_async(f, 2); }), "broadcast: root rank 2"));
  EXPECT_TRUE(contains(comm_error_of([&] { comm.send_async(f, 1, -3); }), "send: tag -3"));
  EXPECT_TRUE(contains(comm_error_of([&] { comm.recv_async(f, -1, 0); }), "recv: source rank -1"));
  EXPECT_TRUE(contains(comm_error_of([&] { comm.allreduce_async(Tensor(), ReduceOp::sum); }), "undefined"));
}

TEST(TransportCommunicator, RanksThatDisagreeOnTheSizeGetCommErrorInsteadOfHanging) {
  // Small (recursive doubling) and ring sizes; each rank must end with a CommError.
  for (int64_t n : {10, 100000}) {
    run_local(
        2,
        [&](Communicator& comm) {
          Tensor t = Tensor::zeros({n + 2 * comm.rank()});
          const std::string error = comm_error_of([&] { comm.allreduce(t, ReduceOp::sum); });
          EXPECT_TRUE(contains(error, "in allreduce(sum)")) << error;
          EXPECT_TRUE(contains(error, "bytes") || contains(error, "timed out")) << error;
        },
        with_timeout(std::chrono::milliseconds(300)));
  }
}

TEST(TransportCommunicator, ARankThatThrowsMakesTheOthersFailNamingIt) {
  std::mutex mu;
  std::vector<std::string> errors;
  try {
    run_local(
        3,
        [&](Communicator& comm) {
          if (comm.rank() == 1) throw Error("rank 1 gives up");
          Tensor t = Tensor::zeros({1000});
          try {
            comm.allreduce(t, ReduceOp::sum);
          } catch (const CommError& e) {
            std::lock_guard lock(mu);
            errors.push_back(e.what());
            throw;
          }
        },
        kTestOptions);  // a 10 s timeout would also end them, but with a different message
    ADD_FAILURE() << "run_local did not rethrow";
  } catch (const CommError& e) {
    ADD_FAILURE() << "rethrew a consequence instead of the cause: " << e.what();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank 1 gives up");
  }
  ASSERT_EQ(errors.size(), 2u);
  for (const std::string& error : errors) {
    EXPECT_TRUE(contains(error, "because rank 1 failed: rank 1 gives up")) << error;
  }
}

TEST(TransportCommunicator, RecvTimesOutNamingThePeerTheWaitAndTheOperation) {
  auto world = make_local_world(2, with_timeout(std::chrono::milliseconds(50)));
  Tensor t = Tensor::zeros({4});
  const std::string error = comm_error_of([&] { world[0]->recv(t, 1, 5); });
  EXPECT_TRUE(contains(
      error, "rank 0: recv from rank 1 timed out after 50 ms in recv of f32[4] from rank 1 with tag 5"))
      << error;
}

TEST(TransportCommunicator, RecvFromARankWhoseCommunicatorIsGoneFailsAtOnce) {
  auto world = make_local_world(2, kTestOptions);
  world[1].reset();
  Tensor t = Tensor::zeros({4});
  const std::string error = comm_error_of([&] { world[0]->recv(t, 1, 0); });
  EXPECT_TRUE(contains(error, "rank 1 has shut down")) << error;
}

TEST(TransportCommunicator, ErrorsOfOneOperationLeaveLaterOnesWorking) {
  run_local(
      2,
      [&](Communicator& comm) {
        if (comm.rank() == 1) comm.send(Tensor::zeros({2}), 0, 9);
        if (comm.rank() == 0) {
          Tensor too_long = Tensor::zeros({4});
          const std::string error = comm_error_of([&] { comm.recv(too_long, 1, 9); });
          EXPECT_TRUE(contains(error, "expected 16 bytes but the message has 8 bytes")) << error;
        }
        Tensor x = Tensor::full({3}, 2, DType::f32);
        comm.allreduce(x, ReduceOp::sum);
        EXPECT_EQ(x.f32()[2], 4.0f);
      },
      kTestOptions);
}

TEST(SingleCommunicator, IsAOneRankWorldWhereCollectivesCopy) {
  auto comm = make_single_communicator(kTestOptions);
  EXPECT_EQ(comm->backend(), "single");
  EXPECT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->rank(), 0);
  Tensor t = rank_input(DType::bf16, 0, 7);
  comm->allreduce(t, ReduceOp::avg);
  EXPECT_EQ(first_mismatch(t, rank_input(DType::bf16, 0, 7)), -1);
  Tensor out = Tensor::empty({7}, DType::bf16);
  comm->reduce_scatter(t, out, ReduceOp::sum);
  EXPECT_EQ(first_mismatch(out, t), -1);
  comm->send(t, 0, 1);
  Tensor back = Tensor::empty({7}, DType::bf16);
  comm->recv(back, 0, 1);
  EXPECT_EQ(first_mismatch(back, t), -1);
  comm->barrier();
}

}  // namespace
}  // namespace tern
