#include "runtime/nn/conv.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace tern {
namespace {
// Shared by describe() and the constructor's checks (a constructor must not call a virtual).
std::string label(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t groups) {
  return detail::concat("Conv2d(", in, "->", out, ", k=", k, ", s=", stride, ", p=", pad,
                        groups > 1 ? detail::concat(", g=", groups) : std::string(), ")");
}
}  // namespace

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Rng& rng, int64_t stride,
               int64_t padding, int64_t groups, bool has_bias)
    : in_(in_channels),
      out_(out_channels),
      kernel_(kernel),
      stride_(stride),
      padding_(padding),
      groups_(groups) {
  TERN_CHECK(in_ > 0 && out_ > 0 && kernel_ > 0 && stride_ > 0 && padding_ >= 0 && groups_ > 0,
             label(in_, out_, kernel_, stride_, padding_, groups_),
             ": channels, kernel, stride and groups must be positive, padding >= 0");
  TERN_CHECK(in_ % groups_ == 0 && out_ % groups_ == 0, label(in_, out_, kernel_, stride_, padding_, groups_),
             ": groups=", groups_, " must divide both channel counts");
  const int64_t fan_in = in_ / groups_ * kernel_ * kernel_;
  weight = Param(Tensor::empty({out_, in_ / groups_, kernel_, kernel_}));
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  float* w = weight.value.f32();
  for (int64_t i = 0; i < weight.value.numel(); ++i) w[i] = rng.uniform(-bound, bound);
  register_param("weight", weight);
  dw_scratch_ = Tensor::empty(weight.value.shape());
  if (has_bias) {
    bias = Param(Tensor::zeros({out_}), /*decays=*/false);
    register_param("bias", bias);
    db_scratch_ = Tensor::empty({out_});
  }
}

Conv2d::~Conv2d() = default;

cpu::Conv2dPlan& Conv2d::plan_for(const Conv2dShape& s) {
  auto it = std::find_if(plans_.begin(), plans_.end(), [&](const auto& p) { return p->shape() == s; });
  if (it == plans_.end()) {
    if (plans_.size() == kMaxPlans) plans_.erase(plans_.begin());
    plans_.push_back(std::make_unique<cpu::Conv2dPlan>(s));
  } else {
    std::rotate(it, it + 1, plans_.end());  // mark as most recently used
  }
  return *plans_.back();
}

Tensor Conv2d::forward(const Tensor& x) {
  TERN_CHECK(x.ndim() == 4 && x.dim(1) == in_ && x.dtype() == DType::f32, describe(),
             ": expected f32 input [N, ", in_, ", H, W], got ", x.str());
  TERN_CHECK(x.dim(2) + 2 * padding_ >= kernel_ && x.dim(3) + 2 * padding_ >= kernel_, describe(), ": input ",
             x.str(), " is smaller than the kernel even with padding");
  const Conv2dShape s{.n = x.dim(0),
                      .c_in = in_,
                      .h = x.dim(2),
                      .w = x.dim(3),
                      .c_out = out_,
                      .kh = kernel_,
                      .kw = kernel_,
                      .stride_h = stride_,
                      .stride_w = stride_,
                      .pad_h = padding_,
                      .pad_w = padding_,
                      .groups = groups_};
  plan_ = &plan_for(s);
  x_ = x;
  Tensor y = Tensor::empty({s.n, out_, s.out_h(), s.out_w()});
  plan_->forward(x.f32(), weight.value.f32(), bias.value.defined() ? bias.value.f32() : nullptr, y.f32());
  return y;
}

Tensor Conv2d::backward(const Tensor& dy) {
  TERN_CHECK(x_.defined() && plan_ != nullptr, describe(), ": backward before forward");
  const Conv2dShape& s = plan_->shape();
  const Shape expected{s.n, out_, s.out_h(), s.out_w()};
  TERN_CHECK(dy.shape() == expected && dy.dtype() == DType::f32, describe(), ": expected f32 gradient ",
             shape_str(expected), ", got ", dy.str());
  const bool has_bias = bias.value.defined();
  Tensor dx;
  if (input_grad()) {
    dx = Tensor::empty(x_.shape());
    plan_->backward(x_.f32(), dy.f32(), weight.value.f32(), dx.f32(), dw_scratch_.f32(),
                    has_bias ? db_scratch_.f32() : nullptr);
  } else {  // first layer: nobody needs dx
    plan_->backward_weights(x_.f32(), dy.f32(), dw_scratch_.f32(), has_bias ? db_scratch_.f32() : nullptr);
  }
  float* gw = weight.grad.f32();
  const float* dw = dw_scratch_.f32();
  const int64_t nw = weight.grad.numel();
#pragma omp simd
  for (int64_t i = 0; i < nw; ++i) gw[i] += dw[i];
  if (has_bias) {
    float* gb = bias.grad.f32();
    const float* db = db_scratch_.f32();
    for (int64_t i = 0; i < out_; ++i) gb[i] += db[i];
  }
  return dx;
}

std::string Conv2d::describe() const { return label(in_, out_, kernel_, stride_, padding_, groups_); }

}  // namespace tern
