#include "runtime/kernels/cpu/embedding.h"

#include <cstring>

namespace tern::cpu {

int64_t embedding_forward(const int32_t* ids, int64_t n, const float* table, int64_t vocab, int64_t dim,
                          float* out) {
  int64_t bad = -1;
  const size_t row_bytes = static_cast<size_t>(dim) * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (id < 0 || id >= vocab) {
      if (bad < 0) bad = i;
      std::memset(out + i * dim, 0, row_bytes);
      continue;
    }
    std::memcpy(out + i * dim, table + id * dim, row_bytes);
  }
  return bad;
}

void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t vocab, int64_t dim,
                        float* dtable) {
  // Serial over i: rows with the same id must be added in a fixed order for bit-exact runs, and
  // the table is small enough that one core keeps up with the rest of the step.
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (id < 0 || id >= vocab) continue;
    float* row = dtable + id * dim;
    const float* g = dout + i * dim;
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) row[j] += g[j];
  }
}

}  // namespace tern::cpu
