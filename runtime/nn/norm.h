// BatchNorm2d and GroupNorm: normalisation layers for CNNs (ResNet's BN after every conv; GN
// where batches are tiny). Forward caches the statistics backward needs; kernels in cpu/norm.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/nn/module.h"

namespace tern {

// Normalises each channel over the batch (and spatial positions) of [N, C, H, W] or [N, C]
// inputs. In training mode it uses the batch statistics and updates running_mean/running_var
// (PyTorch's momentum convention); in eval mode it uses the running statistics.
//
// Synchronised BatchNorm (data-parallel --sync-bn): with a stats allreduce set, a training
// forward normalises with the statistics of the batch of every rank together, and backward
// uses the matching global sums, so N ranks compute what one process computes on the
// concatenated batch. Per forward: two sums across ranks, the per-channel sums and count (for the
// mean), then the sums of squared deviations from that mean (the two-pass variance, accurate
// whatever the mean is, unlike sum-of-squares minus squared mean); per backward: one, of
// sum(dy) and sum(dy * (x - mean)). The param gradients stay this rank's own share: the
// data-parallel gradient average turns them into the global ones.
class BatchNorm2d : public Module {
 public:
  BatchNorm2d(int64_t channels, float momentum = 0.1f, float eps = 1e-5f);

  // Sums per-channel statistics in place across the data-parallel ranks, blocking, in double and
  // to the same bits on every rank. runtime/nn does not know about communicators; DataParallel
  // sets this (sync_bn_stats_sum). Every rank must call forward/backward in training mode the same
  // number of times. An empty function restores local statistics.
  //
  // Double, so the count stays exact past 2^24 values per channel over all ranks (an f32 sum
  // stopped there: 64 ranks x batch 32 of 112 x 112 maps are 25.7 M) and the sums are as precise
  // as one process's, whose kernels accumulate in double too.
  using StatsAllreduce = std::function<void(std::vector<double>& values)>;
  void set_stats_allreduce(StatsAllreduce allreduce);
  bool synchronised() const { return static_cast<bool>(stats_allreduce_); }

  // The input must stay unchanged until backward() (it is cached without a copy).
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override;

  int64_t channels() const { return channels_; }

  Param weight;         // gamma, [C], ones
  Param bias;           // beta, [C], zeros
  Buffer running_mean;  // [C], zeros
  Buffer running_var;   // [C], ones

 private:
  int64_t channels_;
  float momentum_, eps_;
  Tensor x_;                           // the last forward's input
  bool forward_training_ = true;       // the mode the last forward ran in
  bool forward_synchronised_ = false;  // whether it used global statistics
  Tensor save_mean_, save_invstd_;     // [C], batch statistics of the last training forward
  Tensor dgamma_, dbeta_;              // [C], scratch: kernels overwrite, grads accumulate
  StatsAllreduce stats_allreduce_;
  std::vector<double> sync_sums_;  // scratch of the synchronised passes, at most 2C values
  double global_count_ = 0;  // values per channel over all ranks, of the last sync forward

  void forward_train_synchronised(const Tensor& x, Tensor& y);
  void backward_train_synchronised(const Tensor& dy, Tensor& dx);
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
  void swap_forward_state(ForwardState& s) override { s.swap(x_, save_mean_, save_invstd_); }

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
