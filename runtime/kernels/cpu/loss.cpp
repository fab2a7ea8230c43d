#include "runtime/kernels/cpu/loss.h"

#include <cmath>
#include <limits>

namespace tern::cpu {

float softmax_cross_entropy(const float* logits, const int32_t* labels, int64_t N, int64_t K, float* dlogits,
                            int64_t* bad_sample) {
  // Validate first so a bad batch leaves dlogits untouched.
  for (int64_t n = 0; n < N; ++n) {
    if (labels[n] < 0 || labels[n] >= K) {
      if (bad_sample) *bad_sample = n;
      return std::numeric_limits<float>::quiet_NaN();
    }
  }
  if (bad_sample) *bad_sample = -1;

  const float inv_n = 1.0f / static_cast<float>(N);
  double total = 0;  // N rows of O(log K) each: double keeps the mean exact to f32 precision
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * K;
    float m = row[0];
    for (int64_t k = 1; k < K; ++k) m = row[k] > m ? row[k] : m;
    float sum = 0;
    if (dlogits) {
      // Keep exp(x - max) in dlogits so the gradient pass does not exponentiate again.
      float* d = dlogits + n * K;
      for (int64_t k = 0; k < K; ++k) {
        d[k] = std::exp(row[k] - m);
        sum += d[k];
      }
      const float scale = inv_n / sum;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) d[k] *= scale;
      d[labels[n]] -= inv_n;
    } else {
      for (int64_t k = 0; k < K; ++k) sum += std::exp(row[k] - m);
    }
    // loss = logsumexp - x[label] = (max - x[label]) + log(sum); the difference first keeps the
    // precision when the logits are large.
    total += static_cast<double>(m - row[labels[n]]) + std::log(static_cast<double>(sum));
  }
  return static_cast<float>(total / static_cast<double>(N));
}

int64_t count_correct(const float* logits, const int32_t* labels, int64_t N, int64_t K) {
  int64_t correct = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * K;
    int64_t best = 0;
    for (int64_t k = 1; k < K; ++k)
      if (row[k] > row[best]) best = k;
    correct += best == labels[n];
  }
  return correct;
}

}  // namespace tern::cpu
