#include "comm/compress/exchange.h"

#include <cstring>

#include "runtime/kernels/cpu/sparse_update.h"

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

void allgather_sparse(Communicator& comm, const SparseVector& mine, SparseVector& all) {
  TERN_CHECK(mine.indices.size() == mine.values.size(), "allgather_sparse: ", mine.indices.size(),
             " indices but ", mine.values.size(), " values");
  const size_t k = mine.size();
  // Packet: k indices (i32) then k values (f32).
  std::vector<uint8_t> packet(8 * k);
  if (k > 0) {
    std::memcpy(packet.data(), mine.indices.data(), 4 * k);
    std::memcpy(packet.data() + 4 * k, mine.values.data(), 4 * k);
  }
  std::vector<uint8_t> gathered;
  std::vector<int64_t> offsets;
  allgather_bytes(comm, packet, {}, gathered, offsets);
  const size_t total = gathered.size() / 8;
  all.indices.resize(total);
  all.values.resize(total);
  size_t at = 0;
  for (size_t r = 0; r + 1 < offsets.size(); ++r) {
    const size_t bytes = static_cast<size_t>(offsets[r + 1] - offsets[r]);
    TERN_CHECK(bytes % 8 == 0, "allgather_sparse: rank ", r, " sent a packet of ", bytes,
               " bytes, not a whole number of (index, value) pairs");
    const size_t kr = bytes / 8;
    const uint8_t* src = gathered.data() + offsets[r];
    if (kr > 0) {
      std::memcpy(all.indices.data() + at, src, 4 * kr);
      std::memcpy(all.values.data() + at, src + 4 * kr, 4 * kr);
    }
    at += kr;
  }
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
