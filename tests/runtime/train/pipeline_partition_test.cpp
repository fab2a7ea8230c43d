#include "runtime/train/pipeline_partition.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "comm/local/local.h"
#include "models/registry.h"
#include "runtime/nn/activation.h"
#include "runtime/nn/linear.h"
#include "runtime/rng.h"

namespace tern {
namespace {

double largest_stage(const std::vector<double>& costs, const StageBounds& b) {
  double worst = 0;
  for (size_t s = 0; s + 1 < b.size(); ++s)
    worst = std::max(worst, std::accumulate(costs.begin() + static_cast<std::ptrdiff_t>(b[s]),
                                            costs.begin() + static_cast<std::ptrdiff_t>(b[s + 1]), 0.0));
  return worst;
}

// Every contiguous split into `stages` non-empty groups, by brute force.
double best_by_brute_force(const std::vector<double>& costs, int stages) {
  const size_t n = costs.size();
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> cuts(static_cast<size_t>(stages) + 1);
  cuts.front() = 0;
  cuts.back() = n;
  auto rec = [&](auto&& self, size_t s, size_t from) -> void {
    if (s == static_cast<size_t>(stages)) {
      best = std::min(best, largest_stage(costs, cuts));
      return;
    }
    for (size_t c = from + 1; c + (static_cast<size_t>(stages) - s) <= n; ++c) {
      cuts[s] = c;
      self(self, s + 1, c);
    }
  };
  if (stages == 1) return largest_stage(costs, cuts);
  rec(rec, 1, 0);
  return best;
}

TEST(PipelinePartition, ByCostMinimisesTheLargestStage) {
  Rng rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng.below(10);
    const int stages = 1 + static_cast<int>(rng.below(static_cast<uint32_t>(n)));
    std::vector<double> costs(n);
    for (double& c : costs) c = rng.below(4) == 0 ? 0.0 : static_cast<double>(rng.below(100));
    const StageBounds b = partition_by_cost(costs, stages);
    ASSERT_EQ(b.size(), static_cast<size_t>(stages) + 1);
    EXPECT_NO_THROW(check_stage_bounds(b, n));
    EXPECT_DOUBLE_EQ(largest_stage(costs, b), best_by_brute_force(costs, stages)) << "trial " << trial;
  }
}

TEST(PipelinePartition, TooFewLayersIsAnError) { EXPECT_THROW(partition_by_cost({1, 2}, 3), Error); }

TEST(PipelinePartition, ExplicitSizesParseAndMustCoverTheModel) {
  EXPECT_EQ(parse_stage_sizes("4:3:3:2", 12, 4), (StageBounds{0, 4, 7, 10, 12}));
  EXPECT_THROW(parse_stage_sizes("4:3:3", 12, 4), Error);    // 3 stages listed for 4
  EXPECT_THROW(parse_stage_sizes("4:3:3:1", 12, 4), Error);  // covers 11 of 12
  EXPECT_THROW(parse_stage_sizes("4:x:3:2", 12, 4), Error);
  EXPECT_THROW(parse_stage_sizes("4:0:6:2", 12, 4), Error);  // an empty stage
}

TEST(PipelinePartition, ByParamsBalancesTheMlp) {
  auto model = make_model("mlp", ModelConfig{});  // Flatten, 784x512, ReLU, 512x256, ReLU, 256x10
  const StageBounds b = partition_by_params(*model, 2);
  // The first Linear holds 401920 of 535818 params: it is a stage alone, with Flatten before it.
  EXPECT_EQ(b, (StageBounds{0, 2, 6}));
  const StageBounds four = partition_by_params(*model, 4);
  EXPECT_NO_THROW(check_stage_bounds(four, model->size()));
}

TEST(PipelinePartition, TakeStageKeepsOnlyItsLayersUnderTheirFullModelNames) {
  auto full = make_model("mlp", ModelConfig{});
  std::vector<std::string> names;
  for (Param* p : full->params()) names.push_back(p->name);
  auto model = make_model("mlp", ModelConfig{});
  const StageBounds b{0, 2, 4, 6};
  auto stage = take_stage(*model, b, 1);  // ReLU, Linear(512->256)
  EXPECT_EQ(stage->size(), 2u);
  std::vector<std::string> got;
  for (Param* p : stage->params()) got.push_back(p->name);
  EXPECT_EQ(got, (std::vector<std::string>{"3.weight", "3.bias"}));
  EXPECT_TRUE(stage->input_grad());  // a middle stage sends its input gradient on
  EXPECT_EQ(model->size(), 4u);      // the rest stays behind, to be freed
  auto first = take_stage(*make_model("mlp", ModelConfig{}), b, 0);
  EXPECT_FALSE(first->input_grad());  // nobody needs the data's gradient
}

TEST(PipelinePartition, ByTimeGivesEveryRankTheSameBounds) {
  std::vector<StageBounds> got(3);
  run_local(3, [&](Communicator& comm) {
    Rng rng(1);
    Sequential net;
    // Layer 2 is by far the slowest: it must end up alone in its stage.
    net.emplace<Linear>(64, 64, rng);
    net.emplace<ReLU>();
    net.emplace<Linear>(64, 2048, rng);
    net.emplace<Linear>(2048, 64, rng);
    net.emplace<ReLU>();
    Tensor x = Tensor::full({32, 64}, 0.5);
    got[static_cast<size_t>(comm.rank())] = partition_by_time(net, x, 2, &comm, 3);
  });
  EXPECT_EQ(got[0], got[1]);
  EXPECT_EQ(got[0], got[2]);
  EXPECT_NO_THROW(check_stage_bounds(got[0], 5));
}

}  // namespace
}  // namespace tern
