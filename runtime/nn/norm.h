// BatchNorm2d and GroupNorm: normalisation layers for CNNs (ResNet's BN after every conv; GN
// where batches are tiny). Forward caches the statistics backward needs; kernels in cpu/norm.h.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/nn/module.h"

namespace tern {

// Normalises each channel over the batch (and spatial positions) of [N, C, H, W] or [N, C]
// inputs. In training mode it uses the batch statistics and updates running_mean/running_var
// (PyTorch's momentum convention); in eval mode it uses the running statistics.
class BatchNorm2d : public Module {
 public:
  BatchNorm2d(int64_t channels, float momentum = 0.1f, float eps = 1e-5f);

  // The input must stay unchanged until backward() (it is cached without a copy).
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;

  int64_t channels() const { return channels_; }

  Param weight;         // gamma, [C], ones
  Param bias;           // beta, [C], zeros
  Buffer running_mean;  // [C], zeros
  Buffer running_var;   // [C], ones

 private:
  int64_t channels_;
  float momentum_, eps_;
  Tensor x_;                        // the last forward's input
  bool forward_training_ = true;    // the mode the last forward ran in
  Tensor save_mean_, save_invstd_;  // [C], batch statistics of the last training forward
  Tensor dgamma_, dbeta_;           // [C], scratch: kernels overwrite, grads accumulate
};

// Normalises each sample over groups of C/G consecutive channels (and all positions) of
// [N, C, *] inputs, then applies a per-channel affine. The same in training and eval.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t groups, int64_t channels, float eps = 1e-5f);

  // The input must stay unchanged until backward() (it is cached without a copy).
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;

  int64_t groups() const { return groups_; }
  int64_t channels() const { return channels_; }

  Param weight;  // gamma, [C], ones
  Param bias;    // beta, [C], zeros

 private:
  int64_t groups_, channels_;
  float eps_;
  Tensor x_;
  Tensor save_mean_, save_invstd_;  // [N, G] of the last forward
  Tensor dgamma_, dbeta_;
};

}  // namespace tern
