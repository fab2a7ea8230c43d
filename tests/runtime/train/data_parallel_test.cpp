#include "runtime/train/data_parallel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "comm/local/local.h"
#include "models/registry.h"
#include "optim/sgd.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/synthetic.h"
#include "runtime/nn/activation.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/loss.h"
#include "runtime/nn/norm.h"
#include "runtime/rng.h"
#include "tests/support/gradcheck.h"
#include "tests/support/recording_communicator.h"
#include "tests/support/replica_state.h"

namespace tern {
namespace {

using testing::random_tensor;
using testing::RecordingCommunicator;

// A failing rank should fail the test in seconds, not after the default five minutes.
CommOptions quick() {
  CommOptions o;
  o.timeout = std::chrono::seconds(30);
  return o;
}

using State = testing::ReplicaState;
using testing::bitwise_equal;
using testing::relative_difference;
using testing::state_of;
using testing::worst_difference;

constexpr uint64_t kInitSeed = 7, kDataSeed = 17;
constexpr int kSteps = 4;
constexpr int64_t kPerRankBatch = 8;

const Dataset& dataset() { return testing::equivalence_dataset(); }

SgdOptions sgd() {
  SgdOptions o;
  o.lr = 0.05f;
  o.momentum = 0.9f;
  return o;
}

// One process, batch = global_batch: the run data parallelism must reproduce.
State train_single(const std::string& model_name, int64_t global_batch) {
  ModelConfig mc;
  mc.seed = kInitSeed;
  auto model = make_model(model_name, mc);
  model->set_input_grad(false);
  Sgd opt(model->params(), sgd());
  DataLoader loader(dataset(), global_batch, /*shuffle=*/true, kDataSeed, /*drop_last=*/true);
  Batch batch;
  Tensor dlogits;
  for (int step = 0; step < kSteps; ++step) {
    EXPECT_TRUE(loader.next(batch));
    opt.zero_grad();
    softmax_cross_entropy(model->forward(batch.x), batch.y, &dlogits);
    model->backward(dlogits);
    opt.step();
  }
  return state_of(*model);
}

// world ranks with per-rank batch kPerRankBatch; every rank starts from a different seed (the
// broadcast must make them one model). Returns each rank's final state.
std::vector<State> train_parallel(const std::string& model_name, int world, bool sync_bn,
                                  GradSyncStats* rank0_stats = nullptr) {
  std::vector<State> states(static_cast<size_t>(world));
  run_local(
      world,
      [&](Communicator& comm) {
        ModelConfig mc;
        mc.seed = kInitSeed + 1000 * static_cast<uint64_t>(comm.rank());
        auto model = make_model(model_name, mc);
        model->set_input_grad(false);
        DataParallelOptions options;
        options.sync_bn = sync_bn;
        DataParallel dp(*model, comm, options);
        Sgd opt(model->params(), sgd());
        DataLoader loader(dataset(), kPerRankBatch, true, kDataSeed, true, Shard{comm.rank(), world});
        Batch batch;
        Tensor dlogits;
        for (int step = 0; step < kSteps; ++step) {
          EXPECT_TRUE(loader.next(batch));
          opt.zero_grad();
          softmax_cross_entropy(dp.forward(batch.x), batch.y, &dlogits);
          dp.backward(dlogits);
          dp.sync_gradients();
          opt.step();
        }
        states[static_cast<size_t>(comm.rank())] = state_of(*model);
        if (comm.rank() == 0 && rank0_stats) *rank0_stats = dp.stats();
      },
      quick());
  return states;
}

// The tolerance of the equivalence tests: the runs differ only in summation order (per-rank
// partial sums, then the average), so after a few steps every tensor agrees to f32 rounding:
// max |difference| <= 1e-5 * max |value|, tensor by tensor (measured: a few 1e-7).
constexpr double kEquivalenceTolerance = 1e-5;

TEST(DataParallel, MlpOnNRanksMatchesOneRankWithTheGlobalBatch) {
  for (int world : {2, 4}) {
    const State single = train_single("mlp", kPerRankBatch * world);
    const std::vector<State> ranks = train_parallel("mlp", world, /*sync_bn=*/false);
    EXPECT_LE(worst_difference(ranks[0], single), kEquivalenceTolerance) << world << " ranks";
    for (int r = 1; r < world; ++r)
      EXPECT_TRUE(bitwise_equal(ranks[r], ranks[0])) << "rank " << r << " of " << world;
  }
}

TEST(DataParallel, CnnWithSyncBatchNormOnNRanksMatchesOneRankWithTheGlobalBatch) {
  for (int world : {2, 4}) {
    const State single = train_single("cnn", kPerRankBatch * world);
    const std::vector<State> ranks = train_parallel("cnn", world, /*sync_bn=*/true);
    // Buffers included: the running statistics must be those of the global batch too.
    EXPECT_LE(worst_difference(ranks[0], single), kEquivalenceTolerance) << world << " ranks";
    for (int r = 1; r < world; ++r)
      EXPECT_TRUE(bitwise_equal(ranks[r], ranks[0])) << "rank " << r << " of " << world;
  }
}

TEST(DataParallel, CnnWithLocalBatchNormIsNotEquivalent) {
  // Per-rank statistics normalise differently; this is why --sync-bn exists (and shows that the
  // equivalence test above can fail).
  const State single = train_single("cnn", kPerRankBatch * 2);
  const std::vector<State> ranks = train_parallel("cnn", 2, /*sync_bn=*/false);
  EXPECT_GT(worst_difference(ranks[0], single), 1e-3);
}

TEST(DataParallel, BroadcastMakesRanksIdenticalFromDifferentSeeds) {
  const int world = 3;
  std::vector<State> before(world), after(world);
  run_local(
      world,
      [&](Communicator& comm) {
        ModelConfig mc;
        mc.seed = 100 + static_cast<uint64_t>(comm.rank());
        auto model = make_model("cnn", mc);
        for (Buffer* b : model->buffers()) b->value.fill(comm.rank());  // running stats differ too
        before[static_cast<size_t>(comm.rank())] = state_of(*model);
        DataParallel dp(*model, comm);
        after[static_cast<size_t>(comm.rank())] = state_of(*model);
      },
      quick());
  EXPECT_FALSE(bitwise_equal(before[1], before[0]));
  for (int r = 0; r < world; ++r) EXPECT_TRUE(bitwise_equal(after[r], before[0])) << "rank " << r;
}

std::unique_ptr<Sequential> mlp_with_hidden(int64_t hidden, bool last_bias = true) {
  Rng rng(1);
  auto net = std::make_unique<Sequential>();
  net->emplace<Linear>(4, hidden, rng);
  net->emplace<ReLU>();
  net->emplace<Linear>(hidden, 2, rng, last_bias);
  return net;
}

// Runs body on every rank and returns what each threw (empty: nothing).
std::vector<std::string> errors_on_each_rank(int world, const std::function<void(Communicator&)>& body) {
  std::vector<std::string> errors(static_cast<size_t>(world));
  run_local(
      world,
      [&](Communicator& comm) {
        try {
          body(comm);
        } catch (const Error& e) {
          errors[static_cast<size_t>(comm.rank())] = e.what();
        }
      },
      quick());
  return errors;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(DataParallel, DifferentParamShapesAcrossRanksAreAnErrorNamingTheParamAndRanks) {
  const auto errors = errors_on_each_rank(2, [](Communicator& comm) {
    auto model = mlp_with_hidden(comm.rank() == 0 ? 8 : 6);
    DataParallel dp(*model, comm);
  });
  for (int r = 0; r < 2; ++r) {
    const std::string& e = errors[static_cast<size_t>(r)];
    EXPECT_TRUE(contains(e, "'0.weight' f32[8, 4]") && contains(e, "'0.weight' f32[6, 4]") &&
                contains(e, "rank 0") && contains(e, "rank 1"))
        << "rank " << r << ": " << e;
  }
}

TEST(DataParallel, AMissingParamOnOneRankIsAnErrorOnEveryRank) {
  const auto errors = errors_on_each_rank(3, [](Communicator& comm) {
    auto model = mlp_with_hidden(8, /*last_bias=*/comm.rank() != 2);
    DataParallel dp(*model, comm);
  });
  for (int r = 0; r < 3; ++r) {
    const std::string& e = errors[static_cast<size_t>(r)];
    EXPECT_TRUE(contains(e, "'2.bias'") && contains(e, "rank 2")) << "rank " << r << ": " << e;
  }
}

// Logs its backward, to place it among the collectives a RecordingCommunicator logs.
class Probe : public Module {
 public:
  Probe(std::string name, std::vector<std::string>& log) : name_(std::move(name)), log_(log) {}
  Tensor forward(const Tensor& x) override { return x; }
  Tensor backward(const Tensor& dy) override {
    log_.push_back("backward " + name_);
    return dy;
  }
  std::string describe() const override { return "Probe"; }

 private:
  std::string name_;
  std::vector<std::string>& log_;
};

TEST(DataParallel, BucketsLaunchDuringBackwardBeforeEarlierLayersRun) {
  std::vector<std::string> log;
  auto single = make_single_communicator();
  RecordingCommunicator comm(*single, log);
  Rng rng(2);
  Sequential net;
  net.add(std::make_unique<Linear>(8, 8, rng));
  net.add(std::make_unique<Probe>("before layer 0", log));
  net.add(std::make_unique<Linear>(8, 8, rng));
  net.add(std::make_unique<Probe>("before layer 2", log));
  net.add(std::make_unique<Linear>(8, 4, rng));
  DataParallelOptions options;
  options.bucket_bytes = 8 * sizeof(float);  // biases share nothing; each weight alone
  DataParallel dp(net, comm, options);
  ASSERT_EQ(dp.grad_sync().bucket_count(), 6u);
  log.clear();
  dp.forward(random_tensor({3, 8}, 1));
  dp.backward(random_tensor({3, 4}, 2));
  log.push_back("backward done");
  dp.sync_gradients();
  const std::vector<std::string> expected = {
      "allreduce 4 avg", "allreduce 32 avg", "backward before layer 2",  // layer 4's buckets
      "allreduce 8 avg", "allreduce 64 avg", "backward before layer 0",  // layer 2's
      "allreduce 8 avg", "allreduce 64 avg", "backward done"};           // layer 0's
  EXPECT_EQ(log, expected);
  EXPECT_EQ(dp.stats().buckets_launched_in_backward, 6);
}

// Uses only its first child in forward: the second's params never get a gradient.
class FirstBranchOnly : public Module {
 public:
  explicit FirstBranchOnly(Rng& rng) : used_(4, 4, rng), unused_(4, 4, rng) {
    register_child("used", used_);
    register_child("unused", unused_);
  }
  Tensor forward(const Tensor& x) override { return used_.forward(x); }
  Tensor backward(const Tensor& dy) override { return used_.run_backward(dy); }
  std::string describe() const override { return "FirstBranchOnly"; }

 private:
  Linear used_, unused_;
};

TEST(DataParallel, AParamUnusedInForwardDoesNotDeadlock) {
  std::vector<State> states(2);
  run_local(
      2,
      [&](Communicator& comm) {
        Rng rng(5);
        Sequential net;
        net.add(std::make_unique<Linear>(4, 4, rng));
        net.add(std::make_unique<FirstBranchOnly>(rng));
        net.add(std::make_unique<Linear>(4, 2, rng));
        DataParallelOptions options;
        options.bucket_bytes = 16 * sizeof(float);  // the unused params sit between used ones
        DataParallel dp(net, comm, options);
        Sgd opt(net.params(), sgd());
        for (int step = 0; step < 3; ++step) {
          opt.zero_grad();
          dp.forward(random_tensor({2, 4}, 10 + static_cast<uint64_t>(comm.rank())));
          dp.backward(random_tensor({2, 2}, 20 + static_cast<uint64_t>(comm.rank())));
          dp.sync_gradients();
          opt.step();
        }
        states[static_cast<size_t>(comm.rank())] = state_of(net);
      },
      quick());
  EXPECT_TRUE(bitwise_equal(states[0], states[1]));
}

TEST(DataParallel, CnnOnTwoRanksOverlapsSomeBucketsWithBackward) {
  GradSyncStats stats;
  train_parallel("cnn", 2, /*sync_bn=*/true, &stats);
  EXPECT_EQ(stats.steps, kSteps);
  EXPECT_GT(stats.buckets_launched_in_backward, 0);
  EXPECT_GT(stats.bytes_sent, 0u);
  std::printf(
      "[ info ] cnn, 2 local ranks, default buckets: %.2f ms communication per step, %.2f ms exposed, "
      "hidden fraction %.2f\n",
      1e3 * stats.comm_seconds / kSteps, 1e3 * stats.exposed_seconds / kSteps, stats.hidden_fraction());
}

// --- Synchronised BatchNorm on its own: N ranks with slices of a batch vs one with all of it.

void check_sync_bn_matches_concatenated_batch(const Shape& shape, int world) {
  const int64_t C = shape[1];
  const Tensor x = random_tensor(shape, 3, -1.0f, 3.0f);
  const Tensor dy = random_tensor(shape, 4);
  const Tensor gamma = random_tensor({C}, 5, 0.5f, 1.5f), beta = random_tensor({C}, 6);
  auto make = [&] {
    auto bn = std::make_unique<BatchNorm2d>(C);
    bn->weight.value.copy_from(gamma);
    bn->bias.value.copy_from(beta);
    return bn;
  };
  auto whole = make();
  const Tensor y = whole->forward(x).clone();
  const Tensor dx = whole->backward(dy).clone();

  const int64_t part = shape[0] / world;
  std::mutex mu;
  run_local(
      world,
      [&](Communicator& comm) {
        auto bn = make();
        bn->set_stats_allreduce(sync_bn_stats_sum(comm));
        const int64_t begin = comm.rank() * part;
        const Tensor my_y = bn->forward(x.slice(begin, begin + part));
        const Tensor my_dx = bn->backward(dy.slice(begin, begin + part));
        // The param grads stay local; their average times world is the single-process grad.
        comm.allreduce(bn->weight.grad, ReduceOp::sum);
        comm.allreduce(bn->bias.grad, ReduceOp::sum);
        std::lock_guard lock(mu);
        EXPECT_LE(relative_difference(my_y, y.slice(begin, begin + part)), 1e-5) << "y, rank " << comm.rank();
        EXPECT_LE(relative_difference(my_dx, dx.slice(begin, begin + part)), 1e-5)
            << "dx, rank " << comm.rank();
        EXPECT_LE(relative_difference(bn->weight.grad, whole->weight.grad), 1e-5) << "dgamma";
        EXPECT_LE(relative_difference(bn->bias.grad, whole->bias.grad), 1e-5) << "dbeta";
        EXPECT_LE(relative_difference(bn->running_mean.value, whole->running_mean.value), 1e-6);
        EXPECT_LE(relative_difference(bn->running_var.value, whole->running_var.value), 1e-6);
      },
      quick());
}

TEST(SyncBatchNorm, MatchesOneProcessOnTheConcatenatedBatch) {
  check_sync_bn_matches_concatenated_batch({8, 3, 5, 5}, 2);
  check_sync_bn_matches_concatenated_batch({8, 3, 5, 5}, 4);
}

TEST(SyncBatchNorm, MatchesOneProcessForFlatInputs) { check_sync_bn_matches_concatenated_batch({12, 70}, 3); }

TEST(SyncBatchNorm, CountsMoreValuesPerChannelThanAnF32HoldsExactly) {
  // 2 x 2900 x 2900 = 16 820 000 values in the channel, past 2^24: the statistics travel in double.
  check_sync_bn_matches_concatenated_batch({2, 1, 2900, 2900}, 2);
}

TEST(SyncBatchNorm, StaysAccurateWhenTheMeanDwarfsTheSpread) {
  // Values 1000 +- 1: sum of squares minus squared mean would lose the variance in f32.
  Tensor x = random_tensor({8, 2, 4, 4}, 9, 999.0f, 1001.0f);
  BatchNorm2d whole(2);
  const Tensor y = whole.forward(x).clone();
  run_local(
      2,
      [&](Communicator& comm) {
        BatchNorm2d bn(2);
        bn.set_stats_allreduce(sync_bn_stats_sum(comm));
        const int64_t begin = comm.rank() * 4;
        EXPECT_LE(relative_difference(bn.forward(x.slice(begin, begin + 4)), y.slice(begin, begin + 4)),
                  1e-4);
      },
      quick());
}

TEST(SyncBatchNorm, OneValuePerChannelOverAllRanksIsAnError) {
  const auto errors = errors_on_each_rank(2, [](Communicator& comm) {
    BatchNorm2d bn(3);
    bn.set_stats_allreduce(sync_bn_stats_sum(comm));
    bn.forward(random_tensor({comm.rank() == 0 ? int64_t{1} : int64_t{0}, 3}, 1));
  });
  for (const std::string& e : errors) EXPECT_TRUE(contains(e, "more than 1 value per channel")) << e;
}

}  // namespace
}  // namespace tern
