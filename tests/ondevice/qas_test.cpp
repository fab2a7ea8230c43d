#include "ondevice/qas.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/kernels/cpu/sparse_update.h"
#include "runtime/rng.h"

namespace tern::ondevice {
namespace {

TEST(Qas, FactorsAreTheInverseSquaredScales) {
  EXPECT_FLOAT_EQ(qas_weight_factor(0.5f), 4.0f);        // s_W^-2
  EXPECT_FLOAT_EQ(qas_bias_factor(0.5f, 0.25f), 64.0f);  // (s_W s_x)^-2 = (1/8)^-2
  EXPECT_FLOAT_EQ(qas_weight_factor(0.01f), 10000.0f);
  EXPECT_FLOAT_EQ(qas_bias_factor(0.01f, 0.1f), 1e6f);
}

TEST(Qas, ScalesEachRowByItsOwnChannelAndOffLeavesGradientsAlone) {
  const std::vector<float> scales = {0.5f, 0.25f, 2.0f};
  const std::vector<int32_t> channels = {2, 0};  // a sparse update of channels 2 and 0, in that order
  std::vector<float> g = {1, 2, 3, 4, 5, 6};     // [2 rows, 3 cols]
  std::vector<float> off = g;
  qas_scale_weight_grad(off.data(), 2, 3, channels.data(), scales.data(), /*enabled=*/false);
  EXPECT_EQ(off, g);
  qas_scale_weight_grad(g.data(), 2, 3, channels.data(), scales.data(), true);
  EXPECT_EQ(g, (std::vector<float>{0.25f, 0.5f, 0.75f, 16, 20, 24}));  // x 2^-2 and x 0.5^-2

  std::vector<float> b = {1, 1, 1};
  qas_scale_bias_grad(b.data(), 3, nullptr, scales.data(), 0.5f, true);  // channels null: row j is channel j
  EXPECT_EQ(b, (std::vector<float>{16, 64, 1}));                         // (s_W * 0.5)^-2
  std::vector<float> b_off = {1, 1, 1};
  qas_scale_bias_grad(b_off.data(), 3, nullptr, scales.data(), 0.5f, false);
  EXPECT_EQ(b_off, (std::vector<float>{1, 1, 1}));
}

// The paper's argument for QAS: the weight-to-gradient norm ratio of the quantised parameters
// equals that of the real ones again, per channel (without QAS it is off by s_W^-2, resp. s_x^-2 s_W^-2).
TEST(Qas, RestoresTheWeightToGradientNormRatioOfFloatTraining) {
  Rng rng(71);
  const int64_t rows = 6, cols = 20;
  const float s_x = 0.037f;
  std::vector<float> s_w(rows), w(rows * cols), g(rows * cols), b(rows), gb(rows);
  for (int64_t r = 0; r < rows; ++r) s_w[static_cast<size_t>(r)] = 0.001f * static_cast<float>(1 << r);
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = rng.normal() * 0.1f;
    g[i] = rng.normal() * 0.01f;
  }
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = rng.normal();
    gb[i] = rng.normal() * 0.1f;
  }
  // Quantised units: W_bar = W / s_W, b_bar = b / (s_W s_x); gradients by the chain rule.
  std::vector<float> w_bar(w.size()), g_bar = g, b_bar(b.size()), gb_bar = gb;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; ++i)
      w_bar[static_cast<size_t>(r * cols + i)] =
          w[static_cast<size_t>(r * cols + i)] / s_w[static_cast<size_t>(r)];
    b_bar[static_cast<size_t>(r)] = b[static_cast<size_t>(r)] / (s_w[static_cast<size_t>(r)] * s_x);
  }
  to_quantized_weight_grad(g_bar.data(), rows, cols, nullptr, s_w.data());
  to_quantized_bias_grad(gb_bar.data(), rows, nullptr, s_w.data(), s_x);
  auto norm = [](const float* p, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(p[i]) * p[i];
    return std::sqrt(s);
  };
  std::vector<float> unscaled = g_bar;
  qas_scale_weight_grad(g_bar.data(), rows, cols, nullptr, s_w.data(), true);
  qas_scale_bias_grad(gb_bar.data(), rows, nullptr, s_w.data(), s_x, true);
  for (int64_t r = 0; r < rows; ++r) {
    const size_t o = static_cast<size_t>(r * cols);
    const double real = norm(&w[o], cols) / norm(&g[o], cols);
    const double qas = norm(&w_bar[o], cols) / norm(&g_bar[o], cols);
    const double raw = norm(&w_bar[o], cols) / norm(&unscaled[o], cols);
    EXPECT_NEAR(qas / real, 1.0, 1e-5) << r;
    EXPECT_NEAR(raw / real, 1.0 / (s_w[static_cast<size_t>(r)] * s_w[static_cast<size_t>(r)]),
                1e-3 / (s_w[static_cast<size_t>(r)] * s_w[static_cast<size_t>(r)]))
        << r;
    const size_t c = static_cast<size_t>(r);
    EXPECT_NEAR((b_bar[c] / gb_bar[c]) / (b[c] / gb[c]), 1.0, 1e-5) << r;
  }
}

// Consequence: SGD on the quantised parameters with QAS takes, in real units, exactly the step
// fp32 SGD takes with the same learning rate — here through the sparse-update kernel.
TEST(Qas, SgdOnQuantisedUnitsWithQasIsFloatSgdInRealUnits) {
  Rng rng(72);
  const int64_t rows = 8, cols = 9;
  const float lr = 0.05f;
  std::vector<float> s_w(rows), w(rows * cols), g(rows * cols);
  for (float& s : s_w) s = 0.002f + 0.01f * rng.uniform();
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = rng.normal() * 0.1f;
    g[i] = rng.normal();
  }
  const std::vector<int32_t> channels = {5, 1, 6};
  // Real units: fp32 SGD on the chosen rows.
  std::vector<float> rows_g;
  for (int32_t c : channels) rows_g.insert(rows_g.end(), g.begin() + c * cols, g.begin() + (c + 1) * cols);
  std::vector<float> w_real = w;
  cpu::sparse_rows_sgd(w_real.data(), cols, channels.data(), 3, rows_g.data(), lr, 0.0f);
  // Quantised units with QAS.
  std::vector<float> w_bar(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i)
      w_bar[static_cast<size_t>(r * cols + i)] =
          w[static_cast<size_t>(r * cols + i)] / s_w[static_cast<size_t>(r)];
  std::vector<float> g_bar = rows_g;
  to_quantized_weight_grad(g_bar.data(), 3, cols, channels.data(), s_w.data());
  qas_scale_weight_grad(g_bar.data(), 3, cols, channels.data(), s_w.data(), true);
  cpu::sparse_rows_sgd(w_bar.data(), cols, channels.data(), 3, g_bar.data(), lr, 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i) {
      const size_t at = static_cast<size_t>(r * cols + i);
      ASSERT_NEAR(w_bar[at] * s_w[static_cast<size_t>(r)], w_real[at], 1e-5f * (1 + std::fabs(w_real[at])))
          << r;
    }
}

}  // namespace
}  // namespace tern::ondevice
