// Contribution: measures what the update-scheme search (update_plan.h) maximises, as Lin et al. 2022
// do — the validation accuracy gained by fine-tuning one part of the model with the new head, over
// fine-tuning the head alone. tern-finetune --update auto measures, searches, then fine-tunes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "ondevice/finetune.h"
#include "ondevice/quantized_model.h"
#include "ondevice/update_plan.h"

namespace tern::ondevice {

// Images ([C, H, W] f32 each, `image_elems` floats apart) and labels of the new task: the probes train
// on `train` in order and are scored on `validation` (held out from training data, never the test set).
struct ProbeData {
  const float* train_images = nullptr;
  const int32_t* train_labels = nullptr;
  int64_t train_count = 0;
  const float* validation_images = nullptr;
  const int32_t* validation_labels = nullptr;
  int64_t validation_count = 0;
  int64_t image_elems = 0;
};

struct ContributionOptions {
  // Every probe's learning rate, QAS, momentum and plan options; its rate follows a cosine from
  // finetune.lr to 0 over the probe's steps, as tern-finetune's default schedule does.
  FinetuneOptions finetune;
  // A part whose own step (head + that part) needs more arena than this is not probed: no scheme that
  // fits the budget can hold it, and it keeps gain 0. 0: every part is probed.
  size_t budget = 0;
  // bias:last=k is probed at up to this many k spread over 1..(layers with biases), always the
  // largest that fits; the gains in between are interpolated linearly (k = 0 gains 0).
  int bias_probes = 8;
  // Probes run at once, each on its own thread (they are independent fine-tuning runs); the
  // contributions do not depend on it.
  int threads = 1;
};

struct ContributionReport {
  Contributions contributions;  // for greedy_search / evolutionary_search over layer_specs(model)
  float head_accuracy = 0;      // validation accuracy of fine-tuning the head alone: the baseline
  int probes = 0;               // fine-tuning runs made, the baseline included
  int skipped = 0;              // parts not probed because their own step exceeded the budget
};

// The arena peak of fine-tuning a scheme with the new head trained as well, as tern-finetune runs it:
// the cost the search compares with the budget. `model` must outlive the function.
SchemeCost step_cost_with_head(const QuantizedModel& model, const StepOptions& step);

// Measures the contributions of the model's parts (biases of the last k layers; each weight but the
// head's at every ratio of kUpdateRatios). progress(done, total) is called after each probe, one call at
// a time. Throws tern::Error for empty data, threads < 1 or a head-only step over the budget.
ContributionReport measure_contributions(const QuantizedModel& model, const ProbeData& data,
                                         const ContributionOptions& options,
                                         const std::function<void(int, int)>& progress = {});

// The validation accuracy of a copy of `model` fine-tuned with `scheme` on data's training images (in
// order, cosine rate from options.lr to 0): one probe, also the reference the tests check against.
float probe_accuracy(const QuantizedModel& model, const UpdateScheme& scheme, const ProbeData& data,
                     const FinetuneOptions& options);

}  // namespace tern::ondevice
