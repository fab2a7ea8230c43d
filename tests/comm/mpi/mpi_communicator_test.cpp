// The mpi backend in one process (MPI's singleton mode: a world of one rank): the properties that
// need no peer. Every collective across 1-4 real ranks is checked by tern_collectives_check under
// mpirun (tests/comm/multiprocess, ctest label multiprocess).
#if defined(TERN_HAVE_MPI)

#include "comm/mpi/mpi_communicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <string>

namespace tern {
namespace {

std::unique_ptr<Communicator> one_rank(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  CommOptions options;
  options.timeout = timeout;
  return make_mpi_communicator(options);
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const CommError& e) {
    return e.what();
  }
  return "";
}

TEST(MpiCommunicator, SendToSelfBeforeRecvDoesNotDeadlock) {
  auto comm = one_rank();
  ASSERT_EQ(comm->size(), 1);
  const Tensor out = Tensor::from({3}, {1, 2, 3});
  Tensor in = Tensor::zeros({3});
  comm->send(out, 0, 5);  // returns before the matching recv is posted
  comm->recv(in, 0, 5);
  EXPECT_EQ(in.f32()[0], 1);
  EXPECT_EQ(in.f32()[2], 3);
}

TEST(MpiCommunicator, SendBufferMayBeReusedOnceSendFinished) {
  auto comm = one_rank();
  Tensor out = Tensor::from({2}, {4, 5});
  comm->send(out, 0, 1);
  out.fill(-1);  // the send finished: the data already left this tensor
  Tensor in = Tensor::zeros({2});
  comm->recv(in, 0, 1);
  EXPECT_EQ(in.f32()[0], 4);
  EXPECT_EQ(in.f32()[1], 5);
}

TEST(MpiCommunicator, ShortMessageIsAnErrorNamingBothLengths) {
  auto comm = one_rank();
  comm->send(Tensor::zeros({7}), 0, 2);
  Tensor in = Tensor::zeros({13});
  const std::string error = error_of([&] { comm->recv(in, 0, 2); });
  EXPECT_NE(error.find("7 elements, expected 13"), std::string::npos) << error;
}

TEST(MpiCommunicator, LongMessageIsAnErrorNotAnOverflow) {
  auto comm = one_rank();
  comm->send(Tensor::zeros({13}), 0, 2);
  Tensor in = Tensor::zeros({7});
  const std::string error = error_of([&] { comm->recv(in, 0, 2); });
  EXPECT_NE(error.find("recv"), std::string::npos) << error;
}

TEST(MpiCommunicator, CountsAboveIntMaxAreRejectedOnTheCallersThread) {
  auto comm = one_rank();
  // Never touched: the allocation stays virtual because validation fails first.
  const Tensor huge = Tensor::empty({int64_t{INT_MAX} + 1}, DType::u8);
  std::string error;
  try {
    comm->send_async(huge, 0, 0);
  } catch (const CommError& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("2147483648 elements exceed MPI's count limit"), std::string::npos) << error;
}

TEST(MpiCommunicator, InvalidArgumentsAreCommErrors) {
  auto comm = one_rank();
  Tensor t = Tensor::zeros({4});
  Tensor bytes = Tensor::zeros({4}, DType::u8);
  EXPECT_NE(error_of([&] { comm->allreduce(bytes, ReduceOp::sum); }), "");
  EXPECT_NE(error_of([&] { comm->recv(t, 1, 0); }), "");
  EXPECT_NE(error_of([&] { comm->send(t, 0, -1); }), "");
  EXPECT_NE(error_of([&] { comm->broadcast(t, 2); }), "");
  Tensor wrong = Tensor::zeros({5});
  EXPECT_NE(error_of([&] { comm->allgather(t, wrong); }), "");
  EXPECT_NE(error_of([&] { comm->allgatherv(t, wrong, {4, 1}); }), "");
  comm->allreduce(t, ReduceOp::sum);  // still usable
}

TEST(MpiCommunicator, RecvThatNeverArrivesTimesOutAndTheCommunicatorRefusesMore) {
  auto comm = one_rank(std::chrono::milliseconds(200));
  Tensor in = Tensor::zeros({3});
  const std::string error = error_of([&] { comm->recv(in, 0, 9); });
  EXPECT_NE(error.find("recv timed out after 200 ms"), std::string::npos) << error;
  EXPECT_NE(error.find("from rank 0"), std::string::npos) << error;
  const std::string later = error_of([&] { comm->barrier(); });
  EXPECT_NE(later.find("barrier refused"), std::string::npos) << later;
}

TEST(MpiCommunicator, SplitWithNegativeColorGivesNoCommunicator) {
  auto comm = one_rank();
  EXPECT_EQ(comm->split(-1, 0), nullptr);
  auto sub = comm->split(3, 0);
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->size(), 1);
  Tensor t = Tensor::from({1}, {2.5f});
  sub->allreduce(t, ReduceOp::avg);
  EXPECT_EQ(t.f32()[0], 2.5f);
}

TEST(MpiCommunicator, ByteCountersCountPointToPointPayload) {
  auto comm = one_rank();
  Tensor t = Tensor::zeros({10});
  comm->send(t, 0, 0);
  comm->recv(t, 0, 0);
  comm->allreduce(t, ReduceOp::sum);  // one rank: nothing moves
  EXPECT_EQ(comm->bytes_sent(), 40u);
  EXPECT_EQ(comm->bytes_received(), 40u);
}

}  // namespace
}  // namespace tern

#endif  // TERN_HAVE_MPI
