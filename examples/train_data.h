// What tern-train's data-parallel and pipeline modes share: the datasets the flags name (with
// --classes and --limit-train applied) and the model configuration they imply.
#pragma once

#include <string>

#include "models/registry.h"
#include "runtime/data/dataset.h"
#include "runtime/io/flags.h"

namespace tern {

struct TrainingData {
  Dataset train, test;
  ModelConfig config;  // input shape and classes from the data; width multiplier and seed from flags
};

// Reads --dataset, --data-dir, --classes, --limit-train, --width-mult and --seed. A bad --classes
// is a UsageError; data whose samples are not [C, H, W] an Error.
TrainingData load_training_data(const Flags& f);

// --classes A-B: keeps the samples labelled A..B (for pretraining on some classes before fine-tuning
// on the others, issue 7). Labels keep their values, so the model still has an output per class.
void keep_classes(const std::string& range, Dataset& d);

}  // namespace tern
