// The classification loss of every model: mean softmax cross-entropy over a batch of logits and
// integer labels, with its gradient for backward and the batch's correct-prediction count.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor/tensor.h"

namespace tern {

struct LossResult {
  float loss;       // mean over the batch
  int64_t correct;  // rows whose argmax (lowest index on ties) equals the label
};

// logits f32 [N, K] (N, K > 0), labels N values in [0, K). When dlogits is not null it receives
// d(mean loss)/dlogits, shaped like logits: its storage is reused when it already is an f32
// tensor of that shape (not aliasing logits), otherwise a new tensor is allocated. Throws
// tern::Error on a shape mismatch or a label out of range (naming the sample and the label).
LossResult softmax_cross_entropy(const Tensor& logits, const std::vector<int32_t>& labels, Tensor* dlogits);

}  // namespace tern
