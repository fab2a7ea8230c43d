// gpt-tiny: a small GPT-2-style decoder (Radford et al. 2019) for character-level language
// modelling, flat so that a pipeline can split it between any two of its modules.
#include "models/registry.h"
#include "runtime/nn/embedding.h"
#include "runtime/nn/init.h"
#include "runtime/nn/transformer.h"
#include "runtime/rng.h"

namespace tern {

std::unique_ptr<Sequential> make_gpt_tiny(const ModelConfig& c) {
  TERN_CHECK(c.vocab > 0 && c.seq_len > 0 && c.n_layer > 0, "gpt-tiny: vocab (", c.vocab, "), seq_len (",
             c.seq_len, ") and n_layer (", c.n_layer, ") must be positive");
  TERN_CHECK(c.d_model > 0 && c.n_head > 0 && c.d_model % c.n_head == 0, "gpt-tiny: d_model ", c.d_model,
             " must be a positive multiple of n_head ", c.n_head);
  Rng rng(c.seed, /*stream=*/5);
  auto net = std::make_unique<Sequential>();
  net->emplace<Embedding>(c.vocab, c.seq_len, c.d_model, rng);
  const float residual_std = gpt_residual_std(c.n_layer);
  for (int64_t l = 0; l < c.n_layer; ++l)
    net->emplace<TransformerBlock>(c.d_model, c.n_head, rng, residual_std);
  net->emplace<LmHead>(c.d_model, c.vocab, rng);
  return net;
}

}  // namespace tern
