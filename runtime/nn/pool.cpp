#include "runtime/nn/pool.h"

#include <limits>

#include "runtime/kernels/cpu/pool.h"

namespace tern {

namespace {

std::string pool_name(const char* kind, int64_t kernel, int64_t stride, int64_t padding) {
  return detail::concat(kind, "(k=", kernel, ", s=", stride,
                        padding ? detail::concat(", p=", padding) : std::string(), ")");
}

// Validates the constructor arguments; returns the effective stride.
int64_t checked_stride(const char* kind, int64_t kernel, int64_t stride, int64_t padding) {
  TERN_CHECK(kernel >= 1, kind, ": kernel must be >= 1, got ", kernel);
  TERN_CHECK(stride >= 0, kind, ": stride must be >= 1 (or 0 for = kernel), got ", stride);
  TERN_CHECK(padding >= 0 && padding <= kernel / 2, kind, "(k=", kernel, "): padding must be in [0, ",
             kernel / 2, "] (at most half the kernel), got ", padding);
  return stride == 0 ? kernel : stride;
}

// Checks x against the window and returns the geometry of this call.
cpu::Pool2dGeometry geometry_for(const std::string& name, const Tensor& x, int64_t kernel, int64_t stride,
                                 int64_t padding) {
  TERN_CHECK(x.ndim() == 4, name, ": expected input [N, C, H, W], got ", x.str());
  TERN_CHECK(x.dtype() == DType::f32, name, ": expected f32 input, got ", x.str());
  const cpu::Pool2dGeometry g{x.dim(0), x.dim(1), x.dim(2), x.dim(3), kernel, stride, padding};
  TERN_CHECK(g.H + 2 * padding >= kernel && g.W + 2 * padding >= kernel, name, ": input ", x.str(),
             " is smaller than the ", kernel, "x", kernel, " window (with padding ", padding, ")");
  // Argmax indices are int32 within one plane.
  TERN_CHECK(g.H * g.W <= std::numeric_limits<int32_t>::max(), name, ": plane of ", x.str(), " too large");
  return g;
}

void check_dy(const std::string& name, const Shape& expected, const Tensor& dy) {
  TERN_CHECK(!expected.empty(), name, ": backward before forward");
  TERN_CHECK(dy.shape() == expected && dy.dtype() == DType::f32, name, ": expected gradient f32",
             shape_str(expected), ", got ", dy.str());
}

}  // namespace

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : kernel_(kernel), stride_(checked_stride("MaxPool2d", kernel, stride, padding)), padding_(padding) {}

std::string MaxPool2d::describe() const { return pool_name("MaxPool2d", kernel_, stride_, padding_); }

Tensor MaxPool2d::forward(const Tensor& x) {
  geometry_ = geometry_for(describe(), x, kernel_, stride_, padding_);
  const cpu::Pool2dGeometry& g = geometry_;
  out_shape_ = {g.N, g.C, g.out_h(), g.out_w()};
  Tensor y = Tensor::empty(out_shape_);
  argmax_.resize(static_cast<size_t>(y.numel()));
  cpu::max_pool2d_forward(g, x.f32(), y.f32(), argmax_.data());
  return y;
}

Tensor MaxPool2d::backward(const Tensor& dy) {
  check_dy(describe(), out_shape_, dy);
  const cpu::Pool2dGeometry& g = geometry_;
  Tensor dx = Tensor::empty({g.N, g.C, g.H, g.W});
  cpu::max_pool2d_backward(g, dy.f32(), argmax_.data(), dx.f32());
  return dx;
}

AvgPool2d::AvgPool2d(int64_t kernel, int64_t stride, int64_t padding)
    : kernel_(kernel), stride_(checked_stride("AvgPool2d", kernel, stride, padding)), padding_(padding) {}

std::string AvgPool2d::describe() const { return pool_name("AvgPool2d", kernel_, stride_, padding_); }

Tensor AvgPool2d::forward(const Tensor& x) {
  geometry_ = geometry_for(describe(), x, kernel_, stride_, padding_);
  const cpu::Pool2dGeometry& g = geometry_;
  out_shape_ = {g.N, g.C, g.out_h(), g.out_w()};
  Tensor y = Tensor::empty(out_shape_);
  cpu::avg_pool2d_forward(g, x.f32(), y.f32());
  return y;
}

Tensor AvgPool2d::backward(const Tensor& dy) {
  check_dy(describe(), out_shape_, dy);
  const cpu::Pool2dGeometry& g = geometry_;
  Tensor dx = Tensor::empty({g.N, g.C, g.H, g.W});
  cpu::avg_pool2d_backward(g, dy.f32(), dx.f32());
  return dx;
}

Tensor GlobalAvgPool2d::forward(const Tensor& x) {
  TERN_CHECK(x.ndim() == 4 && x.dtype() == DType::f32,
             "GlobalAvgPool2d: expected f32 input [N, C, H, W], got ", x.str());
  TERN_CHECK(x.dim(2) > 0 && x.dim(3) > 0, "GlobalAvgPool2d: empty spatial size in ", x.str());
  in_shape_ = x.shape();
  Tensor y = Tensor::empty({x.dim(0), x.dim(1)});
  cpu::global_avg_pool2d_forward(x.dim(0) * x.dim(1), x.dim(2) * x.dim(3), x.f32(), y.f32());
  return y;
}

Tensor GlobalAvgPool2d::backward(const Tensor& dy) {
  TERN_CHECK(!in_shape_.empty(), "GlobalAvgPool2d: backward before forward");
  check_dy("GlobalAvgPool2d", {in_shape_[0], in_shape_[1]}, dy);
  Tensor dx = Tensor::empty(in_shape_);
  cpu::global_avg_pool2d_backward(in_shape_[0] * in_shape_[1], in_shape_[2] * in_shape_[3], dy.f32(),
                                  dx.f32());
  return dx;
}

}  // namespace tern
