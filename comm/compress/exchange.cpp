#include "comm/compress/exchange.h"

#include <climits>
#include <cstdint>
#include <cstring>

#include "runtime/kernels/cpu/sparse_update.h"
#include "runtime/tensor/dtype.h"

namespace tern {

void allgather_bytes(Communicator& comm, const std::vector<uint8_t>& mine, std::vector<int64_t> sizes,
                     std::vector<uint8_t>& all, std::vector<int64_t>& offsets) {
  const int p = comm.size();
  if (sizes.empty()) {
    Tensor my_size = Tensor::empty({1}, DType::i64);
    my_size.data<int64_t>()[0] = static_cast<int64_t>(mine.size());
    Tensor all_sizes = Tensor::empty({p}, DType::i64);
    comm.allgather(my_size, all_sizes);
    sizes.assign(all_sizes.data<int64_t>(), all_sizes.data<int64_t>() + p);
  }
  TERN_CHECK(static_cast<int>(sizes.size()) == p && sizes[static_cast<size_t>(comm.rank())] ==
                                                        static_cast<int64_t>(mine.size()),
             "allgather_bytes: this rank's packet has ", mine.size(), " bytes, but the sizes say otherwise");
  offsets.assign(static_cast<size_t>(p) + 1, 0);
  for (int r = 0; r < p; ++r) offsets[static_cast<size_t>(r) + 1] = offsets[static_cast<size_t>(r)] + sizes[static_cast<size_t>(r)];
  all.resize(static_cast<size_t>(offsets.back()));
  if (p == 1) {
    if (!mine.empty()) std::memcpy(all.data(), mine.data(), mine.size());
    return;
  }
  // Tensors over the caller's memory: no copy in or out.
  Tensor in = Tensor::empty({static_cast<int64_t>(mine.size())}, DType::u8);
  if (!mine.empty()) std::memcpy(in.raw(), mine.data(), mine.size());
  Tensor out = Tensor::empty({offsets.back()}, DType::u8);
  comm.allgatherv(in, out, sizes);
  if (!all.empty()) std::memcpy(all.data(), out.raw(), all.size());
}

namespace {

constexpr uint32_t kPacketHalfFlag = 0x80000000u;  // header bit: values are f16

void put_varint(std::vector<uint8_t>& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

}  // namespace

// A sparse packet: the entry count (u32; its top bit says the values are f16), the indices as zig-zag varint deltas from the previous
// index (sorted indices of a tensor a thousand apart take 2 bytes instead of 4), then the values
// (f32, or f16 as DGC's reference code offers). At DGC's 0.1% this is ~6 bytes per entry instead of 8, which is what lets 4 ranks' ring
// allgather stay above 250x less traffic than a dense allreduce.
void encode_sparse_packet(const SparseVector& v, std::vector<uint8_t>& out, bool fp16_values) {
  const size_t k = v.size();
  TERN_CHECK(k < kPacketHalfFlag, "sparse packet: ", k, " entries, at most 2^31 - 1");
  out.resize(4);
  const auto header = static_cast<uint32_t>(k) | (fp16_values ? kPacketHalfFlag : 0u);
  std::memcpy(out.data(), &header, 4);
  int64_t prev = 0;
  for (int32_t i : v.indices) {
    const int64_t d = static_cast<int64_t>(i) - prev;
    put_varint(out, (static_cast<uint64_t>(d) << 1) ^ static_cast<uint64_t>(d >> 63));  // zig-zag
    prev = i;
  }
  const size_t at = out.size();
  if (fp16_values) {
    out.resize(at + 2 * k);
    std::vector<uint16_t> half(k);
    if (k > 0) f32_to_f16(v.values.data(), half.data(), k);
    if (k > 0) std::memcpy(out.data() + at, half.data(), 2 * k);
  } else {
    out.resize(at + 4 * k);
    if (k > 0) std::memcpy(out.data() + at, v.values.data(), 4 * k);
  }
}

void decode_sparse_packet(const uint8_t* p, size_t bytes, int rank, SparseVector& all) {
  auto bad = [&](const char* what) {
    return Error(detail::concat("sparse gradient packet from rank ", rank, " (", bytes, " bytes) is corrupt: ", what));
  };
  if (bytes < 4) throw bad("shorter than its header");
  uint32_t k = 0;
  std::memcpy(&k, p, 4);
  const bool half = (k & kPacketHalfFlag) != 0;
  k &= ~kPacketHalfFlag;
  const size_t value_bytes = half ? 2 : 4;
  if (static_cast<uint64_t>(k) * (1 + value_bytes) + 4 > bytes) throw bad("entry count larger than the packet");
  size_t at = 4;
  int64_t prev = 0;
  for (uint32_t j = 0; j < k; ++j) {
    uint64_t z = 0;
    for (int shift = 0;; shift += 7) {
      if (at >= bytes || shift > 63) throw bad("truncated index");
      const uint8_t b = p[at++];
      z |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
    const int64_t d = static_cast<int64_t>(z >> 1) ^ -static_cast<int64_t>(z & 1);
    prev += d;
    if (prev < 0 || prev > INT32_MAX) throw bad("index out of range");
    all.indices.push_back(static_cast<int32_t>(prev));
  }
  if (bytes - at != value_bytes * static_cast<size_t>(k)) throw bad("value bytes do not match the entry count");
  const size_t first = all.values.size();
  all.values.resize(first + k);
  if (k == 0) return;
  if (half) {
    std::vector<uint16_t> h(k);
    std::memcpy(h.data(), p + at, 2 * static_cast<size_t>(k));
    f16_to_f32(h.data(), all.values.data() + first, k);
  } else {
    std::memcpy(all.values.data() + first, p + at, 4 * static_cast<size_t>(k));
  }
}

void allgather_sparse(Communicator& comm, const SparseVector& mine, SparseVector& all, bool fp16_values) {
  TERN_CHECK(mine.indices.size() == mine.values.size(), "allgather_sparse: ", mine.indices.size(),
             " indices but ", mine.values.size(), " values");
  std::vector<uint8_t> packet, gathered;
  encode_sparse_packet(mine, packet, fp16_values);
  std::vector<int64_t> offsets;
  allgather_bytes(comm, packet, {}, gathered, offsets);
  all.clear();
  for (size_t r = 0; r + 1 < offsets.size(); ++r)
    decode_sparse_packet(gathered.data() + offsets[r], static_cast<size_t>(offsets[r + 1] - offsets[r]), static_cast<int>(r), all);
}

void densify(const SparseVector& v, float scale, const BucketLayout& layout, float* grad) {
  for (const Segment& s : layout) std::memset(grad + s.offset, 0, static_cast<size_t>(s.numel) * sizeof(float));
  cpu::sparse_axpy(grad, v.indices.data(), v.values.data(), static_cast<int64_t>(v.size()), scale);
}

int64_t layout_numel(const BucketLayout& layout) {
  int64_t n = 0;
  for (const Segment& s : layout) n += s.numel;
  return n;
}

}  // namespace tern
