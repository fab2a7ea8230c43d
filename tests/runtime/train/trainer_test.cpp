#include "runtime/train/trainer.h"

#include <gtest/gtest.h>

#include <cstring>

#include "models/registry.h"
#include "optim/sgd.h"
#include "runtime/data/synthetic.h"

namespace tern {
namespace {

struct TrainRun {
  std::vector<double> losses;
  double test_accuracy = 0;
  std::vector<Tensor> params;
};

TrainRun train_small(const std::string& model_name, uint64_t seed, int epochs) {
  const Dataset train = make_synthetic(2048, {1, 28, 28}, 10, /*seed=*/5, /*sample_seed=*/1);
  const Dataset test = make_synthetic(256, {1, 28, 28}, 10, /*seed=*/5, /*sample_seed=*/2);
  ModelConfig mc;
  mc.seed = seed;
  auto model = make_model(model_name, mc);
  SgdOptions so;
  so.lr = 0.01f;
  so.momentum = 0.9f;
  Sgd opt(model->params(), so);
  Trainer trainer(*model, opt, nullptr);
  DataLoader loader(train, 32, true, seed);
  TrainRun r;
  for (int e = 0; e < epochs; ++e) {
    loader.start_epoch(e);
    r.losses.push_back(trainer.train_epoch(loader).loss);
  }
  r.test_accuracy = trainer.evaluate(test, 100).accuracy;
  for (Param* p : model->params()) r.params.push_back(p->value.clone());
  return r;
}

TEST(Trainer, MlpLearnsASyntheticTask) {
  const TrainRun r = train_small("mlp", 1, 2);
  EXPECT_LT(r.losses.back(), 0.5 * r.losses.front());
  EXPECT_GT(r.test_accuracy, 0.85);  // chance is 0.1
}

TEST(Trainer, CnnLearnsASyntheticTask) {
  const TrainRun r = train_small("cnn", 1, 2);
  EXPECT_LT(r.losses.back(), 0.5 * r.losses.front());
  EXPECT_GT(r.test_accuracy, 0.85);
}

TEST(Trainer, SameSeedGivesBitIdenticalParameters) {
  const TrainRun a = train_small("cnn", 3, 1), b = train_small("cnn", 3, 1), c = train_small("cnn", 4, 1);
  ASSERT_EQ(a.params.size(), b.params.size());
  bool differs_from_c = false;
  for (size_t i = 0; i < a.params.size(); ++i) {
    EXPECT_EQ(std::memcmp(a.params[i].raw(), b.params[i].raw(), a.params[i].nbytes()), 0) << "param " << i;
    differs_from_c |= std::memcmp(a.params[i].raw(), c.params[i].raw(), a.params[i].nbytes()) != 0;
  }
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_TRUE(differs_from_c);
}

}  // namespace
}  // namespace tern
