// The compressors behind the spec names, built for one bucket's layout (the segments that are
// compressed; the per-tensor policy in BucketCompressor sends the small ones dense).
#pragma once

#include <cstdint>
#include <memory>

#include "comm/compress/compressor.h"
#include "comm/compress/quantizers.h"
#include "comm/compress/sparsify.h"
#include "runtime/tensor/dtype.h"

namespace tern {

// none / fp16 / bf16: allreduce in `wire` precision (f16/bf16 are summed in f32 by the
// communicator and rounded once). f32 is plain dense averaging.
std::unique_ptr<Compressor> make_cast_compressor(DType wire);

// topk:ratio=R — per tensor the k = ceil(R·numel) largest |g + residual| go to every rank as
// (index, value) pairs through allgatherv; what was not sent stays in the residual.
std::unique_ptr<Compressor> make_topk_compressor(double ratio, const BucketLayout& layout);

// randomk:ratio=R — per tensor k = ceil(R·numel) indices drawn from a generator seeded by (seed,
// step, bucket), the same on every rank, so the values are averaged by one allreduce. unbiased:
// values scaled by numel/k and no residual; else error feedback.
std::unique_ptr<Compressor> make_randomk_compressor(double ratio, bool unbiased, uint64_t seed,
                                                    const BucketLayout& layout);

// dgc:... — Deep Gradient Compression's state (sparsify.h: Dgc) with the sparse exchange. The
// bucket's `dense` tensors (sent uncompressed) get plain momentum after averaging, as in DGC's
// reference code, because the optimizer's momentum is off under DGC. fp16: the values and the dense
// tensors travel as f16 (the reference's fp16_values), halving the bytes that dominate after warm-up.
std::unique_ptr<Compressor> make_dgc_compressor(const DgcOptions& options, bool fp16, const BucketLayout& layout,
                                                const BucketLayout& dense, int world_size);

// A quantizer (QSGD, TernGrad, sign, 1-bit) in one of two collectives:
//  - allgather: every rank's packet of the whole bucket to every rank (traffic O(n·p) per rank);
//  - twophase: compressed allreduce as in 1-bit Adam — each rank sends chunk j's packet to rank j,
//    rank j averages its chunk and sends it back compressed through allgather (O(n) per rank).
// error_feedback keeps a residual per phase (worker: the bucket; server: this rank's chunk).
// Each tensor is quantized in blocks of `block` values with a scale each (0: one per tensor), as
// QSGD's bucketing does: one scale over values of very different sizes made the 1-bit codecs lose
// 4-5 points of accuracy on the MLP (see README). seed drives the stochastic rounding (per rank and step).
enum class QuantizedCollective { allgather, twophase };
std::unique_ptr<Compressor> make_quantized_compressor(std::unique_ptr<Quantizer> quantizer,
                                                      QuantizedCollective collective, bool error_feedback,
                                                      int64_t block, uint64_t seed, const BucketLayout& layout,
                                                      int rank, int world_size);

}  // namespace tern
