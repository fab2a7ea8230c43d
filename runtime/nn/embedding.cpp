#include "runtime/nn/embedding.h"

#include <cmath>

#include "runtime/kernels/cpu/embedding.h"
#include "runtime/nn/init.h"

namespace tern {

Embedding::Embedding(int64_t vocab, int64_t max_seq_len, int64_t dim, Rng& rng)
    : vocab_(vocab), max_seq_len_(max_seq_len), dim_(dim) {
  TERN_CHECK(vocab > 0 && max_seq_len > 0 && dim > 0, "Embedding(vocab=", vocab, ", seq=", max_seq_len,
             ", dim=", dim, "): sizes must be positive");
  token = Param(Tensor::empty({vocab, dim}));
  position = Param(Tensor::empty({max_seq_len, dim}));
  fill_normal(token.value, rng, kGptInitStd);
  fill_normal(position.value, rng, 0.01f);
  register_param("wte", token);
  register_param("wpe", position);
}

namespace {
// The ids as i32, converting an f32 tensor of whole numbers.
Tensor as_ids(const Tensor& x, const std::string& who) {
  if (x.dtype() == DType::i32) return x;
  TERN_CHECK(x.dtype() == DType::f32, who, ": expected i32 token ids, got ", x.str());
  Tensor ids = Tensor::empty(x.shape(), DType::i32);
  const float* f = x.f32();
  int32_t* out = ids.data<int32_t>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    TERN_CHECK(std::nearbyint(f[i]) == f[i] && std::fabs(f[i]) < 2e9f, who, ": token id ", f[i],
               " at flat position ", i, " of ", x.str(), " is not a whole number");
    out[i] = static_cast<int32_t>(f[i]);
  }
  return ids;
}
}  // namespace

Tensor Embedding::forward(const Tensor& x) {
  TERN_CHECK(x.defined() && x.ndim() == 2, describe(), ": expected token ids [B, T], got ",
             x.defined() ? x.str() : "an undefined tensor");
  const int64_t B = x.dim(0), T = x.dim(1);
  TERN_CHECK(T >= 1 && T <= max_seq_len_, describe(), ": sequence length ", T, " is outside [1, ",
             max_seq_len_, "] (the model's --seq-len)");
  ids_ = as_ids(x, describe());
  Tensor y = Tensor::empty({B, T, dim_});
  const int32_t* ids = ids_.data<int32_t>();
  const int64_t bad = cpu::embedding_forward(ids, B * T, token.value.f32(), vocab_, dim_, y.f32());
  TERN_CHECK(bad < 0, describe(), ": token id ", bad >= 0 ? ids[bad] : 0, " at [", bad / T, ", ", bad % T,
             "] is outside [0, ", vocab_, ") (is the model's vocabulary the dataset's?)");
  float* out = y.f32();
  const float* wpe = position.value.f32();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      float* row = out + (b * T + t) * dim_;
      const float* p = wpe + t * dim_;
#pragma omp simd
      for (int64_t c = 0; c < dim_; ++c) row[c] += p[c];
    }
  return y;
}

Tensor Embedding::backward(const Tensor& dy) {
  TERN_CHECK(ids_.defined(), describe(), ": backward before forward");
  const int64_t B = ids_.dim(0), T = ids_.dim(1);
  TERN_CHECK(dy.ndim() == 3 && dy.dim(0) == B && dy.dim(1) == T && dy.dim(2) == dim_, describe(),
             ": expected gradient [", B, ", ", T, ", ", dim_, "], got ", dy.str());
  const float* g = dy.f32();
  cpu::embedding_backward(ids_.data<int32_t>(), B * T, g, vocab_, dim_, token.grad.f32());
  float* dwpe = position.grad.f32();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      float* row = dwpe + t * dim_;
      const float* d = g + (b * T + t) * dim_;
#pragma omp simd
      for (int64_t c = 0; c < dim_; ++c) row[c] += d[c];
    }
  return input_grad() ? Tensor::zeros(ids_.shape()) : Tensor();
}

std::string Embedding::describe() const {
  return detail::concat("Embedding(vocab=", vocab_, ", seq=", max_seq_len_, ", dim=", dim_, ")");
}

}  // namespace tern
