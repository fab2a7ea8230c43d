// 2-D convolution (NCHW, groups, stride, zero padding) through oneDNN, for Conv2d and anything
// shaped like it. A Conv2dPlan builds the primitives for one shape once and reuses them per call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tern {

// Everything that fixes a convolution's primitives. Zero padding is symmetric; the output size
// floors like PyTorch's, so the bottom/right padding rows that no window reaches are never read.
struct Conv2dShape {
  int64_t n = 1, c_in = 1, h = 1, w = 1;
  int64_t c_out = 1, kh = 1, kw = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t groups = 1;

  int64_t out_h() const { return (h + 2 * pad_h - kh) / stride_h + 1; }
  int64_t out_w() const { return (w + 2 * pad_w - kw) / stride_w + 1; }
  int64_t x_numel() const { return n * c_in * h * w; }
  int64_t w_numel() const { return c_out * (c_in / groups) * kh * kw; }
  int64_t y_numel() const { return n * c_out * out_h() * out_w(); }
  // Multiply-adds times two of one forward pass (backward data and weights cost the same).
  double flops() const;
  std::string str() const;  // "n=64 c_in=1 28x28 -> c_out=32 k=3x3 s=1x1 p=1x1 g=1"
  bool operator==(const Conv2dShape&) const = default;
};

namespace cpu {

// Where the primitives run: oneDNN's blocked layouts (converting NCHW in and out around them) or
// NCHW directly. automatic picks per primitive what measured fastest; the others exist so that
// benchmarks and tests can compare and check both paths.
enum class Conv2dLayout { automatic, blocked, plain };

// The oneDNN primitives, layouts and staging buffers for one Conv2dShape. Tensors at this API are
// plain row-major f32: x [n, c_in, h, w], w [c_out, c_in/groups, kh, kw], bias [c_out],
// y [n, c_out, out_h, out_w]. Every method OVERWRITES its outputs.
//
// Construction is the slow part (it JIT-compiles kernels) and may throw tern::Error for an invalid
// shape; the per-call methods never throw and do not allocate once constructed. A plan owns
// mutable buffers, so one plan must not be used from two threads at once.
class Conv2dPlan {
 public:
  explicit Conv2dPlan(const Conv2dShape& shape, Conv2dLayout layout = Conv2dLayout::automatic);
  ~Conv2dPlan();
  Conv2dPlan(Conv2dPlan&&) noexcept;
  Conv2dPlan& operator=(Conv2dPlan&&) noexcept;
  Conv2dPlan(const Conv2dPlan&) = delete;
  Conv2dPlan& operator=(const Conv2dPlan&) = delete;

  const Conv2dShape& shape() const;

  // y = conv(x, w) + bias; bias may be null (no bias).
  void forward(const float* x, const float* w, const float* bias, float* y) noexcept;
  // dx = d(sum(y * dy)) / dx.
  void backward_data(const float* dy, const float* w, float* dx) noexcept;
  // dw = d(sum(y * dy)) / dw and, when dbias is not null, dbias[c] = sum of dy over n, h, w.
  void backward_weights(const float* x, const float* dy, float* dw, float* dbias) noexcept;
  // Both of the above; converts dy to the primitives' layout once instead of twice.
  void backward(const float* x, const float* dy, const float* w, float* dx, float* dw, float* dbias) noexcept;

  // Layout each primitive runs in, for benchmarks and tests: true when oneDNN's blocked layout
  // (with conversions from and to NCHW around it), false when it runs on NCHW directly.
  bool forward_blocked() const;
  bool backward_data_blocked() const;
  bool backward_weights_blocked() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cpu
}  // namespace tern
