// Compressed gradient sync inside data-parallel training: lossless settings reproduce one
// process with the global batch (through the sparse-update path too), folded weight decay equals
// the optimizer's, and lossy compressors keep every replica identical.
#include <gtest/gtest.h>

#include "comm/local/local.h"
#include "models/registry.h"
#include "optim/sgd.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/synthetic.h"
#include "runtime/nn/loss.h"
#include "runtime/train/data_parallel.h"
#include "tests/support/replica_state.h"

namespace tern {
namespace {

using testing::ReplicaState;

constexpr uint64_t kInitSeed = 7, kDataSeed = 17;
constexpr int kSteps = 4;
constexpr int64_t kPerRankBatch = 8;

const Dataset& dataset() { return testing::equivalence_dataset(); }

SgdOptions plain_sgd(float weight_decay) {
  SgdOptions o;
  o.lr = 0.05f;
  o.weight_decay = weight_decay;
  return o;
}

ReplicaState train_single(const std::string& model_name, int64_t global_batch, float weight_decay) {
  ModelConfig mc;
  mc.seed = kInitSeed;
  auto model = make_model(model_name, mc);
  model->set_input_grad(false);
  Sgd opt(model->params(), plain_sgd(weight_decay));
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
  return testing::state_of(*model);
}

// Every rank's state after kSteps of compressed data-parallel training. The optimizer gets the
// weight decay unless the compression folds it into the gradient.
std::vector<ReplicaState> train_compressed(const std::string& model_name, int world, GradCompression compression,
                                           float weight_decay, GradSyncStats* stats = nullptr) {
  std::vector<ReplicaState> states(static_cast<size_t>(world));
  CommOptions quick;
  quick.timeout = std::chrono::seconds(30);
  run_local(
      world,
      [&](Communicator& comm) {
        ModelConfig mc;
        mc.seed = kInitSeed;
        auto model = make_model(model_name, mc);
        model->set_input_grad(false);
        DataParallelOptions options;
        options.compression = compression;
        options.bucket_bytes = 256 * 1024;  // several buckets
        DataParallel dp(*model, comm, options);
        Sgd opt(model->params(), plain_sgd(compression.fold_weight_decay != 0 ? 0 : weight_decay));
        DataLoader loader(dataset(), kPerRankBatch, true, kDataSeed, true, Shard{comm.rank(), world});
        Batch batch;
        Tensor dlogits;
        for (int step = 0; step < kSteps; ++step) {
          EXPECT_TRUE(loader.next(batch));
          opt.zero_grad();
          softmax_cross_entropy(dp.forward(batch.x), batch.y, &dlogits);
          dp.backward(dlogits);
          dp.sync_gradients();
          if (compression.keep_sparse) {
            EXPECT_FALSE(dp.grad_sync().sparse_grads().empty());
            opt.step(dp.grad_sync().sparse_grads());
          } else {
            opt.step();
          }
        }
        states[static_cast<size_t>(comm.rank())] = testing::state_of(*model);
        if (comm.rank() == 0 && stats) *stats = dp.stats();
      },
      quick);
  return states;
}

// Lossless compression differs from one process only in summation order (see data_parallel_test).
constexpr double kTolerance = 1e-5;

TEST(CompressedSync, LosslessTopkThroughTheSparseUpdateMatchesOneProcess) {
  for (bool keep_sparse : {false, true}) {
    GradCompression c;
    c.spec = "topk:ratio=1,dense_below=0";
    c.keep_sparse = keep_sparse;
    const auto ranks = train_compressed("mlp", 3, c, 0);
    const ReplicaState single = train_single("mlp", 3 * kPerRankBatch, 0);
    EXPECT_LE(testing::worst_difference(ranks[0], single), kTolerance) << "keep_sparse " << keep_sparse;
    for (int r = 1; r < 3; ++r) EXPECT_TRUE(testing::bitwise_equal(ranks[0], ranks[static_cast<size_t>(r)]));
  }
}

TEST(CompressedSync, FoldedWeightDecayEqualsTheOptimizers) {
  GradCompression c;
  c.spec = "randomk:ratio=1,dense_below=0";
  c.fold_weight_decay = 0.01f;
  c.keep_sparse = true;
  const auto ranks = train_compressed("mlp", 2, c, 0.01f);
  const ReplicaState single = train_single("mlp", 2 * kPerRankBatch, 0.01f);
  EXPECT_LE(testing::worst_difference(ranks[0], single), kTolerance);
}

TEST(CompressedSync, LossyCompressorsKeepReplicasIdenticalAndCountBytes) {
  for (const char* spec : {"dgc:ratio=0.01,warmup_epochs=0", "powersgd:rank=2,start_iter=1", "signsgd:twophase=1",
                           "qsgd:levels=8", "fp16"}) {
    GradCompression c;
    c.spec = spec;
    GradSyncStats stats;
    const auto ranks = train_compressed("cnn", 2, c, 0, &stats);
    // Parameters only: BatchNorm's running statistics are each rank's own (no sync-BN here).
    ReplicaState a = ranks[0], b = ranks[1];
    a.buffers.clear();
    b.buffers.clear();
    EXPECT_TRUE(testing::bitwise_equal(a, b)) << spec;
    EXPECT_EQ(stats.steps, kSteps) << spec;
    EXPECT_GT(stats.bytes_sent, 0u) << spec;
    EXPECT_GT(stats.compression_ratio(), 1.5) << spec;
    EXPECT_GT(stats.compress_seconds, 0.0) << spec;
  }
}

}  // namespace
}  // namespace tern
