#include "ondevice/contribution.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "optim/lr_schedule.h"
#include "runtime/error.h"
#include "runtime/io/byte_sizes.h"

namespace tern::ondevice {

float probe_accuracy(const QuantizedModel& model, const UpdateScheme& scheme, const ProbeData& data,
                     const FinetuneOptions& options) {
  Finetuner ft(model, scheme, options);
  const CosineLr schedule(options.lr, 0.0f, data.train_count);
  for (int64_t i = 0; i < data.train_count; ++i) {
    ft.set_lr(schedule.lr_at(i));
    ft.step(data.train_images + i * data.image_elems, data.train_labels[i]);
  }
  int64_t correct = 0;
  for (int64_t i = 0; i < data.validation_count; ++i)
    correct += ft.predict(data.validation_images + i * data.image_elems) == data.validation_labels[i];
  return static_cast<float>(correct) / static_cast<float>(data.validation_count);
}

SchemeCost step_cost_with_head(const QuantizedModel& model, const StepOptions& step) {
  return [&model, step, layers = layer_specs(model)](const UpdateScheme& s) {
    return plan_finetune_step(model, with_last_layer_trained(s, layers), step).peak;
  };
}

namespace {

// The k at which bias:last=k is probed: up to `probes` values spread over 1..max_k, max_k always among
// them, ascending and distinct.
std::vector<int> bias_probe_points(int max_k, int probes) {
  std::vector<int> ks;
  for (int p = 1; p <= probes; ++p) {
    const int k = std::max(1, static_cast<int>(static_cast<int64_t>(max_k) * p / probes));
    if (ks.empty() || k > ks.back()) ks.push_back(k);
  }
  return ks;
}

// The validation accuracy of each scheme's probe, on up to `threads` threads taking the next scheme in
// turn; the first error stops the others from starting more and is rethrown.
std::vector<float> run_probes(const QuantizedModel& model, const std::vector<UpdateScheme>& schemes,
                              const ProbeData& data, const FinetuneOptions& options, int threads,
                              const std::function<void(int, int)>& progress) {
  const int n = static_cast<int>(schemes.size());
  std::vector<float> accuracy(schemes.size());
  std::atomic<int> next{0};
  std::mutex mutex;  // guards done, error and the progress calls
  int done = 0;
  std::exception_ptr error;
  auto work = [&] {
    for (int i = next++; i < n; i = next++) {
      try {
        accuracy[static_cast<size_t>(i)] = probe_accuracy(model, schemes[static_cast<size_t>(i)], data, options);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        next = n;
        return;
      }
      const std::lock_guard<std::mutex> lock(mutex);
      ++done;
      if (progress && !error) progress(done, n);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::min(threads, n); ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return accuracy;
}

}  // namespace

ContributionReport measure_contributions(const QuantizedModel& model, const ProbeData& data,
                                         const ContributionOptions& options,
                                         const std::function<void(int, int)>& progress) {
  TERN_CHECK(data.train_count > 0 && data.validation_count > 0 && data.image_elems > 0,
             "contributions: need training and validation images (got ", data.train_count, " and ",
             data.validation_count, ")");
  TERN_CHECK(options.bias_probes >= 1, "contributions: bias_probes must be at least 1, got ",
             options.bias_probes);
  TERN_CHECK(options.threads >= 1, "contributions: threads must be at least 1, got ", options.threads);
  const std::vector<LayerSpec> layers = layer_specs(model);
  const int L = static_cast<int>(layers.size());
  auto with_head = [&](UpdateScheme s) { return with_last_layer_trained(std::move(s), layers); };
  const SchemeCost cost = step_cost_with_head(model, options.finetune.step);
  auto fits = [&](const UpdateScheme& s) { return options.budget == 0 || cost(s) <= options.budget; };
  TERN_CHECK(fits(no_update(layers)), "contributions: fine-tuning the head alone needs ",
             format_bytes(cost(no_update(layers))), ", over the budget of ", format_bytes(options.budget));

  // The probes: the largest bias:last=k that fits, and every weight ratio that fits with the head.
  int bias_layers = 0;
  for (const LayerSpec& l : layers) bias_layers += l.bias_elems > 0;
  auto bias_last = [&](int k) { return parse_update_scheme("bias:last=" + std::to_string(k), layers); };
  auto weight_part = [&](int layer, int ratio) {
    UpdateScheme s = no_update(layers);
    s.layers[static_cast<size_t>(layer)].weight_ratio = kUpdateRatios[static_cast<size_t>(ratio)];
    return s;
  };
  int max_k = bias_layers;
  while (max_k > 0 && !fits(bias_last(max_k))) --max_k;
  const std::vector<int> ks = max_k > 0 ? bias_probe_points(max_k, options.bias_probes) : std::vector<int>{};
  struct WeightProbe {
    int layer, ratio;
  };
  std::vector<WeightProbe> weight_probes;
  ContributionReport report;
  for (int i = 0; i + 1 < L; ++i) {  // the head's weight always trains: no gain to measure
    if (layers[static_cast<size_t>(i)].weight_elems == 0) continue;
    for (int r = 1; r < static_cast<int>(kUpdateRatios.size()); ++r) {
      if (fits(weight_part(i, r)))
        weight_probes.push_back({i, r});
      else
        ++report.skipped;
    }
  }
  // Every probe, the head alone first, then the weight parts, then bias:last=k for k in ks.
  std::vector<UpdateScheme> schemes{with_head(no_update(layers))};
  for (const WeightProbe& p : weight_probes) schemes.push_back(with_head(weight_part(p.layer, p.ratio)));
  for (int k : ks) schemes.push_back(with_head(bias_last(k)));
  const std::vector<float> accuracy = run_probes(model, schemes, data, options.finetune, options.threads, progress);
  report.probes = static_cast<int>(schemes.size());

  report.head_accuracy = accuracy[0];
  Contributions& c = report.contributions;
  c.weight.assign(layers.size(), {0, 0, 0, 0, 0});
  size_t at = 1;
  for (const WeightProbe& p : weight_probes)
    c.weight[static_cast<size_t>(p.layer)][static_cast<size_t>(p.ratio)] = accuracy[at++] - report.head_accuracy;
  // bias_last[k] for k = 0..max_k: measured at ks, linear in between (from 0 gain at k = 0).
  c.bias_last.assign(static_cast<size_t>(max_k) + 1, 0.0f);
  int prev_k = 0;
  float prev_gain = 0;
  for (int k : ks) {
    const float gain = accuracy[at++] - report.head_accuracy;
    for (int j = prev_k + 1; j <= k; ++j)
      c.bias_last[static_cast<size_t>(j)] =
          prev_gain + (gain - prev_gain) * static_cast<float>(j - prev_k) / static_cast<float>(k - prev_k);
    prev_k = k;
    prev_gain = gain;
  }
  return report;
}

}  // namespace tern::ondevice
