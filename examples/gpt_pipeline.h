// tern-gpt's parallel mode: a world of P x D ranks trains D data-parallel copies of gpt-tiny split
// into a P-stage pipeline (--pipeline-stages, --micro-batches, --schedule). Called by gpt.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "models/registry.h"
#include "runtime/data/fortunes.h"
#include "runtime/io/flags.h"
#include "runtime/rng.h"

namespace tern {

// --pipeline-stages, --micro-batches, --schedule, --stages, --recompute, --comm, --ranks.
void declare_gpt_parallel_flags(Flags& f);
// Usage errors (exit 2) of those flags that need no communicator.
void validate_gpt_parallel_flags(const Flags& f);
// Whether the command line asks for a pipeline or for ranks as threads; a world of several
// processes (ternrun, mpirun) is found out by the communicator.
bool gpt_parallel_requested(const Flags& f);
// One rank's training, evaluation and sampling; rank 0 prints and writes the metrics.
int train_gpt_rank(const Flags& f, Communicator& comm);
// --comm local: --ranks threads of this process, each running train_gpt_rank.
int train_gpt_local(const Flags& f);

// Shared by both paths, so that a pipelined run is the single-process run split up.

// gpt-tiny's configuration from the command line and the corpus's vocabulary.
ModelConfig gpt_model_config(const Flags& f, const CharCorpus& corpus);
// The text sampling continues: --prompt, or a new line (the first character of the vocabulary
// when the text has none).
std::string sample_prompt(const Flags& f, const CharCorpus& corpus);
// The next id from one position's logits [V]: drawn from softmax(logits / temperature) with
// rng.uniform(), or the argmax (lowest index on ties) at temperature 0. p is scratch space.
int32_t draw_next_id(const float* logits, int64_t V, float temperature, Rng& rng, std::vector<double>& p);

}  // namespace tern
