// Fashion-MNIST (Zalando, 2017): 60000 train / 10000 test 28x28 grey images of 10 clothing
// classes, read from the four IDX files of the original release (gzip-compressed or not).
#pragma once

#include <string>

#include "runtime/data/dataset.h"

namespace tern {

// Pixel statistics of the TRAINING images scaled to [0, 1]: mean 0.28604, std 0.35302 (population
// std over all 47,040,000 pixels; FashionMnist.TrainStatisticsMatchTheNormalisationConstants
// recomputes them). Both splits are normalised with these, as the test set must not leak.
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;
inline constexpr int kFashionMnistClasses = 10;

// Reads <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] and returns f32 [N, 1, 28, 28]
// images, (x / 255 - mean) / std. Throws tern::Error naming the file when one is missing, has the
// wrong rank or type, when image and label counts differ, or a label is not in 0..9.
Dataset load_fashion_mnist(const std::string& dir, Split split);

}  // namespace tern
