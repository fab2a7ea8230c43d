// The compressors as collectives (ranks as threads): every rank ends with the same result, exact
// where the compressor promises exactness, error feedback conserves what was not sent, and the
// awkward cases (empty packets, world size 1, chunks smaller than the world) neither hang nor fail.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "comm/compress/bucket_compressor.h"
#include "comm/compress/compressors.h"
#include "comm/compress/exchange.h"
#include "comm/compress/spec.h"
#include "comm/local/local.h"

namespace tern {
namespace {

CommOptions test_options() {
  CommOptions options;
  options.timeout = std::chrono::seconds(20);  // a broken exchange fails the test, never hangs it
  return options;
}

// Awkward tensors: empty, one element, a small bias, a prime length, a matrix, a 4-D conv weight.
BucketLayout awkward_layout() {
  BucketLayout layout;
  int64_t at = 0;
  const std::vector<std::vector<int64_t>> shapes = {{0}, {1}, {7}, {3001}, {64, 37}, {8, 3, 3, 3}, {1000}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : shapes[i]) n *= d;
    layout.push_back(Segment{"t" + std::to_string(i), at, n, shapes[i]});
    at += n + 5;  // gaps between segments, as alignment padding leaves
  }
  return layout;
}

int64_t extent(const BucketLayout& layout) { return layout.back().offset + layout.back().numel + 5; }

// Rank r's gradient at step s: different on every rank and step, deterministic.
Tensor gradient(const BucketLayout& layout, int rank, int step) {
  Tensor g = Tensor::zeros({extent(layout)});
  Rng rng(1234 + static_cast<uint64_t>(step), static_cast<uint64_t>(rank));
  for (const Segment& s : layout)
    for (int64_t i = 0; i < s.numel; ++i) g.f32()[s.offset + i] = rng.normal();
  return g;
}

Tensor mean_gradient(const BucketLayout& layout, int world, int step) {
  Tensor m = Tensor::zeros({extent(layout)});
  for (int r = 0; r < world; ++r) {
    const Tensor g = gradient(layout, r, step);
    for (int64_t i = 0; i < m.numel(); ++i) m.f32()[i] += g.f32()[i] / static_cast<float>(world);
  }
  return m;
}

// Runs `steps` reductions of `spec` on `world` ranks; returns every rank's result of every step.
std::vector<std::vector<Tensor>> run_spec(const std::string& spec, int world, int steps, bool sparse_out = false) {
  const BucketLayout layout = awkward_layout();
  std::vector<std::vector<Tensor>> results(static_cast<size_t>(world));
  run_local(
      world,
      [&](Communicator& comm) {
        BucketCompressor c(spec, layout, CompressorContext{comm.rank(), comm.size(), 7, 0});
        for (int s = 0; s < steps; ++s) {
          Tensor g = gradient(layout, comm.rank(), s);
          SparseVector sparse;
          c.reduce(g, comm, StepInfo{s, 10}, sparse_out ? &sparse : nullptr);
          if (sparse_out && c.sparse_result()) densify(sparse, 1.0f, c.compressed_layout(), g.f32());
          results[static_cast<size_t>(comm.rank())].push_back(g);
        }
      },
      test_options());
  return results;
}

float max_abs_diff_in_layout(const Tensor& a, const Tensor& b) {
  float worst = 0;
  for (const Segment& s : awkward_layout())
    for (int64_t i = 0; i < s.numel; ++i)
      worst = std::max(worst, std::abs(a.f32()[s.offset + i] - b.f32()[s.offset + i]));
  return worst;
}

const char* kAllSpecs[] = {
    "none",          "fp16",          "bf16",         "topk:ratio=0.05",           "randomk:ratio=0.05",
    "randomk:ratio=0.05,unbiased=1",  "dgc:ratio=0.01,warmup_epochs=0",          "qsgd:levels=16",
    "qsgd:levels=4,twophase=1",       "terngrad",     "terngrad:twophase=1",       "signsgd",
    "signsgd:twophase=1",             "onebit",       "onebit:twophase=1",         "powersgd:rank=2,start_iter=1",
};

TEST(Compressors, EveryRankEndsWithTheSameResult) {
  for (const char* spec : kAllSpecs) {
    for (int world : {1, 2, 3, 4}) {
      const auto results = run_spec(spec, world, 3);
      for (int s = 0; s < 3; ++s) {
        for (int r = 1; r < world; ++r) {
          const Tensor& a = results[0][static_cast<size_t>(s)];
          const Tensor& b = results[static_cast<size_t>(r)][static_cast<size_t>(s)];
          ASSERT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0)
              << spec << " world " << world << " step " << s << ": rank " << r << " differs from rank 0";
        }
        // Nothing is NaN or infinite.
        for (int64_t i = 0; i < results[0][static_cast<size_t>(s)].numel(); ++i)
          ASSERT_TRUE(std::isfinite(results[0][static_cast<size_t>(s)].f32()[i])) << spec << " world " << world;
      }
    }
  }
}

TEST(Compressors, SparseOutputDensifiesToTheDenseResult) {
  for (const char* spec : {"topk:ratio=0.05", "randomk:ratio=0.05", "dgc:ratio=0.01,warmup_epochs=0"}) {
    const auto dense = run_spec(spec, 3, 2, false);
    const auto sparse = run_spec(spec, 3, 2, true);
    for (int s = 0; s < 2; ++s)
      EXPECT_LE(max_abs_diff_in_layout(dense[0][static_cast<size_t>(s)], sparse[0][static_cast<size_t>(s)]), 1e-6f) << spec;
  }
}

TEST(Compressors, LosslessSettingsGiveTheExactAverage) {
  // ratio=1 sends everything; dense_below larger than every tensor sends everything dense.
  for (const char* spec : {"none", "topk:ratio=1", "randomk:ratio=1", "qsgd:levels=4,dense_below=100000",
                           "powersgd:rank=2,start_iter=5"}) {
    for (int world : {1, 3, 4}) {
      const auto results = run_spec(spec, world, 2);
      for (int s = 0; s < 2; ++s) {
        const float err = max_abs_diff_in_layout(results[0][static_cast<size_t>(s)], mean_gradient(awkward_layout(), world, s));
        EXPECT_LE(err, 2e-6f) << spec << " world " << world << " step " << s;
      }
    }
  }
}

TEST(Compressors, HalfPrecisionIsExactForRepresentableValues) {
  // Small integers and their averages over 4 ranks are exact in f16 and bf16.
  for (const char* spec : {"fp16", "bf16"}) {
    const BucketLayout layout = {Segment{"w", 0, 4096, {4096}}};
    run_local(4, [&](Communicator& comm) {
      BucketCompressor c(spec, layout, CompressorContext{comm.rank(), comm.size(), 0, 0});
      Tensor g = Tensor::empty({4096});
      for (int64_t i = 0; i < 4096; ++i) g.f32()[i] = static_cast<float>((i % 64) - 32 + 4 * comm.rank());
      c.reduce(g, comm, StepInfo{}, nullptr);
      for (int64_t i = 0; i < 4096; ++i) ASSERT_EQ(g.f32()[i], static_cast<float>((i % 64) - 32 + 6)) << spec << " at " << i;
    });
  }
}

// With one rank the average is what this rank sent, so error feedback's promise reads:
// result + new residual = gradient + old residual.
TEST(Compressors, ErrorFeedbackConservesWhatWasNotSent) {
  const BucketLayout layout = {Segment{"w", 0, 5000, {5000}}};
  for (const char* spec : {"topk:ratio=0.01", "randomk:ratio=0.02", "signsgd", "onebit"}) {
    auto comm = make_single_communicator();
    BucketCompressor c(spec, layout, CompressorContext{});
    Tensor old_residual = Tensor::zeros({5000});
    for (int s = 0; s < 3; ++s) {
      Tensor g = gradient(layout, 0, s);
      const Tensor input = g.clone();
      c.reduce(g, *comm, StepInfo{s, 0}, nullptr);
      const StateTensors state = c.state();
      ASSERT_FALSE(state.empty()) << spec;
      const Tensor& residual = state[0].second;
      for (int64_t i = 0; i < 5000; ++i) {
        const float lhs = g.f32()[i] + residual.f32()[i], rhs = input.f32()[i] + old_residual.f32()[i];
        ASSERT_NEAR(lhs, rhs, 1e-5f * (1 + std::abs(rhs))) << spec << " step " << s << " at " << i;
      }
      old_residual = residual.clone();
    }
  }
}

TEST(Compressors, RanksThatSelectNothingDoNotHang) {
  // DGC never selects zeros: ranks 1 and 3 have zero gradients and send empty packets.
  const BucketLayout layout = {Segment{"w", 0, 20000, {20000}}};
  std::vector<Tensor> out(4);
  run_local(
      4,
      [&](Communicator& comm) {
        BucketCompressor c("dgc:ratio=0.001,momentum=0,warmup_epochs=0", layout,
                           CompressorContext{comm.rank(), comm.size(), 0, 0});
        Tensor g = comm.rank() % 2 ? Tensor::zeros({20000}) : gradient(layout, comm.rank(), 0);
        SparseVector sparse;
        c.reduce(g, comm, StepInfo{}, &sparse);
        out[static_cast<size_t>(comm.rank())] = Tensor::from({static_cast<int64_t>(sparse.size())}, sparse.values);
      },
      test_options());
  EXPECT_GT(out[0].numel(), 0);
  for (int r = 1; r < 4; ++r) EXPECT_EQ(out[static_cast<size_t>(r)].numel(), out[0].numel());
}

TEST(Compressors, TwoPhaseWorksWhenChunksAreEmpty) {
  // 2 elements over 4 ranks: two ranks own no chunk.
  const BucketLayout layout = {Segment{"w", 0, 2, {2}}};
  run_local(
      4,
      [&](Communicator& comm) {
        BucketCompressor c("signsgd:twophase=1,dense_below=0", layout, CompressorContext{comm.rank(), comm.size(), 0, 0});
        Tensor g = Tensor::from({2}, {1.0f, -2.0f});
        c.reduce(g, comm, StepInfo{}, nullptr);
        // Each element is a one-element chunk with its own scale mean|x| = |x|, so sign·scale is
        // exact in both phases, and every rank sent the same values.
        EXPECT_FLOAT_EQ(g.f32()[0], 1.0f);
        EXPECT_FLOAT_EQ(g.f32()[1], -2.0f);
      },
      test_options());
}

TEST(Compressors, AccountingCountsTheWire) {
  const BucketLayout layout = {Segment{"w", 0, 100000, {100000}}};
  std::vector<CompressStats> stats(2);
  for (const char* spec : {"none", "topk:ratio=0.01"}) {
    run_local(2, [&](Communicator& comm) {
      BucketCompressor c(spec, layout, CompressorContext{comm.rank(), comm.size(), 0, 0});
      Tensor g = gradient(layout, comm.rank(), 0);
      c.reduce(g, comm, StepInfo{}, nullptr);
      if (comm.rank() == 0) stats[std::string(spec) == "none" ? 0 : 1] = c.stats();
    });
  }
  // Dense: a ring allreduce of 400 KB over 2 ranks sends 400 KB per rank, as bytes_dense says.
  EXPECT_EQ(stats[0].bytes_dense, 400000u);
  EXPECT_NEAR(static_cast<double>(stats[0].bytes_sent), 400000.0, 1000.0);
  // top-1%: 1000 entries ~100 apart: a 1-2 byte varint index and a 4-byte value each, a 4-byte
  // count, and the 8-byte size exchange.
  EXPECT_GE(stats[1].bytes_sent, 5000u + 4u + 8u);
  EXPECT_LE(stats[1].bytes_sent, 6000u + 4u + 8u);
  EXPECT_GE(stats[1].ratio(), 400000.0 / 6012.0);
}

TEST(SparsePacket, RoundTripsAndRefusesCorruption) {
  SparseVector v;
  v.indices = {0, 5, 127, 128, 100000, 2000000000, 3};  // unsorted tail: negative delta
  v.values = {1, -2, 3, -4, 5, -6, 7};
  std::vector<uint8_t> packet;
  encode_sparse_packet(v, packet);
  SparseVector back;
  decode_sparse_packet(packet.data(), packet.size(), 0, back);
  EXPECT_EQ(back.indices, v.indices);
  EXPECT_EQ(back.values, v.values);
  SparseVector empty, got;
  encode_sparse_packet(empty, packet);
  EXPECT_EQ(packet.size(), 4u);
  decode_sparse_packet(packet.data(), packet.size(), 0, got);
  EXPECT_EQ(got.size(), 0u);
  // Truncated, padded, and with an inflated count: refused, naming the rank.
  encode_sparse_packet(v, packet);
  for (size_t cut : {size_t{2}, packet.size() - 1}) {
    try {
      decode_sparse_packet(packet.data(), cut, 3, got);
      ADD_FAILURE() << "a packet cut to " << cut << " bytes was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rank 3"), std::string::npos) << e.what();
    }
  }
  // f16 values: half the value bytes, values rounded to f16 (these are exact in f16).
  std::vector<uint8_t> half;
  encode_sparse_packet(v, half, /*fp16_values=*/true);
  EXPECT_EQ(half.size(), packet.size() - 2 * v.size());
  SparseVector from_half;
  decode_sparse_packet(half.data(), half.size(), 0, from_half);
  EXPECT_EQ(from_half.values, v.values);
  packet.push_back(0);
  EXPECT_THROW(decode_sparse_packet(packet.data(), packet.size(), 1, got), Error);
  packet.pop_back();
  packet[0] = 0xff;
  EXPECT_THROW(decode_sparse_packet(packet.data(), packet.size(), 1, got), Error);
}

TEST(CompressorSpec, ParsesAndRefusesWhatIsWrong) {
  CompressorSpec s = CompressorSpec::parse("dgc:ratio=0.001,warmup_epochs=4");
  EXPECT_EQ(s.name(), "dgc");
  EXPECT_DOUBLE_EQ(s.get_double("ratio", 1, 0, 1), 0.001);
  EXPECT_EQ(s.get_int("warmup_epochs", 0, 0, 10), 4);
  EXPECT_NO_THROW(s.check_all_used());
  EXPECT_THROW(CompressorSpec::parse(""), Error);
  EXPECT_THROW(CompressorSpec::parse("topk:ratio"), Error);
  EXPECT_THROW(CompressorSpec::parse("topk:ratio=1,ratio=2"), Error);
  for (const char* bad : {"bogus", "topk:ratoi=0.1", "topk:ratio=0", "topk:ratio=2", "topk:ratio=abc",
                          "qsgd:levels=0", "powersgd:rank=0", "signsgd:ef=maybe", "dgc:momentum=1"}) {
    EXPECT_THROW(check_compressor_spec(bad), Error) << bad;
  }
  for (const char* good : {"none", "fp16", "bf16", "auto", "topk:ratio=0.01", "randomk:ratio=0.1,unbiased=1",
                           "dgc:ratio=0.001,momentum=0.9,clip=5,warmup_epochs=4", "qsgd:levels=16,twophase=1",
                           "terngrad", "signsgd:ef=1", "onebit:dense_below=0", "powersgd:rank=2,start_iter=10,min_ratio=2,warm_start=0"}) {
    EXPECT_NO_THROW(check_compressor_spec(good)) << good;
  }
  try {
    check_compressor_spec("topk:ratoi=0.1");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("known: dense_below, ratio"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

// Error feedback's long-run promise across ranks: what arrives, summed over steps, tracks the sum
// of the true averages; the difference is what the residuals hold, which stays bounded, so the
// per-step mean error shrinks like 1/steps. Checked as: after 200 steps the mean of the results is
// within 5% (relative L2) of the mean of the true averages.
TEST(Compressors, ErrorFeedbackTracksTheAverageOverManySteps) {
  const BucketLayout layout = {Segment{"w", 0, 4000, {4000}}};
  constexpr int kSteps = 200;
  for (const char* spec : {"signsgd", "signsgd:twophase=1", "onebit", "onebit:twophase=1", "topk:ratio=0.05",
                           "dgc:ratio=0.05,momentum=0,warmup_epochs=0", "qsgd:levels=64,twophase=1,ef=1"}) {
    for (int world : {1, 3, 4}) {
      std::vector<double> got(4000, 0.0), want(4000, 0.0);
      run_local(
          world,
          [&](Communicator& comm) {
            BucketCompressor c(spec, layout, CompressorContext{comm.rank(), comm.size(), 3, 0});
            for (int s = 0; s < kSteps; ++s) {
              Tensor g = gradient(layout, comm.rank(), s % 7);  // a recurring pattern, different per rank
              c.reduce(g, comm, StepInfo{s, 0}, nullptr);
              if (comm.rank() == 0)
                for (int64_t i = 0; i < 4000; ++i) got[static_cast<size_t>(i)] += g.f32()[i];
            }
          },
          test_options());
      for (int s = 0; s < kSteps; ++s) {
        const Tensor m = mean_gradient(layout, world, s % 7);
        for (int64_t i = 0; i < 4000; ++i) want[static_cast<size_t>(i)] += m.f32()[i];
      }
      double diff = 0, norm = 0;
      for (size_t i = 0; i < 4000; ++i) {
        diff += (got[i] - want[i]) * (got[i] - want[i]);
        norm += want[i] * want[i];
      }
      EXPECT_LE(std::sqrt(diff / norm), 0.05) << spec << " world " << world;
    }
  }
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

// Unbiased random-k: each entry is kept with probability k/n and scaled by n/k, so the mean of T
// compressions of the same gradient converges to it; E||mean - g||^2 = (n/k - 1)/T · ||g||^2,
// i.e. a relative L2 error of sqrt(9/2000) = 0.067 here. Bound: 0.1.
TEST(Compressors, UnbiasedRandomKAveragesToTheInput) {
  const BucketLayout layout = {Segment{"w", 0, 2000, {2000}}};
  auto comm = make_single_communicator();
  BucketCompressor c("randomk:ratio=0.1,unbiased=1", layout, CompressorContext{});
  const Tensor g = gradient(layout, 0, 0);
  std::vector<double> sum(2000, 0.0);
  constexpr int kTrials = 2000;
  for (int s = 0; s < kTrials; ++s) {
    Tensor x = g.clone();
    c.reduce(x, *comm, StepInfo{s, 0}, nullptr);
    for (int64_t i = 0; i < 2000; ++i) sum[static_cast<size_t>(i)] += x.f32()[i];
  }
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    const double mean = sum[static_cast<size_t>(i)] / kTrials, want = g.f32()[i];
    diff += (mean - want) * (mean - want);
    norm += want * want;
  }
  EXPECT_LE(std::sqrt(diff / norm), 0.1);
  EXPECT_GE(std::sqrt(diff / norm), 0.03);  // and it is random: not the input every time
}

}  // namespace
}  // namespace tern
