#include "runtime/nn/embedding.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/gradcheck.h"

namespace tern {
namespace {

Tensor ids_tensor(const Shape& shape, const std::vector<int32_t>& values) {
  Tensor t = Tensor::empty(shape, DType::i32);
  for (size_t i = 0; i < values.size(); ++i) t.data<int32_t>()[i] = values[i];
  return t;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Embedding, RowIsTokenRowPlusPositionRow) {
  Rng rng(1);
  Embedding emb(10, 6, 4, rng);
  Tensor y = emb.forward(ids_tensor({2, 3}, {7, 0, 7, 9, 9, 1}));
  ASSERT_EQ(y.shape(), (Shape{2, 3, 4}));
  const int32_t ids[] = {7, 0, 7, 9, 9, 1};
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 3; ++t)
      for (int64_t c = 0; c < 4; ++c)
        EXPECT_FLOAT_EQ(y.f32()[(b * 3 + t) * 4 + c],
                        emb.token.value.f32()[ids[b * 3 + t] * 4 + c] + emb.position.value.f32()[t * 4 + c]);
}

TEST(Embedding, RegistersDecayedTablesWithGpt2Scales) {
  Rng rng(2);
  Embedding emb(200, 64, 32, rng);
  const auto params = emb.params();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0]->name, "wte");
  EXPECT_EQ(params[1]->name, "wpe");
  EXPECT_EQ(params[0]->value.shape(), (Shape{200, 32}));
  EXPECT_EQ(params[1]->value.shape(), (Shape{64, 32}));
  // Sample standard deviations of 6400 and 2048 normals: within 5% of 0.02 and 0.01 (the
  // estimate's relative std is 1/sqrt(2n) < 1.6%, so 5% is over three sigma).
  for (auto [p, want] : {std::pair{params[0], 0.02}, std::pair{params[1], 0.01}}) {
    double sq = 0;
    for (int64_t i = 0; i < p->value.numel(); ++i) sq += double(p->value.f32()[i]) * p->value.f32()[i];
    EXPECT_NEAR(std::sqrt(sq / static_cast<double>(p->value.numel())), want, 0.05 * want) << p->name;
  }
}

TEST(Embedding, AcceptsWholeNumberF32IdsLikeI32) {
  Rng rng(3);
  Embedding emb(5, 4, 3, rng);
  Tensor a = emb.forward(ids_tensor({1, 4}, {4, 0, 2, 2})).clone();
  Tensor b = emb.forward(Tensor::from({1, 4}, {4, 0, 2, 2}));
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a.f32()[i], b.f32()[i]);
  EXPECT_NE(error_of([&] {
              emb.forward(Tensor::from({1, 2}, {1.5f, 0}));
            }).find("not a whole number"),
            std::string::npos);
}

TEST(Embedding, BadIdsAndLongSequencesAreErrorsThatSayWhere) {
  Rng rng(4);
  Embedding emb(5, 4, 3, rng);
  const std::string bad = error_of([&] { emb.forward(ids_tensor({2, 2}, {0, 1, 2, 5})); });
  EXPECT_NE(bad.find("token id 5 at [1, 1]"), std::string::npos) << bad;
  EXPECT_NE(bad.find("[0, 5)"), std::string::npos) << bad;
  const std::string negative = error_of([&] { emb.forward(ids_tensor({1, 2}, {-1, 1})); });
  EXPECT_NE(negative.find("token id -1"), std::string::npos) << negative;
  const std::string longer = error_of([&] { emb.forward(ids_tensor({1, 5}, {0, 0, 0, 0, 0})); });
  EXPECT_NE(longer.find("sequence length 5"), std::string::npos) << longer;
}

TEST(Embedding, GradientsMatchFiniteDifferences) {
  Rng rng(5);
  Embedding emb(6, 5, 4, rng);
  emb.token.value.copy_from(testing::random_tensor({6, 4}, 6));
  testing::GradCheckOptions o;
  o.check_input = false;  // ids are not differentiable
  // Repeated ids (3 three times) check that scatter-add sums their rows.
  testing::check_gradients(emb, ids_tensor({2, 4}, {3, 1, 3, 0, 5, 3, 2, 2}), o);
}

TEST(Embedding, BackwardSumsPositionsOverTheBatchAndReturnsZerosForIds) {
  Rng rng(7);
  Embedding emb(4, 3, 2, rng);
  emb.forward(ids_tensor({2, 3}, {1, 1, 2, 3, 1, 0}));
  Tensor dx = emb.backward(Tensor::full({2, 3, 2}, 1.0));
  EXPECT_EQ(dx.shape(), (Shape{2, 3}));
  for (int64_t i = 0; i < dx.numel(); ++i) EXPECT_EQ(dx.f32()[i], 0.0f);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(emb.position.grad.f32()[i], 2.0f);  // batch of 2
  EXPECT_EQ(emb.token.grad.f32()[1 * 2], 3.0f);                                 // id 1 occurs three times
  EXPECT_EQ(emb.token.grad.f32()[0], 1.0f);
  emb.set_input_grad(false);
  emb.forward(ids_tensor({2, 3}, {1, 1, 2, 3, 1, 0}));
  EXPECT_FALSE(emb.backward(Tensor::full({2, 3, 2}, 1.0)).defined());
}

}  // namespace
}  // namespace tern
