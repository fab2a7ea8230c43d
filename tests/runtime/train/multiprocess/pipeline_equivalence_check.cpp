// Pipeline equivalence as real processes: the world (started by ternrun or mpirun) trains D
// copies of a P-stage pipeline (--pipeline-stages P, world = P x D) with GPipe and 1F1B, M = 8
// micro-batches, and every rank compares its stage's parameters with the unsplit model it trains
// itself: the MLP on the same global batch (to f32 rounding), and the CNN, whose BatchNorm sees
// micro-batches, with the same micro-batches accumulated in one process (bit for bit when D = 1).
// Ends with "N passed, M failed".
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "comm/factory.h"
#include "models/registry.h"
#include "optim/sgd.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/synthetic.h"
#include "runtime/io/flags.h"
#include "runtime/nn/loss.h"
#include "runtime/train/data_parallel.h"
#include "runtime/train/pipeline.h"
#include "runtime/train/pipeline_partition.h"

namespace {

using namespace tern;

constexpr int kSteps = 3, kMicroBatches = 8;
constexpr int64_t kGlobalBatch = 32;
constexpr uint64_t kInitSeed = 7, kDataSeed = 11;
// Other summation orders only (micro-batch GEMMs added up vs one GEMM over the batch, and the
// replicas' average); measured differences are a few 1e-7 of each tensor's largest value.
constexpr double kTolerance = 1e-5;

const Dataset& data() {
  static const Dataset d = make_synthetic(512, {1, 28, 28}, 10, 3, 1);
  return d;
}

SgdOptions sgd() {
  SgdOptions o;
  o.lr = 0.05f;
  o.momentum = 0.9f;
  return o;
}

using Named = std::map<std::string, Tensor>;

Named params_of(Module& m) {
  Named out;
  for (Param* p : m.params()) out[p->name] = p->value.clone();
  return out;
}

// One process on the whole global batch, the gradient accumulated over `micro_batches` slices.
Named train_unsplit(const std::string& name, int micro_batches) {
  ModelConfig mc;
  mc.seed = kInitSeed;
  auto model = make_model(name, mc);
  model->set_input_grad(false);
  Sgd opt(model->params(), sgd());
  DataLoader loader(data(), kGlobalBatch, true, kDataSeed, true);
  Batch b;
  Tensor d;
  const int64_t n = kGlobalBatch / micro_batches;
  for (int s = 0; s < kSteps && loader.next(b); ++s) {
    opt.zero_grad();
    for (int i = 0; i < micro_batches; ++i) {
      const std::vector<int32_t> y(b.y.begin() + i * n, b.y.begin() + (i + 1) * n);
      softmax_cross_entropy(model->forward(b.x.slice(i * n, (i + 1) * n)), y, &d);
      for (int64_t e = 0; e < d.numel(); ++e) d.f32()[e] /= static_cast<float>(micro_batches);
      model->run_backward(d);
    }
    opt.step();
  }
  return params_of(*model);
}

Named train_pipelined(const std::string& name, PipelineLayout& layout, ScheduleKind kind) {
  ModelConfig mc;
  mc.seed = kInitSeed;
  auto full = make_model(name, mc);
  auto stage = take_stage(*full, partition_by_params(*full, layout.stages), layout.stage);
  full.reset();
  std::unique_ptr<DataParallel> dp;
  if (layout.replicas > 1) dp = std::make_unique<DataParallel>(*stage, *layout.data_parallel);
  Sgd opt(stage->params(), sgd());
  PipelineOptions o;
  o.schedule = kind;
  o.micro_batches = kMicroBatches;
  Pipeline pipe(*stage, *layout.pipeline, o, dp ? &dp->grad_sync() : nullptr);
  DataLoader loader(data(), kGlobalBatch, true, kDataSeed, true);
  const int64_t rows = kGlobalBatch / layout.replicas, begin = layout.replica * rows;
  Batch b;
  for (int s = 0; s < kSteps && loader.next(b); ++s) {
    const std::vector<int32_t> y(b.y.begin() + begin, b.y.begin() + begin + rows);
    opt.zero_grad();
    pipe.train_step(pipe.first_stage() ? b.x.slice(begin, begin + rows) : Tensor(),
                    classification_loss(y, kMicroBatches));
    opt.step();
  }
  return params_of(*stage);
}

// Worst relative difference of this stage's params against the reference's same-named ones.
double worst(const Named& mine, const Named& reference, bool* bitwise) {
  double w = 0;
  *bitwise = true;
  for (const auto& [name, t] : mine) {
    const Tensor& r = reference.at(name);
    *bitwise &= std::memcmp(t.raw(), r.raw(), t.nbytes()) == 0;
    double diff = 0, scale = 1e-30;
    for (int64_t i = 0; i < t.numel(); ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(t.f32()[i] - r.f32()[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(r.f32()[i])));
    }
    w = std::max(w, diff / scale);
  }
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f("tern_pipeline_equivalence_check", "Pipeline-parallel equivalence on a real multi-process job.");
  f.add_string("comm", "auto", "communicator backend");
  f.add_int("pipeline-stages", 4, "pipeline stages P (the world size must be a multiple)");
  return run_program(f, argc, argv, [&] {
    omp_set_num_threads(1);
    auto comm = make_communicator(f.get_string("comm"));
    PipelineLayout layout = make_pipeline_layout(*comm, static_cast<int>(f.get_int("pipeline-stages")));
    int passed = 0, failed = 0;
    for (const std::string name : {"mlp", "cnn"}) {
      // The MLP mixes no rows: the pipeline equals the whole batch. The CNN's BatchNorm sees
      // micro-batches: the reference accumulates the same ones (every replica's M).
      const Named reference = train_unsplit(name, name == "mlp" ? 1 : kMicroBatches * layout.replicas);
      const bool exact = name == "cnn" && layout.replicas == 1;
      for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b}) {
        bool bitwise = false;
        const double w = worst(train_pipelined(name, layout, kind), reference, &bitwise);
        // Rank 0 reports the worst over every rank.
        Tensor t = Tensor::from({2}, {static_cast<float>(w), bitwise ? 0.0f : 1.0f});
        comm->allreduce(t, ReduceOp::max);
        const double all_worst = t.f32()[0];
        const bool all_bitwise = t.f32()[1] == 0.0f;
        const bool ok = exact ? all_bitwise : all_worst <= kTolerance;
        if (comm->rank() == 0)
          std::printf("%s, %d stages x %d replicas, %s, M=%d: worst relative difference %.2e (%s) %s\n",
                      name.c_str(), layout.stages, layout.replicas, schedule_name(kind), kMicroBatches,
                      all_worst, exact ? "must be bit-identical" : "limit 1e-05", ok ? "ok" : "FAILED");
        (ok ? passed : failed)++;
      }
    }
    if (comm->rank() == 0)
      std::printf("%d passed, %d failed (%s)\n", passed, failed, comm->backend().c_str());
    return failed == 0 ? 0 : 1;
  });
}
