#include "comm/compress/auto_select.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "comm/compress/bucket_compressor.h"
#include "comm/compress/exchange.h"
#include "comm/compress/powersgd.h"
#include "comm/compress/spec.h"
#include "comm/local/local.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

// Median seconds of `reps` runs of op, after one warm-up run.
template <typename F>
double median_seconds(int reps, F&& op) {
  op();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    op();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[static_cast<size_t>(reps / 2)];
}

// The slowest rank's value: every rank must reach the same decision.
double slowest(Communicator& comm, double seconds) {
  Tensor t = Tensor::from({1}, {static_cast<float>(seconds)});
  comm.allreduce(t, ReduceOp::max);
  return t.f32()[0];
}

constexpr int64_t kSmall = 1024, kLarge = 1 << 20;  // floats: 4 KB and 4 MB

}  // namespace

LinkModel measure_link(Communicator& comm) {
  LinkModel link;
  if (comm.size() == 1) return link;
  const int p = comm.size();
  auto fit = [&](auto&& run, double small_bytes, double large_bytes, double& alpha, double& beta) {
    const double ts = slowest(comm, median_seconds(7, [&] { run(kSmall); }));
    const double tl = slowest(comm, median_seconds(3, [&] { run(kLarge); }));
    beta = std::max(0.0, (tl - ts) / (large_bytes - small_bytes));
    alpha = std::max(0.0, ts - beta * small_bytes);
  };
  fit(
      [&](int64_t n) {
        Tensor t = Tensor::zeros({n});
        comm.allreduce(t, ReduceOp::sum);
      },
      4.0 * kSmall, 4.0 * kLarge, link.allreduce_alpha, link.allreduce_beta);
  fit(
      [&](int64_t n) {
        const int64_t each = n / p;
        Tensor in = Tensor::zeros({each}), out = Tensor::zeros({each * p});
        comm.allgather(in, out);
      },
      4.0 * static_cast<double>(kSmall / p * p), 4.0 * static_cast<double>(kLarge / p * p), link.allgather_alpha,
      link.allgather_beta);
  return link;
}

std::vector<std::string> auto_candidates() {
  // DGC without its own momentum: under auto the optimizer keeps its momentum (it cannot know in
  // advance which buckets go sparse), so DGC here is top-k with error feedback and its sampled
  // selection, with a one-epoch warm-up. Costs are predicted for the steady state after it.
  return {"none", "fp16", "powersgd:rank=2", "dgc:ratio=0.001,momentum=0,warmup_epochs=1"};
}

AutoChoice choose(const LinkModel& link, std::vector<CandidateCost> candidates) {
  AutoChoice choice;
  for (CandidateCost& c : candidates) {
    double t = c.compute_seconds;
    for (double b : c.allreduce_bytes) t += link.allreduce(b);
    for (double b : c.allgather_bytes) t += link.allgather(b);
    c.predicted_seconds = t;
  }
  choice.candidates = std::move(candidates);
  for (size_t i = 1; i < choice.candidates.size(); ++i)
    if (choice.candidates[i].predicted_seconds < choice.candidates[choice.chosen].predicted_seconds) choice.chosen = i;
  return choice;
}

CandidateCost cost_candidate(const std::string& spec, const BucketLayout& layout, int world) {
  CandidateCost cost;
  cost.spec = spec;
  const CompressorSpec parsed = CompressorSpec::parse(spec);
  // Compute: the compressor on one rank (no wire), on a random gradient of the bucket's layout.
  int64_t extent = 0;
  for (const Segment& s : layout) extent = std::max(extent, s.offset + s.numel);
  Tensor g = Tensor::empty({extent});
  Rng rng(99);
  for (int64_t i = 0; i < extent; ++i) g.f32()[i] = rng.normal();
  auto one = make_single_communicator();
  // world matters for DGC's clipping and two-phase chunking only; the compute is per rank.
  BucketCompressor c(spec, layout, CompressorContext{0, 1, 0, 0});
  StepInfo step{1000, 1000};  // past every warm-up: the steady state is what runs for most steps
  cost.compute_seconds = median_seconds(3, [&] {
    c.reset_stats();
    c.reduce(g, *one, step, nullptr);
  });
  // Wire: what the algorithm sends (bytes per collective), dense segments in one allreduce.
  double dense = 0;
  const double dense_bytes = c.compressor().dense_wire_dtype() == DType::f16 ? 2.0 : 4.0;
  for (const Segment& s : c.dense_layout()) dense += dense_bytes * static_cast<double>(s.numel);
  if (dense > 0) cost.allreduce_bytes.push_back(dense);
  const double n = static_cast<double>(layout_numel(c.compressed_layout()));
  if (n == 0) return cost;
  const std::string& name = parsed.name();
  if (name == "none") {
    cost.allreduce_bytes.push_back(4 * n);
  } else if (name == "fp16" || name == "bf16") {
    cost.allreduce_bytes.push_back(2 * n);
  } else if (name == "powersgd") {
    auto* psgd = dynamic_cast<PowerSgd*>(&c.compressor());
    double p_floats = 0, q_floats = 0, psgd_dense = 0;
    for (const auto& m : psgd->matrices()) {
      const double r = std::min<double>({static_cast<double>(psgd->options().rank), static_cast<double>(m.rows),
                                         static_cast<double>(m.cols)});
      p_floats += r * static_cast<double>(m.rows);
      q_floats += r * static_cast<double>(m.cols);
      psgd_dense -= static_cast<double>(m.rows * m.cols);
    }
    psgd_dense += n;  // the compressed layout's tensors PowerSGD itself sends dense
    if (psgd_dense > 0) cost.allreduce_bytes.push_back(4 * psgd_dense);
    if (p_floats > 0) {
      cost.allreduce_bytes.push_back(4 * p_floats);
      cost.allreduce_bytes.push_back(4 * q_floats);
    }
  } else if (name == "dgc" || name == "topk") {
    double k = 0;
    const double ratio = CompressorSpec::parse(spec).get_double("ratio", 0.001, 0, 1);
    for (const Segment& s : c.compressed_layout())
      k += std::max(1.0, std::ceil(ratio * static_cast<double>(s.numel)));
    // Sparse packets: a ~2-byte varint index and the value (f16 under DGC's default, else f32).
    const double entry = 2.0 + (c.compressor().dense_wire_dtype() == DType::f16 ? 2.0 : 4.0);
    cost.allgather_bytes.push_back(8.0 * world);            // the packet sizes
    cost.allgather_bytes.push_back(entry * k * world);      // every rank's (index, value) pairs
  } else {
    throw Error("auto: no wire model for candidate '" + spec + "'");
  }
  return cost;
}

std::vector<AutoChoice> choose_compressors(Communicator& comm, const std::vector<BucketLayout>& layouts) {
  const LinkModel link = measure_link(comm);
  std::vector<AutoChoice> choices;
  Tensor chosen = Tensor::zeros({static_cast<int64_t>(layouts.size())}, DType::i32);
  for (size_t b = 0; b < layouts.size(); ++b) {
    std::vector<CandidateCost> costs;
    for (const std::string& spec : auto_candidates()) costs.push_back(cost_candidate(spec, layouts[b], comm.size()));
    choices.push_back(choose(link, std::move(costs)));
    chosen.data<int32_t>()[b] = static_cast<int32_t>(choices.back().chosen);
  }
  // Timing noise differs per rank; rank 0's choice is everyone's.
  if (!layouts.empty()) comm.broadcast(chosen, 0);
  for (size_t b = 0; b < layouts.size(); ++b) choices[b].chosen = static_cast<size_t>(chosen.data<int32_t>()[b]);
  return choices;
}

}  // namespace tern
