// Naive references for the cpu loss kernels: softmax and log-sum-exp in double with the row max
// subtracted (stable for logits of +-1000, unlike the textbook formula). Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

// Same contract as cpu::softmax_cross_entropy, returning the mean loss in double.
double softmax_cross_entropy(const float* logits, const int32_t* labels, int64_t N, int64_t K, float* dlogits,
                             int64_t* bad_sample);
int64_t count_correct(const float* logits, const int32_t* labels, int64_t N, int64_t K);

}  // namespace tern::ref
