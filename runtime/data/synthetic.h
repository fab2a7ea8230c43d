// A generated, learnable classification task for tests and benchmarks that must not depend on
// files: each class has a fixed random prototype, and a sample is its class prototype plus noise.
#pragma once

#include <cstdint>

#include "runtime/data/dataset.h"

namespace tern {

// seed fixes the class prototypes; sample_seed fixes which samples are drawn. A train and a test
// set are two calls with the same seed and different sample_seed: same task, disjoint draws.
// Each prototype element is N(0, (separation / sqrt(D))^2) for D = numel(sample_shape), and the
// noise is N(0, 1) per element, so two prototypes lie about separation * sqrt(2) noise standard
// deviations apart whatever D is, and the difficulty does not depend on the sample shape.
// Image-shaped samples (last two dims >= 8) have prototypes constant over 4x4 blocks, so the
// class pattern has spatial extent that a CNN can see through its pooling.
// Measured at [1, 28, 28] with 10 classes, a nearest-class-mean classifier fitted on 512 / 5000
// training samples scores: separation 3: 60% / 84%; 4: 86% / 97%; 5 (default): 97% / 99.7%.
// The default is easy on purpose, so that small models in tests learn it in a few hundred steps;
// pass 3 for a task that keeps improving over many epochs. Labels are balanced (counts differ by
// at most one) and shuffled. The result depends only on the arguments.
Dataset make_synthetic(int64_t n, const Shape& sample_shape, int num_classes, uint64_t seed,
                       uint64_t sample_seed = 0, float separation = 5.0f);

// What load_dataset("synthetic", ...) generates: Fashion-MNIST's sample shape and class count,
// fewer samples so it is quick to make. train uses sample_seed 0, test sample_seed 1.
inline constexpr int64_t kSyntheticTrainSize = 10000;
inline constexpr int64_t kSyntheticTestSize = 2000;
inline constexpr uint64_t kSyntheticSeed = 20240601;

}  // namespace tern
