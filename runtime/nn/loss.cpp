#include "runtime/nn/loss.h"

#include "runtime/kernels/cpu/loss.h"

namespace tern {

LossResult softmax_cross_entropy(const Tensor& logits, const std::vector<int32_t>& labels, Tensor* dlogits) {
  TERN_CHECK(logits.defined() && logits.dtype() == DType::f32 && logits.ndim() == 2,
             "softmax_cross_entropy: expected f32 logits [N, K], got ", logits.str());
  const int64_t N = logits.dim(0), K = logits.dim(1);
  TERN_CHECK(N > 0 && K > 0, "softmax_cross_entropy: logits ", logits.str(),
             " must have at least one sample and one class");
  TERN_CHECK(static_cast<int64_t>(labels.size()) == N, "softmax_cross_entropy: ", labels.size(),
             " labels for logits ", logits.str(), " (expected ", N, ")");

  float* d = nullptr;
  if (dlogits) {
    // Reusing the caller's buffer saves an allocation per step; it must not be the logits, which
    // the kernel reads after writing each row's gradient.
    const bool reusable = dlogits->defined() && dlogits->dtype() == DType::f32 &&
                          dlogits->shape() == logits.shape() && !dlogits->shares_storage(logits);
    if (!reusable) *dlogits = Tensor::empty(logits.shape());
    d = dlogits->f32();
  }
  int64_t bad = -1;
  const float loss = cpu::softmax_cross_entropy(logits.f32(), labels.data(), N, K, d, &bad);
  TERN_CHECK(bad < 0, "softmax_cross_entropy: label ", bad >= 0 ? labels[bad] : 0, " of sample ", bad,
             " is outside [0, ", K, ") for logits ", logits.str());
  return {loss, cpu::count_correct(logits.f32(), labels.data(), N, K)};
}

}  // namespace tern
