// Softmax cross-entropy over class logits and integer labels (the classifier loss of every
// model), with its gradient and an accuracy count. Plain functions, never throw.
#pragma once

#include <cstdint>

namespace tern::cpu {

// logits [N, K] row-major, labels [N] in [0, K). Returns the mean over rows of
// logsumexp(row) - row[label], computed stably (row max subtracted before exp). When dlogits is
// not null it is overwritten with d(mean loss)/dlogits = (softmax(row) - onehot(label)) / N.
// A label outside [0, K) is reported, not thrown: nothing is computed, dlogits is left untouched,
// *bad_sample (when not null) is set to the first offending row and the result is NaN. Otherwise
// *bad_sample is set to -1. N must be > 0 and K > 0.
float softmax_cross_entropy(const float* logits, const int32_t* labels, int64_t N, int64_t K, float* dlogits,
                            int64_t* bad_sample);

// Rows whose argmax equals the label (ties go to the lowest index; an out-of-range label never
// counts as correct).
int64_t count_correct(const float* logits, const int32_t* labels, int64_t N, int64_t K);

}  // namespace tern::cpu
