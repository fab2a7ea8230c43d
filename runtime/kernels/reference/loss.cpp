#include "runtime/kernels/reference/loss.h"

#include <cmath>
#include <limits>

namespace tern::ref {

double softmax_cross_entropy(const float* logits, const int32_t* labels, int64_t N, int64_t K, float* dlogits,
                             int64_t* bad_sample) {
  for (int64_t n = 0; n < N; ++n) {
    if (labels[n] < 0 || labels[n] >= K) {
      if (bad_sample) *bad_sample = n;
      return std::numeric_limits<double>::quiet_NaN();
    }
  }
  if (bad_sample) *bad_sample = -1;
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * K;
    double m = row[0];
    for (int64_t k = 0; k < K; ++k) m = std::fmax(m, row[k]);
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += std::exp(row[k] - m);
    const double log_sum_exp = m + std::log(sum);
    total += log_sum_exp - row[labels[n]];
    if (dlogits) {
      for (int64_t k = 0; k < K; ++k) {
        const double onehot = k == labels[n] ? 1.0 : 0.0;
        const double softmax = std::exp(row[k] - log_sum_exp);
        dlogits[n * K + k] = static_cast<float>((softmax - onehot) / static_cast<double>(N));
      }
    }
  }
  return total / static_cast<double>(N);
}

int64_t count_correct(const float* logits, const int32_t* labels, int64_t N, int64_t K) {
  int64_t correct = 0;
  for (int64_t n = 0; n < N; ++n) {
    int64_t best = -1;
    float best_value = 0;
    for (int64_t k = 0; k < K; ++k) {
      if (best < 0 || logits[n * K + k] > best_value) {
        best = k;
        best_value = logits[n * K + k];
      }
    }
    if (best == labels[n]) ++correct;
  }
  return correct;
}

}  // namespace tern::ref
