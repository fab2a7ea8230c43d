// ErrorFeedback: the residual memory every biased compressor shares (EF-SGD): add what was not
// sent last time to the new gradient, compress, keep what this compression did not send.
#pragma once

#include <cstdint>

#include "runtime/tensor/tensor.h"

namespace tern {

class ErrorFeedback {
 public:
  explicit ErrorFeedback(int64_t n) : residual_(Tensor::zeros({n})) {}
  // x[i] += residual[i] for the n elements starting at offset: the accumulated input.
  void add_to(float* x, int64_t offset, int64_t n) const;
  // residual[offset + i] = accumulated[i] - sent[i]: sent + residual = accumulated, exactly in
  // the sense that sent[i] + residual == accumulated[i] up to one f32 rounding.
  void keep(const float* accumulated, const float* sent, int64_t offset, int64_t n);
  // residual[offset + i] = accumulated[i] (nothing of it was sent yet); sparse senders then zero
  // the sent entries with forget().
  void keep_all(const float* accumulated, int64_t offset, int64_t n);
  void forget(const int32_t* idx, int64_t k);  // residual[idx[j]] = 0 (bucket indices)
  Tensor& residual() { return residual_; }
  const Tensor& residual() const { return residual_; }

 private:
  Tensor residual_;  // f32, flat over the bucket
};

}  // namespace tern
