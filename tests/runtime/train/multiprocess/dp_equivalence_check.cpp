// Data-parallel equivalence as real processes: N ranks x per-rank batch B, started by ternrun or
// mpirun, must end with the parameters one process gets from batch N*B (to f32 rounding), and
// every rank with bit-identical parameters. Checked for an MLP, and for a CNN with sync-BN.
// Rank 0 trains the single-process reference itself. Ends with "N passed, M failed".
// With --compress SPEC the gradients go through that compressor (plain SGD, sparse results applied
// by the sparse-update kernel): ranks must still agree bit for bit, and with --lossless (e.g.
// topk:ratio=1) the result must still equal one process.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "comm/factory.h"
#include "optim/sgd.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/synthetic.h"
#include "runtime/io/flags.h"
#include "runtime/nn/conv.h"
#include "runtime/nn/gelu.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/loss.h"
#include "runtime/nn/norm.h"
#include "runtime/nn/pool.h"
#include "runtime/nn/sequential.h"
#include "runtime/rng.h"
#include "runtime/train/data_parallel.h"

namespace {

using namespace tern;

constexpr int64_t kPerRankBatch = 8;
constexpr int kSteps = 4;
constexpr uint64_t kDataSeed = 11;
// Runs differ only in summation order; measured differences are a few 1e-7 of the largest value.
constexpr double kTolerance = 1e-5;

// An MLP with one hidden layer, and the zoo's cnn with GELU for ReLU and average for max pooling
// (the MLP uses GELU too). Where two runs' rounding differs, a ReLU or a max can switch (a value
// within an ulp of 0, two maxima within an ulp of each other), and one switch moves a gradient by
// far more than rounding: with the zoo's cnn, the first conv's weights of 3 ranks and of one
// process differed by 9e-5 after one such step where the three steps before agreed to 1e-6, and
// which build and which code switched changed with the compiler's flags. Smooth functions keep the
// two runs apart by rounding only.
std::unique_ptr<Sequential> make_net(const std::string& name, uint64_t seed) {
  Rng rng(seed, name == "mlp" ? 1 : 2);
  auto net = std::make_unique<Sequential>();
  int64_t features = 28 * 28;
  if (name == "cnn") {
    int64_t channels = 1, side = 28;
    for (int64_t out : {32, 64}) {
      net->emplace<Conv2d>(channels, out, 3, rng, /*stride=*/1, /*padding=*/1, /*groups=*/1, /*bias=*/false);
      net->emplace<BatchNorm2d>(out);
      net->emplace<GELU>();
      net->emplace<AvgPool2d>(2);
      channels = out;
      side /= 2;
    }
    features = channels * side * side;
  }
  net->emplace<Flatten>();
  net->emplace<Linear>(features, 128, rng);
  net->emplace<GELU>();
  net->emplace<Linear>(128, 10, rng);
  return net;
}

const Dataset& data() {
  static const Dataset d = make_synthetic(512, {1, 28, 28}, 10, 3, 1);
  return d;
}

std::vector<Tensor> snapshot(Module& m) {
  std::vector<Tensor> out;
  for (Param* p : m.params()) out.push_back(p->value.clone());
  for (Buffer* b : m.buffers()) out.push_back(b->value.clone());
  return out;
}

std::string g_compress;  // --compress; empty: plain allreduce

void step(Module& m, Sgd& opt, const Batch& b, DataParallel* dp) {
  Tensor dlogits;
  opt.zero_grad();
  softmax_cross_entropy(m.forward(b.x), b.y, &dlogits);
  m.run_backward(dlogits);
  if (dp) dp->sync_gradients();
  if (dp && !dp->grad_sync().sparse_grads().empty())
    opt.step(dp->grad_sync().sparse_grads());
  else
    opt.step();
}

SgdOptions sgd() {
  SgdOptions o;
  o.lr = 0.05f;
  o.momentum = g_compress.empty() ? 0.9f : 0.0f;  // compressed: sparse updates need plain SGD
  return o;
}

std::vector<Tensor> train_single(const std::string& name, int world) {
  auto model = make_net(name, 0);
  model->set_input_grad(false);
  Sgd opt(model->params(), sgd());
  DataLoader loader(data(), kPerRankBatch * world, true, kDataSeed, true);
  Batch b;
  for (int s = 0; s < kSteps && loader.next(b); ++s) step(*model, opt, b, nullptr);
  return snapshot(*model);
}

std::vector<Tensor> train_parallel(const std::string& name, Communicator& comm, bool sync_bn) {
  // Different starts: the broadcast unifies them.
  auto model = make_net(name, 1000 * static_cast<uint64_t>(comm.rank()));
  model->set_input_grad(false);
  DataParallelOptions o;
  o.sync_bn = sync_bn;
  o.bucket_bytes = 64 << 10;  // several buckets, so overlap and ordering are exercised
  o.compression.spec = g_compress;
  o.compression.keep_sparse = true;
  DataParallel dp(*model, comm, o);
  Sgd opt(model->params(), sgd());
  DataLoader loader(data(), kPerRankBatch, true, kDataSeed, true, Shard{comm.rank(), comm.size()});
  Batch b;
  for (int s = 0; s < kSteps && loader.next(b); ++s) step(*model, opt, b, &dp);
  return snapshot(*model);
}

double worst_relative_difference(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double worst = 0;
  for (size_t t = 0; t < a.size(); ++t) {
    double diff = 0, scale = 1e-30;
    for (int64_t i = 0; i < a[t].numel(); ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(a[t].f32()[i] - b[t].f32()[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(b[t].f32()[i])));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f("tern_dp_equivalence_check", "Data-parallel equivalence on a real multi-process job.");
  f.add_string("comm", "auto", "communicator backend");
  f.add_string("compress", "", "gradient compressor spec (default: none)");
  f.add_bool("lossless", false, "the compressor is lossless: also compare with one process");
  return run_program(f, argc, argv, [&] {
    auto comm = make_communicator(f.get_string("comm"));
    g_compress = f.get_string("compress");
    const bool compare_single = g_compress.empty() || f.get_bool("lossless");
    int passed = 0, failed = 0;
    for (auto [name, sync_bn] : {std::pair<std::string, bool>{"mlp", false}, {"cnn", true}}) {
      std::vector<Tensor> mine = train_parallel(name, *comm, sync_bn);
      // Every rank must hold rank 0's exact bits.
      int64_t differing = 0;
      for (Tensor& t : mine) {
        Tensor theirs = t.clone();
        comm->broadcast(theirs, 0);
        differing += std::memcmp(theirs.raw(), t.raw(), t.nbytes()) != 0;
      }
      Tensor bad = Tensor::empty({1}, DType::i64);
      bad.data<int64_t>()[0] = differing;
      comm->allreduce(bad, ReduceOp::sum);
      const std::string what = name + (sync_bn ? " with sync-BN" : "");
      if (comm->rank() == 0) {
        const bool ranks_agree = bad.data<int64_t>()[0] == 0;
        if (compare_single) {
          const double worst = worst_relative_difference(mine, train_single(name, comm->size()));
          const bool same_as_single = worst <= kTolerance;
          std::printf("%s: %d ranks x batch %lld vs 1 rank x batch %lld: worst relative difference %.2e (limit %.0e) %s\n",
                      what.c_str(), comm->size(), static_cast<long long>(kPerRankBatch),
                      static_cast<long long>(kPerRankBatch * comm->size()), worst, kTolerance,
                      same_as_single ? "ok" : "FAILED");
          (same_as_single ? passed : failed)++;
        }
        std::printf("%s%s: ranks hold identical parameters: %s\n", what.c_str(),
                    g_compress.empty() ? "" : (" with " + g_compress).c_str(), ranks_agree ? "ok" : "FAILED");
        (ranks_agree ? passed : failed)++;
      }
    }
    if (comm->rank() == 0) std::printf("%d passed, %d failed\n", passed, failed);
    Tensor status = Tensor::empty({1}, DType::i64);
    status.data<int64_t>()[0] = failed;
    comm->broadcast(status, 0);
    return status.data<int64_t>()[0] == 0 ? 0 : 1;
  });
}
