#include "runtime/kernels/reference/embedding.h"

namespace tern::ref {

int64_t embedding_forward(const int32_t* ids, int64_t n, const float* table, int64_t vocab, int64_t dim,
                          float* out) {
  int64_t bad = -1;
  for (int64_t i = 0; i < n; ++i) {
    const bool valid = ids[i] >= 0 && ids[i] < vocab;
    if (!valid && bad < 0) bad = i;
    for (int64_t j = 0; j < dim; ++j) out[i * dim + j] = valid ? table[ids[i] * dim + j] : 0.0f;
  }
  return bad;
}

void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t vocab, int64_t dim,
                        float* dtable) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) continue;
    for (int64_t j = 0; j < dim; ++j) dtable[ids[i] * dim + j] += dout[i * dim + j];
  }
}

}  // namespace tern::ref
