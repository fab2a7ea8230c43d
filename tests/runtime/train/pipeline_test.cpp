#include "runtime/train/pipeline.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
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
#include "runtime/rng.h"
#include "runtime/train/data_parallel.h"
#include "runtime/train/pipeline_partition.h"
#include "tests/support/replica_state.h"

namespace tern {
namespace {

using testing::relative_difference;

// A failing rank should fail the test in seconds, not after the default five minutes.
CommOptions quick() {
  CommOptions o;
  o.timeout = std::chrono::seconds(30);
  return o;
}

constexpr uint64_t kInitSeed = 7, kDataSeed = 17;
constexpr int kSteps = 3;
constexpr int64_t kGlobalBatch = 32;
// The pipeline against one process on the whole batch: the same sums in another order (a
// micro-batch's GEMM, then 8 gradients added up, instead of one GEMM over 32 rows). Measured
// differences are a few 1e-7 of each tensor's largest value.
constexpr double kTolerance = 1e-5;

const Dataset& dataset() { return testing::equivalence_dataset(); }

SgdOptions sgd() {
  SgdOptions o;
  o.lr = 0.05f;
  o.momentum = 0.9f;
  return o;
}

// Runs f with one OpenMP thread on this thread, so sums are in the same order as on the ranks.
template <typename F>
auto single_threaded(F&& f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  auto r = f();
  omp_set_num_threads(before);
  return r;
}

using Named = std::map<std::string, Tensor>;

std::string scientific(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

Named named_params(Module& m) {
  Named out;
  for (Param* p : m.params()) out[p->name] = p->value.clone();
  for (Buffer* b : m.buffers()) out[b->name] = b->value.clone();
  return out;
}

// One process, the whole batch per step; with micro_batches > 1 the gradient of each step is
// accumulated over equal micro-batches (each scaled by 1/M), which is what a pipeline computes
// for models whose layers mix rows (BatchNorm), and the same sums in the same order.
Named train_unsplit(const std::string& model_name, int micro_batches) {
  return single_threaded([&] {
    ModelConfig mc;
    mc.seed = kInitSeed;
    auto model = make_model(model_name, mc);
    model->set_input_grad(false);
    Sgd opt(model->params(), sgd());
    DataLoader loader(dataset(), kGlobalBatch, /*shuffle=*/true, kDataSeed, /*drop_last=*/true);
    Batch batch;
    Tensor dlogits;
    const int64_t n = kGlobalBatch / micro_batches;
    for (int step = 0; step < kSteps; ++step) {
      EXPECT_TRUE(loader.next(batch));
      opt.zero_grad();
      for (int i = 0; i < micro_batches; ++i) {
        const std::vector<int32_t> y(batch.y.begin() + i * n, batch.y.begin() + (i + 1) * n);
        softmax_cross_entropy(model->forward(batch.x.slice(i * n, (i + 1) * n)), y, &dlogits);
        if (micro_batches > 1)
          for (int64_t e = 0; e < dlogits.numel(); ++e) dlogits.f32()[e] /= static_cast<float>(micro_batches);
        model->run_backward(dlogits);
      }
      opt.step();
    }
    return named_params(*model);
  });
}

struct PipelineRun {
  Named params;                   // replica 0's, every stage's params and buffers
  std::vector<Named> replicas;    // per replica, its params (for D > 1)
  std::vector<size_t> peak_held;  // per stage, over the steps
  std::vector<int> peak_in_flight;
  std::vector<double> losses;  // the last stage's, per step (replica 0)
};

// P stages x D replicas as threads; replica d takes rows [d B/D, (d+1) B/D) of each global batch.
PipelineRun train_pipelined(const std::string& model_name, int stages, int replicas,
                            PipelineOptions options) {
  PipelineRun run;
  run.replicas.resize(static_cast<size_t>(replicas));
  run.peak_held.assign(static_cast<size_t>(stages), 0);
  run.peak_in_flight.assign(static_cast<size_t>(stages), 0);
  std::mutex mu;
  run_local(
      stages * replicas,
      [&](Communicator& world) {
        omp_set_num_threads(1);
        PipelineLayout layout = make_pipeline_layout(world, stages);
        ModelConfig mc;
        mc.seed = kInitSeed;
        auto full = make_model(model_name, mc);
        const StageBounds bounds = partition_by_params(*full, stages);
        auto stage = take_stage(*full, bounds, layout.stage);
        full.reset();
        std::unique_ptr<DataParallel> dp;
        if (replicas > 1) dp = std::make_unique<DataParallel>(*stage, *layout.data_parallel);
        Sgd opt(stage->params(), sgd());
        Pipeline pipe(*stage, *layout.pipeline, options, dp ? &dp->grad_sync() : nullptr);
        DataLoader loader(dataset(), kGlobalBatch, /*shuffle=*/true, kDataSeed, /*drop_last=*/true);
        Batch batch;
        const int64_t rows = kGlobalBatch / replicas, begin = layout.replica * rows;
        size_t peak = 0;
        int in_flight = 0;
        std::vector<double> losses;
        for (int step = 0; step < kSteps; ++step) {
          EXPECT_TRUE(loader.next(batch));
          const std::vector<int32_t> y(batch.y.begin() + begin, batch.y.begin() + begin + rows);
          opt.zero_grad();
          const PipelineStepStats st =
              pipe.train_step(pipe.first_stage() ? batch.x.slice(begin, begin + rows) : Tensor(),
                              classification_loss(y, options.micro_batches));
          EXPECT_EQ(st.samples, rows);
          opt.step();
          peak = std::max(peak, st.peak_held_bytes);
          in_flight = std::max(in_flight, st.peak_in_flight);
          losses.push_back(st.loss);
        }
        std::lock_guard lock(mu);
        Named mine = named_params(*stage);
        run.replicas[static_cast<size_t>(layout.replica)].insert(mine.begin(), mine.end());
        if (layout.replica == 0) {
          run.params.insert(mine.begin(), mine.end());
          run.peak_held[static_cast<size_t>(layout.stage)] = peak;
          run.peak_in_flight[static_cast<size_t>(layout.stage)] = in_flight;
          if (pipe.last_stage()) run.losses = losses;
        }
      },
      quick());
  return run;
}

PipelineOptions options(ScheduleKind kind, int micro_batches, bool recompute = false) {
  PipelineOptions o;
  o.schedule = kind;
  o.micro_batches = micro_batches;
  o.recompute = recompute;
  return o;
}

// Worst relative difference over the reference's params (buffers too when with_buffers);
// every one of them must be somewhere in the pipeline's stages.
double worst(const Named& got, const Named& reference, bool with_buffers = true) {
  double w = 0;
  for (const auto& [name, ref] : reference) {
    if (!with_buffers && name.find("running_") != std::string::npos) continue;
    auto it = got.find(name);
    if (it == got.end()) {
      ADD_FAILURE() << name << " is on no stage";
      continue;
    }
    w = std::max(w, relative_difference(it->second, ref));
  }
  return w;
}

bool bitwise_same(const Named& a, const Named& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.nbytes() != t.nbytes() ||
        std::memcmp(it->second.raw(), t.raw(), t.nbytes()) != 0)
      return false;
  }
  return true;
}

TEST(Pipeline, FourStagesEqualTheUnsplitMlpOnTheGlobalBatch) {
  const Named whole = train_unsplit("mlp", 1);
  const Named accumulated = train_unsplit("mlp", 8);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b}) {
    const PipelineRun run = train_pipelined("mlp", 4, 1, options(kind, 8));
    const double w = worst(run.params, whole);
    RecordProperty(std::string("worst_relative_difference_") + schedule_name(kind), scientific(w));
    EXPECT_LE(w, kTolerance) << schedule_name(kind);
    // And exactly what accumulating the same micro-batches in one process gives.
    EXPECT_TRUE(bitwise_same(run.params, accumulated))
        << schedule_name(kind) << ": " << worst(run.params, accumulated);
    ASSERT_EQ(run.losses.size(), static_cast<size_t>(kSteps));
    for (double l : run.losses) EXPECT_TRUE(std::isfinite(l) && l > 0);
  }
}

// BatchNorm normalises each micro-batch with its own statistics (as in GPipe), so the CNN's
// reference accumulates the same micro-batches; running statistics must match too.
TEST(Pipeline, FourStagesEqualTheUnsplitCnnWithTheSameMicroBatches) {
  const Named accumulated = train_unsplit("cnn", 8);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b}) {
    const PipelineRun run = train_pipelined("cnn", 4, 1, options(kind, 8));
    EXPECT_TRUE(bitwise_same(run.params, accumulated))
        << schedule_name(kind) << ": " << worst(run.params, accumulated);
  }
}

TEST(Pipeline, TwoStagesTimesTwoReplicasEqualTheUnsplitModel) {
  const Named whole = train_unsplit("mlp", 1);
  const Named cnn = train_unsplit("cnn", 8);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b}) {
    const PipelineRun run = train_pipelined("mlp", 2, 2, options(kind, 4));
    EXPECT_LE(worst(run.params, whole), kTolerance) << schedule_name(kind);
    EXPECT_TRUE(bitwise_same(run.replicas[0], run.replicas[1])) << "replicas differ";
    // Each replica's running statistics see only its own rows: compare params only.
    const PipelineRun conv = train_pipelined("cnn", 2, 2, options(kind, 4));
    EXPECT_LE(worst(conv.params, cnn, /*with_buffers=*/false), kTolerance) << schedule_name(kind);
  }
}

TEST(Pipeline, RecomputationGivesTheSameParametersWithLessHeld) {
  const PipelineRun kept = train_pipelined("cnn", 4, 1, options(ScheduleKind::gpipe, 8));
  const PipelineRun again = train_pipelined("cnn", 4, 1, options(ScheduleKind::gpipe, 8, /*recompute=*/true));
  EXPECT_TRUE(bitwise_same(again.params, kept.params)) << worst(again.params, kept.params);
  // The convolution stage holds 8 inputs and one micro-batch's caches instead of 8 micro-batches'
  // caches. (A stage whose caches are smaller than its input, e.g. one starting with a ReLU that
  // keeps only its output, holds more with recomputation: the totals are what must shrink.)
  EXPECT_LT(again.peak_held[0], kept.peak_held[0] / 2);
  size_t kept_total = 0, again_total = 0;
  for (size_t s = 0; s < 4; ++s) {
    kept_total += kept.peak_held[s];
    again_total += again.peak_held[s];
  }
  EXPECT_LT(again_total, kept_total / 2);
}

// Every micro-batch holds the same bytes on a stage, so 1F1B's peak is exactly (P - s) / M of
// GPipe's on stage s.
TEST(Pipeline, OneFOneBHoldsStagesMinusRankMicroBatchesOfActivations) {
  constexpr int P = 4, M = 8;
  const PipelineRun gpipe = train_pipelined("mlp", P, 1, options(ScheduleKind::gpipe, M));
  const PipelineRun f1b1 = train_pipelined("mlp", P, 1, options(ScheduleKind::one_f_one_b, M));
  for (int s = 0; s < P; ++s) {
    const auto z = static_cast<size_t>(s);
    EXPECT_EQ(gpipe.peak_in_flight[z], M);
    EXPECT_EQ(f1b1.peak_in_flight[z], P - s);
    EXPECT_EQ(f1b1.peak_held[z] * M, gpipe.peak_held[z] * static_cast<size_t>(P - s)) << "stage " << s;
  }
  // Stage 0 (Flatten alone) caches no tensor; the others do.
  EXPECT_GT(gpipe.peak_held[1] + gpipe.peak_held[2] + gpipe.peak_held[3], 0u);
}

// gpt-tiny (token ids in, logits [n, T, vocab] out; LayerNorm and attention mix no rows of the
// batch) split into 4 stages equals the unsplit model on the global batch.
ModelConfig gpt_config() {
  ModelConfig c;
  c.seed = kInitSeed;
  c.vocab = 16;
  c.seq_len = 8;
  c.d_model = 16;
  c.n_layer = 2;
  c.n_head = 2;
  return c;
}

struct TokenBatch {
  Tensor ids;                    // i32 [B, T]
  std::vector<int32_t> targets;  // B * T
};

std::vector<TokenBatch> token_batches(int64_t batch, const ModelConfig& c) {
  Rng rng(kDataSeed);
  std::vector<TokenBatch> out(kSteps);
  for (TokenBatch& b : out) {
    b.ids = Tensor::empty({batch, c.seq_len}, DType::i32);
    for (int64_t i = 0; i < b.ids.numel(); ++i)
      b.ids.data<int32_t>()[i] = static_cast<int32_t>(rng.below(16));
    for (int64_t i = 0; i < b.ids.numel(); ++i) b.targets.push_back(static_cast<int32_t>(rng.below(16)));
  }
  return out;
}

// Mean cross-entropy over the tokens of logits [n, T, V].
LossResult lm_loss(const Tensor& logits, const std::vector<int32_t>& targets, Tensor* dlogits) {
  Tensor flat;
  const LossResult r = softmax_cross_entropy(logits.reshape({-1, logits.dim(-1)}), targets,
                                             dlogits != nullptr ? &flat : nullptr);
  if (dlogits != nullptr) *dlogits = flat.reshape(logits.shape());
  return r;
}

TEST(Pipeline, FourStagesEqualTheUnsplitGptTiny) {
  const auto names = model_names();
  if (std::find(names.begin(), names.end(), "gpt-tiny") == names.end())
    GTEST_SKIP() << "gpt-tiny not registered";
  const ModelConfig c = gpt_config();
  const auto batches = token_batches(kGlobalBatch, c);
  const Named reference = single_threaded([&] {
    auto model = make_model("gpt-tiny", c);
    model->set_input_grad(false);
    Sgd opt(model->params(), sgd());
    Tensor d;
    for (const TokenBatch& b : batches) {
      opt.zero_grad();
      lm_loss(model->forward(b.ids), b.targets, &d);
      model->run_backward(d);
      opt.step();
    }
    return named_params(*model);
  });
  constexpr int M = 8;
  const int64_t n = kGlobalBatch / M, T = c.seq_len;
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b}) {
    Named got;
    std::mutex mu;
    run_local(
        4,
        [&](Communicator& comm) {
          omp_set_num_threads(1);
          auto full = make_model("gpt-tiny", c);
          auto stage = take_stage(*full, partition_by_params(*full, 4), comm.rank());
          full.reset();
          Sgd opt(stage->params(), sgd());
          Pipeline pipe(*stage, comm, options(kind, M));
          for (const TokenBatch& b : batches) {
            opt.zero_grad();
            pipe.train_step(pipe.first_stage() ? b.ids : Tensor(), [&](const Tensor& out, int i, Tensor* d) {
              const auto y0 = b.targets.begin() + i * n * T;
              return lm_loss(out, std::vector<int32_t>(y0, y0 + n * T), d);
            });
            opt.step();
          }
          std::lock_guard lock(mu);
          Named mine = named_params(*stage);
          got.insert(mine.begin(), mine.end());
        },
        quick());
    const double w = worst(got, reference);
    RecordProperty(std::string("worst_relative_difference_") + schedule_name(kind), scientific(w));
    EXPECT_LE(w, kTolerance) << schedule_name(kind);
  }
}

// A two-stage pipeline of Linear layers as threads, each rank with its own options and layers.
void run_two_stages(const std::function<std::unique_ptr<Sequential>(int)>& make_stage,
                    const std::function<PipelineOptions(int)>& opts) {
  run_local(
      2,
      [&](Communicator& comm) {
        auto stage = make_stage(comm.rank());
        Pipeline pipe(*stage, comm, opts(comm.rank()));
        Tensor x = Tensor::full({8, 4}, 0.25);
        const std::vector<int32_t> y(8, 1);
        pipe.train_step(pipe.first_stage() ? x : Tensor(),
                        classification_loss(y, opts(comm.rank()).micro_batches));
      },
      quick());
}

std::unique_ptr<Sequential> linear_stage(int64_t in, int64_t out) {
  Rng rng(1);
  auto s = std::make_unique<Sequential>();
  s->emplace<Linear>(in, out, rng);
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Pipeline, StagesThatDisagreeOnMicroBatchesFailTheHandshake) {
  const std::string e = error_of([] {
    run_two_stages([](int r) { return r == 0 ? linear_stage(4, 6) : linear_stage(6, 3); },
                   [](int r) { return options(ScheduleKind::one_f_one_b, r == 0 ? 4 : 2); });
  });
  EXPECT_NE(e.find("disagree"), std::string::npos) << e;
  EXPECT_NE(e.find("4 micro-batches"), std::string::npos) << e;
}

TEST(Pipeline, LayersThatDoNotFitNameTheStage) {
  const std::string e = error_of([] {
    run_two_stages([](int r) { return r == 0 ? linear_stage(4, 6) : linear_stage(5, 3); },
                   [](int) { return options(ScheduleKind::gpipe, 2); });
  });
  EXPECT_NE(e.find("pipeline stage 1"), std::string::npos) << e;
  EXPECT_NE(e.find("Linear(5->3)"), std::string::npos) << e;
}

// Returns a gradient of the wrong shape: the gradient handshake must catch it.
class WrongGrad : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x.clone(); }
  Tensor backward(const Tensor& dy) override { return Tensor::zeros({dy.dim(0), dy.dim(1) + 1}); }
  std::string describe() const override { return "WrongGrad"; }
  void swap_forward_state(ForwardState&) override {}
};

TEST(Pipeline, GradientsOfTheWrongShapeFailTheHandshake) {
  const std::string e = error_of([] {
    run_two_stages(
        [](int r) {
          if (r == 0) return linear_stage(4, 6);
          Rng rng(1);
          auto s = std::make_unique<Sequential>();
          s->add(std::make_unique<WrongGrad>());  // [n, 6] in, [n, 7] as its input gradient
          s->emplace<Linear>(6, 3, rng);
          return s;
        },
        [](int) { return options(ScheduleKind::gpipe, 2); });
  });
  EXPECT_NE(e.find("do not fit together"), std::string::npos) << e;
}

// Caches its input without saying so (no swap_forward_state).
class Opaque : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x_ = x; }
  Tensor backward(const Tensor& dy) override { return dy; }
  std::string describe() const override { return "Opaque"; }

 private:
  Tensor x_;
};

TEST(Pipeline, ModulesThatCannotSwapTheirCacheAreRefusedUnlessRecomputed) {
  run_local(1, [](Communicator& comm) {
    Sequential s;
    s.add(std::make_unique<Opaque>());
    try {
      Pipeline pipe(s, comm, options(ScheduleKind::gpipe, 4));
      ADD_FAILURE() << "expected an Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("Opaque does not implement Module::swap_forward_state"),
                std::string::npos)
          << e.what();
    }
    EXPECT_NO_THROW(Pipeline(s, comm, options(ScheduleKind::gpipe, 4, /*recompute=*/true)));
    EXPECT_NO_THROW(Pipeline(s, comm, options(ScheduleKind::gpipe, 1)));  // one in flight
  });
}

TEST(Pipeline, WorldSizeMustBeAMultipleOfTheStages) {
  const std::string e =
      error_of([] { run_local(3, [](Communicator& comm) { make_pipeline_layout(comm, 2); }); });
  EXPECT_NE(e.find("does not divide the world of 3 ranks"), std::string::npos) << e;
}

}  // namespace
}  // namespace tern
