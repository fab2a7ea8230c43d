// PowerSGD (Vogels et al., NeurIPS 2019): each gradient matrix M is sent as a rank-R product
// P·Qᵀ found by one step of power iteration per training step, with error feedback and warm start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/compress/compressor.h"
#include "runtime/rng.h"

namespace tern {

struct PowerSgdOptions {
  int rank = 1;              // R
  int64_t start_iter = 10;   // steps [0, start_iter) are dense allreduce (no error feedback yet)
  double min_ratio = 2.0;    // a tensor whose m·n / (R·(m+n)) is below this goes dense
  bool warm_start = true;    // reuse Q from the previous step (else fresh random Q each step)
  uint64_t seed = 0;         // Q's initial values; the same on every rank
};

// Orthonormalises the columns of the row-major [rows, cols] matrix a in place (modified
// Gram-Schmidt); a column that becomes (numerically) zero is replaced by zeros, never NaN.
void orthonormalize_columns(float* a, int64_t rows, int64_t cols);

// The compressor. A tensor of shape [d0, d1, ...] is the matrix [d0, d1·d2·...]; 1-D tensors and
// those below min_ratio are allreduced dense (one allreduce for all of them). For the rest, per
// step: M = grad + residual; P = M·Q; allreduce(P) (all matrices in one); orthonormalise P;
// Q = Mᵀ·P; allreduce(Q, avg); M̂ = P·Qᵀ (= P·Pᵀ·mean(M)); residual = M - M̂; grad = M̂.
class PowerSgd : public Compressor {
 public:
  PowerSgd(const PowerSgdOptions& options, const BucketLayout& layout);
  std::string spec() const override;
  void reduce(Tensor grad, const BucketLayout& layout, Communicator& comm, const StepInfo& step,
              SparseVector* sparse) override;
  StateTensors state() override;  // "residual", "q"
  const PowerSgdOptions& options() const { return options_; }
  // Which segments (by index in the layout) are compressed, and their matrix shapes.
  struct Matrix {
    size_t segment;
    int64_t rows, cols;
    // Into the flat P [sum rows·r] and Q [sum cols·r] buffers, r = min(R, rows, cols).
    int64_t p_offset, q_offset;
  };
  const std::vector<Matrix>& matrices() const { return matrices_; }

 private:
  PowerSgdOptions options_;
  BucketLayout layout_;
  std::vector<Matrix> matrices_;
  std::vector<size_t> dense_segments_;
  Tensor residual_;  // flat over the bucket
  Tensor p_, q_;     // all matrices' P and Q, concatenated
  Tensor dense_;     // scratch for the dense segments
};

}  // namespace tern
