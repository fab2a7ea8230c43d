// Token and position embedding, the first module of gpt-tiny: token ids [B, T] become f32
// [B, T, C] rows, wte[id] + wpe[t] (GPT-2's learned absolute positions).
#pragma once

#include <cstdint>
#include <string>

#include "runtime/nn/module.h"
#include "runtime/rng.h"

namespace tern {

class Embedding : public Module {
 public:
  // wte ~ N(0, 0.02^2) and wpe ~ N(0, 0.01^2), as GPT-2 initialises them.
  Embedding(int64_t vocab, int64_t max_seq_len, int64_t dim, Rng& rng);

  // ids: i32 [B, T] with T <= max_seq_len and every id in [0, vocab). An f32 tensor of whole
  // numbers is accepted too (a pipeline may carry ids as f32). Throws tern::Error naming the
  // first bad id and its position otherwise.
  Tensor forward(const Tensor& ids) override;
  // Scatter-adds dy [B, T, C] into the wte rows of the ids and sums it over the batch into wpe.
  // Token ids have no gradient: with input_grad() it returns f32 zeros shaped like the ids (so a
  // chain's input gradient keeps the input's shape), otherwise an undefined tensor.
  Tensor backward(const Tensor& dy) override;
  std::string describe() const override;
  void swap_forward_state(ForwardState& s) override { s.swap(ids_); }

  int64_t vocab() const { return vocab_; }
  int64_t max_seq_len() const { return max_seq_len_; }
  int64_t dim() const { return dim_; }

  Param token;     // wte [vocab, dim]
  Param position;  // wpe [max_seq_len, dim]

 private:
  int64_t vocab_, max_seq_len_, dim_;
  Tensor ids_;  // i32 [B, T] of the last forward
};

}  // namespace tern
