// Naive reference for the cpu embedding kernels (runtime/kernels/cpu/embedding.h): the same
// signatures and semantics, written as plain index loops. Tests only.
#pragma once

#include <cstdint>

namespace tern::ref {

int64_t embedding_forward(const int32_t* ids, int64_t n, const float* table, int64_t vocab, int64_t dim,
                          float* out);
void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t vocab, int64_t dim,
                        float* dtable);

}  // namespace tern::ref
