// Conv2dPlan layouts compared: oneDNN's blocked layouts (with NCHW conversions around them) vs
// plain NCHW primitives vs the automatic per-primitive choice, on the models' convolution shapes.
// Times include the conversions, since the API is NCHW. Usage: conv_layouts [--json] [--threads N]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "runtime/kernels/cpu/conv.h"
#include "runtime/rng.h"

namespace {

using namespace tern;
using cpu::Conv2dLayout;
using Clock = std::chrono::steady_clock;

struct Case {
  const char* name;
  Conv2dShape shape;
};

Conv2dShape conv(int64_t n, int64_t c_in, int64_t hw, int64_t c_out, int64_t k, int64_t stride, int64_t pad,
                 int64_t groups = 1) {
  return Conv2dShape{.n = n,
                     .c_in = c_in,
                     .h = hw,
                     .w = hw,
                     .c_out = c_out,
                     .kh = k,
                     .kw = k,
                     .stride_h = stride,
                     .stride_w = stride,
                     .pad_h = pad,
                     .pad_w = pad,
                     .groups = groups};
}

// Best of 5 rounds of the mean over enough calls to fill ~50 ms: the machines here are noisy,
// and the minimum is the most repeatable statistic.
double seconds_per_call(const std::function<void()>& f) {
  f();
  int64_t reps = 1;
  for (auto t0 = Clock::now(); std::chrono::duration<double>(Clock::now() - t0).count() < 0.05; ++reps) f();
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < reps; ++i) f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / reps);
  }
  return best;
}

const char* layout_name(Conv2dLayout l) {
  return l == Conv2dLayout::automatic ? "auto" : l == Conv2dLayout::blocked ? "blocked" : "plain";
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  int threads = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--json] [--threads N]\n", argv[0]);
      return 2;
    }
  }
  omp_set_num_threads(threads);

  const std::vector<Case> cases = {
      {"cnn.conv1", conv(64, 1, 28, 32, 3, 1, 1)},
      {"cnn.conv2", conv(64, 32, 14, 64, 3, 1, 1)},
      {"resnet.16x16", conv(64, 16, 32, 16, 3, 1, 1)},
      {"resnet.16->32/2", conv(64, 16, 32, 32, 3, 2, 1)},
      {"resnet.1x1/2", conv(64, 16, 32, 32, 1, 2, 0)},
      {"resnet.rgb", conv(64, 3, 32, 16, 3, 1, 1)},
      {"mbv2.pw96->24", conv(64, 96, 32, 24, 1, 1, 0)},
      {"mbv2.pw32->192", conv(64, 32, 16, 192, 1, 1, 0)},
      {"mbv2.pw960->160", conv(64, 960, 4, 160, 1, 1, 0)},
      {"mbv2.dw144/2", conv(64, 144, 32, 144, 3, 2, 1, 144)},
      {"mbv2.dw384", conv(64, 384, 8, 384, 3, 1, 1, 384)},
  };
  if (!json)
    std::printf("%-16s %-8s %16s %16s %16s %16s %8s\n", "shape", "layout", "fwd ms (GF/s)", "bwd_data ms",
                "bwd_weights ms", "backward ms", "vs plain");
  for (const Case& c : cases) {
    const Conv2dShape& s = c.shape;
    Rng rng(1);
    std::vector<float> x(static_cast<size_t>(s.x_numel())), w(static_cast<size_t>(s.w_numel())),
        b(static_cast<size_t>(s.c_out), 0.0f), y(static_cast<size_t>(s.y_numel())), dy(y.size()),
        dx(x.size()), dw(w.size()), db(b.size());
    for (float& v : x) v = rng.uniform(-1, 1);
    for (float& v : w) v = rng.uniform(-1, 1);
    for (float& v : dy) v = rng.uniform(-1, 1);
    double plain_total = 0;
    for (Conv2dLayout layout : {Conv2dLayout::plain, Conv2dLayout::blocked, Conv2dLayout::automatic}) {
      cpu::Conv2dPlan plan(s, layout);
      const double t_fwd = seconds_per_call([&] { plan.forward(x.data(), w.data(), b.data(), y.data()); });
      const double t_data = seconds_per_call([&] { plan.backward_data(dy.data(), w.data(), dx.data()); });
      const double t_weights =
          seconds_per_call([&] { plan.backward_weights(x.data(), dy.data(), dw.data(), db.data()); });
      const double t_backward = seconds_per_call(
          [&] { plan.backward(x.data(), dy.data(), w.data(), dx.data(), dw.data(), db.data()); });
      const double total = t_fwd + t_backward;
      if (layout == Conv2dLayout::plain) plain_total = total;
      const double gf = s.flops() / 1e9;
      if (json) {
        std::printf(
            "{\"bench\":\"conv_layouts\",\"shape\":\"%s\",\"layout\":\"%s\",\"threads\":%d,"
            "\"fwd_ms\":%.4f,\"bwd_data_ms\":%.4f,\"bwd_weights_ms\":%.4f,\"backward_ms\":%.4f,"
            "\"fwd_gflops\":%.2f,\"bwd_data_gflops\":%.2f,\"bwd_weights_gflops\":%.2f,"
            "\"speedup_vs_plain\":%.3f}\n",
            c.name, layout_name(layout), threads, t_fwd * 1e3, t_data * 1e3, t_weights * 1e3,
            t_backward * 1e3, gf / t_fwd, gf / t_data, gf / t_weights, plain_total / total);
      } else {
        std::printf("%-16s %-8s %7.3f (%6.1f) %7.3f (%6.1f) %7.3f (%6.1f) %7.3f (%6.1f) %7.2fx\n", c.name,
                    layout_name(layout), t_fwd * 1e3, gf / t_fwd, t_data * 1e3, gf / t_data, t_weights * 1e3,
                    gf / t_weights, t_backward * 1e3, 2 * gf / t_backward, plain_total / total);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}
