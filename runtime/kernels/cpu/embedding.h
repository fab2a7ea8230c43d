// Embedding lookup kernels: rows of a table gathered by integer ids, and the gradient scattered
// back into the table. Used by the token and position embedding of gpt-tiny (runtime/nn/embedding.h).
#pragma once

#include <cstdint>

namespace tern::cpu {

// out[i, :] = table[ids[i], :] for i in [0, n); table is [vocab, dim], out [n, dim]. Returns the
// index i of the first id outside [0, vocab) (its row is written as zeros), or -1 when every id
// is valid: kernels do not throw, the caller reports it.
int64_t embedding_forward(const int32_t* ids, int64_t n, const float* table, int64_t vocab, int64_t dim,
                          float* out);

// dtable[ids[i], :] += dout[i, :] for every i, in order of i (so repeated ids sum the same way
// every run). Ids outside [0, vocab) are skipped; the forward pass has reported them already.
void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t vocab, int64_t dim,
                        float* dtable);

}  // namespace tern::cpu
