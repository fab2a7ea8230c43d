// The wire side shared by the compressors: gathering every rank's sparse (index, value) packet or
// byte packet, and turning an aggregated sparse vector back into dense segments.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "comm/compress/compressor.h"

namespace tern {

// Every rank's entries, concatenated in rank order: one packet per rank (indices delta-coded as
// varints, values f32) through allgatherv, after an allgather of the packet sizes. Ranks may send
// nothing; world size 1 copies. fp16_values halves the value bytes (rounded to f16). A packet that does not parse is an Error naming its rank.
void allgather_sparse(Communicator& comm, const SparseVector& mine, SparseVector& all, bool fp16_values = false);

// The wire form of one rank's sparse entries (see exchange.cpp), and its parser, which appends
// to `all` and refuses a packet that does not parse with an Error naming `rank`.
void encode_sparse_packet(const SparseVector& v, std::vector<uint8_t>& out, bool fp16_values = false);
void decode_sparse_packet(const uint8_t* packet, size_t bytes, int rank, SparseVector& all);

// Every rank's bytes (sizes may differ), concatenated in rank order; offsets[r] is where rank r's
// packet starts and offsets[size] the total. When every rank's size is known in advance pass it
// as `sizes` (no size exchange); else pass an empty vector.
void allgather_bytes(Communicator& comm, const std::vector<uint8_t>& mine, std::vector<int64_t> sizes,
                     std::vector<uint8_t>& all, std::vector<int64_t>& offsets);

// Zeroes the layout's segments of grad, then adds scale * the entries of v.
void densify(const SparseVector& v, float scale, const BucketLayout& layout, float* grad);

// Sum of the segments' numel.
int64_t layout_numel(const BucketLayout& layout);

}  // namespace tern
