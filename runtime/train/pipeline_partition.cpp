#include "runtime/train/pipeline_partition.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <sstream>

namespace tern {

StageBounds partition_by_cost(const std::vector<double>& costs, int stages) {
  const size_t n = costs.size();
  TERN_CHECK(stages >= 1, "pipeline partition: stages must be at least 1, got ", stages);
  TERN_CHECK(n >= static_cast<size_t>(stages), "pipeline partition: ", stages, " stages need at least ",
             stages, " layers (children of the model's Sequential), the model has ", n);
  for (double c : costs) TERN_CHECK(c >= 0, "pipeline partition: negative layer cost ", c);
  std::vector<double> prefix(n + 1, 0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + costs[i];
  const auto P = static_cast<size_t>(stages);
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // best[s][i]: the smallest possible largest cost when the first i children form s stages;
  // cut[s][i]: where the last of those stages begins.
  std::vector<std::vector<double>> best(P + 1, std::vector<double>(n + 1, kInf));
  std::vector<std::vector<size_t>> cut(P + 1, std::vector<size_t>(n + 1, 0));
  best[0][0] = 0;
  for (size_t s = 1; s <= P; ++s) {
    for (size_t i = s; i <= n; ++i) {
      for (size_t j = s - 1; j < i; ++j) {
        const double v = std::max(best[s - 1][j], prefix[i] - prefix[j]);
        // Strictly better only: among equal splits the earliest last cut wins, so earlier stages
        // end as early as they can (deterministic on every rank).
        if (v < best[s][i]) {
          best[s][i] = v;
          cut[s][i] = j;
        }
      }
    }
  }
  StageBounds bounds(P + 1);
  bounds[P] = n;
  for (size_t s = P; s >= 1; --s) bounds[s - 1] = cut[s][bounds[s]];
  check_stage_bounds(bounds, n);
  return bounds;
}

StageBounds partition_by_params(Sequential& model, int stages) {
  std::vector<double> costs;
  double total = 0;
  for (size_t i = 0; i < model.size(); ++i) {
    costs.push_back(static_cast<double>(model[i].param_count()));
    total += costs.back();
  }
  const double floor = model.size() > 0 ? 1e-6 * std::max(1.0, total / static_cast<double>(model.size())) : 0;
  for (double& c : costs) c = std::max(c, floor);
  return partition_by_cost(costs, stages);
}

std::vector<double> measure_child_seconds(Sequential& model, const Tensor& input, int repeats) {
  TERN_CHECK(repeats >= 1, "measure_child_seconds: repeats must be at least 1");
  using Clock = std::chrono::steady_clock;
  const size_t n = model.size();
  std::vector<std::vector<double>> samples(n);
  for (int r = 0; r <= repeats; ++r) {  // pass 0 warms up (plans, allocations)
    std::vector<double> t(n, 0);
    Tensor h = input;
    for (size_t i = 0; i < n; ++i) {
      const auto t0 = Clock::now();
      h = model[i].forward(h);
      t[i] += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    Tensor g = Tensor::full(h.shape(), 1.0);
    for (size_t i = n; i-- > 0;) {
      const auto t0 = Clock::now();
      g = model[i].run_backward(g);
      t[i] += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    if (r > 0)
      for (size_t i = 0; i < n; ++i) samples[i].push_back(t[i]);
  }
  model.zero_grad();
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    auto& v = samples[i];
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    out[i] = v[v.size() / 2];
  }
  return out;
}

StageBounds partition_by_time(Sequential& model, const Tensor& input, int stages, Communicator* comm,
                              int repeats) {
  std::vector<double> seconds;
  Tensor shared = Tensor::zeros({static_cast<int64_t>(model.size())});
  if (comm == nullptr || comm->rank() == 0) {
    seconds = measure_child_seconds(model, input, repeats);
    for (size_t i = 0; i < seconds.size(); ++i) shared.f32()[i] = static_cast<float>(seconds[i]);
  }
  if (comm != nullptr && comm->size() > 1) comm->broadcast(shared, 0);
  seconds.assign(shared.f32(), shared.f32() + shared.numel());
  return partition_by_cost(seconds, stages);
}

StageBounds parse_stage_sizes(const std::string& spec, size_t children, int stages) {
  std::vector<size_t> sizes;
  std::stringstream in(spec);
  std::string part;
  while (std::getline(in, part, ':')) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    TERN_CHECK(used == part.size() && !part.empty() && v > 0, "pipeline stages '", spec,
               "': expected positive layer counts separated by ':' (e.g. 4:3:3:2), got '", part, "'");
    sizes.push_back(static_cast<size_t>(v));
  }
  TERN_CHECK(sizes.size() == static_cast<size_t>(stages), "pipeline stages '", spec, "' lists ", sizes.size(),
             " stages, but the pipeline has ", stages);
  StageBounds bounds{0};
  for (size_t s : sizes) bounds.push_back(bounds.back() + s);
  TERN_CHECK(bounds.back() == children, "pipeline stages '", spec, "' cover ", bounds.back(),
             " layers; the model has ", children, " (children of its Sequential)");
  return bounds;
}

void check_stage_bounds(const StageBounds& bounds, size_t children) {
  TERN_CHECK(bounds.size() >= 2 && bounds.front() == 0 && bounds.back() == children,
             "pipeline stage bounds must run from 0 to the ", children, " layers of the model");
  for (size_t s = 0; s + 1 < bounds.size(); ++s)
    TERN_CHECK(bounds[s] < bounds[s + 1], "pipeline stage ", s, " would be empty (bounds ", bounds[s], ", ",
               bounds[s + 1], ")");
}

StageBounds partition_model(const std::string& how, Sequential& model, int stages, const Tensor& input,
                            Communicator* comm) {
  if (how.empty() || how == "params") return partition_by_params(model, stages);
  if (how == "time") return partition_by_time(model, input, stages, comm);
  return parse_stage_sizes(how, model.size(), stages);
}

std::unique_ptr<Sequential> take_stage(Sequential& model, const StageBounds& bounds, int stage) {
  check_stage_bounds(bounds, model.size());
  TERN_CHECK(stage >= 0 && static_cast<size_t>(stage) + 1 < bounds.size(), "take_stage: stage ", stage,
             " of ", bounds.size() - 1);
  const size_t begin = bounds[static_cast<size_t>(stage)], end = bounds[static_cast<size_t>(stage) + 1];
  auto taken = model.take(begin, end);
  auto out = std::make_unique<Sequential>();
  for (size_t i = 0; i < taken.size(); ++i) out->add(std::to_string(begin + i), std::move(taken[i]));
  out->train(model.training());
  out->set_input_grad(stage > 0);
  return out;
}

std::string describe_stages(Sequential& model, const StageBounds& bounds) {
  check_stage_bounds(bounds, model.size());
  std::ostringstream out;
  for (size_t s = 0; s + 1 < bounds.size(); ++s) {
    int64_t params = 0;
    std::string names;
    for (size_t i = bounds[s]; i < bounds[s + 1]; ++i) {
      params += model[i].param_count();
      names += (names.empty() ? "" : ", ") + model[i].describe();
    }
    if (names.size() > 120) names = names.substr(0, 117) + "...";
    out << "stage " << s << ": layers " << bounds[s] << "-" << bounds[s + 1] - 1 << " (" << names << "), "
        << params << " params\n";
  }
  return out.str();
}

}  // namespace tern
