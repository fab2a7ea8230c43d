#include "runtime/train/pipeline_checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "comm/local/local.h"
#include "models/registry.h"
#include "optim/sgd.h"
#include "runtime/rng.h"
#include "runtime/train/pipeline.h"
#include "runtime/train/pipeline_partition.h"
#include "tests/support/error_of.h"

namespace tern {
namespace {

// A failing rank should fail the test in seconds, not after the default five minutes.
CommOptions quick() {
  CommOptions o;
  o.timeout = std::chrono::seconds(30);
  return o;
}

using testing::error_of;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Small images keep the MLP small: 16 -> 512 -> 256 -> 10.
std::unique_ptr<Sequential> mlp(uint64_t seed) {
  ModelConfig mc;
  mc.height = 4;
  mc.width = 4;
  mc.seed = seed;
  return make_model("mlp", mc);
}

SgdOptions sgd() {
  SgdOptions o;
  o.lr = 0.05f;
  o.momentum = 0.9f;
  return o;
}

// Gradients that depend only on the param's name and the step, so a stage and the unsplit model
// give each param the same ones.
void fake_gradients(const std::vector<Param*>& params, int step) {
  for (Param* p : params) {
    Rng rng(std::hash<std::string>{}(p->name), static_cast<uint64_t>(step));
    float* g = p->grad.f32();
    for (int64_t i = 0; i < p->grad.numel(); ++i) g[i] = rng.normal();
  }
}

void take_steps(Optimizer& opt, int from, int count) {
  for (int s = from; s < from + count; ++s) {
    opt.zero_grad();
    fake_gradients(opt.params(), s);
    opt.step();
  }
}

using Named = std::map<std::string, Tensor>;

Named by_name(const std::vector<NamedTensor>& tensors) {
  Named out;
  for (const NamedTensor& nt : tensors)
    EXPECT_TRUE(out.emplace(nt.name, nt.value).second) << nt.name << " twice";
  return out;
}

void expect_same(const Named& got, const Named& expected, const char* what) {
  EXPECT_EQ(got.size(), expected.size()) << what;
  for (const auto& [name, t] : expected) {
    const auto it = got.find(name);
    if (it == got.end()) {
      ADD_FAILURE() << what << ": '" << name << "' is missing";
      continue;
    }
    EXPECT_TRUE(same_bytes(it->second, t)) << what << ": '" << name << "' differs";
  }
}

// The unsplit model after `steps` steps: what a data-parallel run would checkpoint.
CheckpointData unsplit_checkpoint(int steps) {
  auto model = mlp(3);
  Sgd opt(model->params(), sgd());
  take_steps(opt, 0, steps);
  CheckpointData data;
  capture_model(*model, data);
  capture_optimizer(opt, data);
  return data;
}

TEST(PipelineCheckpoint, GatheredStagesEqualTheUnsplitModelsCheckpoint) {
  constexpr int kStages = 4, kSteps = 2;
  const CheckpointData expected = unsplit_checkpoint(kSteps);
  std::optional<CheckpointData> gathered;
  int nullopts = 0;
  std::mutex mu;
  run_local(
      kStages,
      [&](Communicator& world) {
        PipelineLayout layout = make_pipeline_layout(world, kStages);
        auto full = mlp(3);
        auto stage = take_stage(*full, partition_by_params(*full, kStages), layout.stage);
        Sgd opt(stage->params(), sgd());
        take_steps(opt, 0, kSteps);
        std::optional<CheckpointData> whole =
            gather_stage_checkpoints(capture_stage(*stage, opt), *layout.pipeline);
        std::lock_guard lock(mu);
        if (layout.stage == 0)
          gathered = std::move(whole);
        else
          nullopts += whole ? 0 : 1;
      },
      quick());
  ASSERT_TRUE(gathered);
  EXPECT_EQ(nullopts, kStages - 1) << "only stage 0 returns the checkpoint";
  EXPECT_EQ(gathered->optimizer_name, "sgd");
  // Bit for bit the unsplit model's tensors and optimizer state, under the same names: the global
  // "step" counter once, every param's ".step" and ".momentum" from its stage.
  expect_same(by_name(gathered->model), by_name(expected.model), "model");
  expect_same(by_name(gathered->optimizer_state), by_name(expected.optimizer_state), "optimizer state");
  EXPECT_TRUE(gathered->compressor.empty());
  // So the unsplit model and its optimizer take it as it is (they refuse missing and extra tensors).
  auto model = mlp(99);
  Sgd opt(model->params(), sgd());
  EXPECT_NO_THROW(restore_model(*model, *gathered));
  EXPECT_NO_THROW(restore_optimizer(opt, *gathered));
}

TEST(PipelineCheckpoint, StagesOfAnotherSplitContinueAsTheUnsplitModel) {
  // Restored into two stages (whatever split wrote it), one more step on each stage gives what one
  // more step of the unsplit model gives: parameters and momentum came back where they belong.
  constexpr int kStages = 2, kSteps = 3;
  const CheckpointData saved = unsplit_checkpoint(kSteps);
  const CheckpointData after = unsplit_checkpoint(kSteps + 1);
  const Named expected_model = by_name(after.model), expected_state = by_name(after.optimizer_state);
  size_t model_seen = 0;
  for (int s = 0; s < kStages; ++s) {
    auto full = mlp(1234);  // other initial values: everything must come from the checkpoint
    const StageBounds bounds = partition_by_params(*full, kStages);
    restore_model(*full, saved);
    auto stage = take_stage(*full, bounds, s);
    Sgd opt(stage->params(), sgd());
    restore_stage_optimizer(opt, saved);
    take_steps(opt, kSteps, 1);
    CheckpointData mine;
    capture_model(*stage, mine);
    capture_optimizer(opt, mine);
    for (const NamedTensor& nt : mine.model) {
      ASSERT_TRUE(expected_model.count(nt.name)) << nt.name;
      EXPECT_TRUE(same_bytes(nt.value, expected_model.at(nt.name))) << "stage " << s << ": " << nt.name;
      ++model_seen;
    }
    for (const NamedTensor& nt : mine.optimizer_state) {
      ASSERT_TRUE(expected_state.count(nt.name)) << nt.name;
      EXPECT_TRUE(same_bytes(nt.value, expected_state.at(nt.name))) << "stage " << s << ": " << nt.name;
    }
  }
  EXPECT_EQ(model_seen, expected_model.size());
}

TEST(PipelineCheckpoint, AStageWithoutItsOptimizerStateIsRefusedNamingTheTensor) {
  CheckpointData saved = unsplit_checkpoint(1);
  std::erase_if(saved.optimizer_state, [](const NamedTensor& nt) { return nt.name == "5.weight.momentum"; });
  auto full = mlp(3);
  auto last = take_stage(*full, partition_by_params(*full, 2), 1);
  Sgd opt(last->params(), sgd());
  const std::string msg = error_of([&] { restore_stage_optimizer(opt, saved); });
  EXPECT_TRUE(contains(msg, "5.weight.momentum")) << msg;
}

TEST(PipelineCheckpoint, MergeRefusesATensorOnTwoStagesAndStagesThatDisagreeOnSteps) {
  CheckpointData a = unsplit_checkpoint(1), b = unsplit_checkpoint(1);
  std::string msg = error_of([&] { merge_stage_checkpoints({a, b}); });
  EXPECT_TRUE(contains(msg, "is on stage 0 and on stage 1")) << msg;

  // Disjoint model tensors, but stage 1 took another number of steps.
  CheckpointData one_step = unsplit_checkpoint(1), two_steps = unsplit_checkpoint(2);
  one_step.model.resize(1);
  two_steps.model.erase(two_steps.model.begin());
  msg = error_of([&] { merge_stage_checkpoints({one_step, two_steps}); });
  EXPECT_TRUE(contains(msg, "differs between stage 0 and stage 1")) << msg;
}

// Two stages x two replicas compressing their gradients with PowerSGD: every replica's state comes
// back to the same replica of the same stage; another number of stages is refused naming both.
TEST(PipelineCheckpoint, CompressorStateReturnsPerStageAndReplica) {
  constexpr int kStages = 2, kReplicas = 2;
  GradCompression compression;
  compression.spec = "powersgd:rank=1";
  std::optional<CheckpointData> whole;
  std::string refused_stages, refused_data_parallel;
  std::mutex mu;
  run_local(
      kStages * kReplicas,
      [&](Communicator& world) {
        PipelineLayout layout = make_pipeline_layout(world, kStages);
        auto full = mlp(3);
        auto stage = take_stage(*full, partition_by_params(*full, kStages), layout.stage);
        Sgd opt(stage->params(), sgd());
        // A value that says whose state it is.
        const auto mark = [&](int64_t i) {
          return static_cast<float>(1000 * layout.stage + 100 * layout.replica + i % 97);
        };
        {
          GradSync sync(stage->params(), *layout.data_parallel, kDefaultBucketBytes, compression);
          ASSERT_TRUE(sync.compressed());
          for (auto& [name, t] : sync.compressor_state())
            for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = mark(i);
          const CheckpointData part = capture_stage(*stage, opt, &sync, layout.data_parallel.get());
          if (layout.replica == 0) {
            std::optional<CheckpointData> got = gather_stage_checkpoints(part, *layout.pipeline);
            std::lock_guard lock(mu);
            if (got) whole = std::move(got);
          } else {
            EXPECT_TRUE(part.model.empty() && part.optimizer_state.empty()) << "only replica 0 contributes";
          }
        }
        world.barrier();  // rank 0 has set `whole`
        GradSync fresh(stage->params(), *layout.data_parallel, kDefaultBucketBytes, compression);
        restore_stage_compressor(fresh, layout.stage, kStages, layout.replica, *whole);
        int64_t checked = 0;
        for (auto& [name, t] : fresh.compressor_state()) {
          for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.f32()[i], mark(i)) << name << "[" << i << "]";
          checked += t.numel();
        }
        EXPECT_GT(checked, 0);
        const std::string stages_msg =
            error_of([&] { restore_stage_compressor(fresh, layout.stage, 4, 0, *whole); });
        CheckpointData data_parallel = *whole;
        data_parallel.compressor = "powersgd:rank=1";
        const std::string dp_msg =
            error_of([&] { restore_stage_compressor(fresh, layout.stage, kStages, 0, data_parallel); });
        std::lock_guard lock(mu);
        if (world.rank() == 0) {
          refused_stages = stages_msg;
          refused_data_parallel = dp_msg;
        }
      },
      quick());
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->compressor.rfind("stage0=powersgd", 0), 0u) << whole->compressor;
  EXPECT_TRUE(contains(whole->compressor, "|stage1=powersgd")) << whole->compressor;
  EXPECT_TRUE(contains(refused_stages, "for 2 pipeline stages, this run has 4")) << refused_stages;
  EXPECT_TRUE(contains(refused_data_parallel, "data-parallel run")) << refused_data_parallel;
}

}  // namespace
}  // namespace tern
