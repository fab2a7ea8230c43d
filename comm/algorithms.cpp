#include "comm/algorithms.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <utility>

#include "comm/reduce.h"

namespace tern {

Group::Group(Transport& transport, std::vector<int> members, int rank, uint64_t context,
             std::chrono::milliseconds timeout)
    : transport_(transport), members_(std::move(members)), rank_(rank), context_(context), timeout_(timeout) {
  TERN_CHECK(rank_ >= 0 && rank_ < size(), "Group: rank ", rank_, " is not in a group of ", size());
}

void Group::send(int peer, uint64_t tag, const void* data, size_t bytes) {
  transport_.send(members_[static_cast<size_t>(peer)], context_, tag, data, bytes);
  sent_.fetch_add(bytes, std::memory_order_relaxed);
}

void Group::count(uint64_t sent, uint64_t received) {
  sent_.fetch_add(sent, std::memory_order_relaxed);
  received_.fetch_add(received, std::memory_order_relaxed);
}

void Group::recv(int peer, uint64_t tag, void* data, size_t bytes) {
  transport_.recv(members_[static_cast<size_t>(peer)], context_, tag, data, bytes, timeout_);
  received_.fetch_add(bytes, std::memory_order_relaxed);
}

std::unique_ptr<PostedRecv> Group::post_recv(int peer, uint64_t tag, void* data, size_t bytes) {
  return transport_.post_recv(members_[static_cast<size_t>(peer)], context_, tag, data, bytes);
}

std::unique_ptr<PostedRecv> Group::post_recv_reduce(int peer, uint64_t tag, void* data, size_t bytes,
                                                   RecvReduction how) {
  return transport_.post_recv_reduce(members_[static_cast<size_t>(peer)], context_, tag, data, bytes, how);
}

void Group::wait(PostedRecv& recv) {
  recv.wait(timeout_);
  received_.fetch_add(recv.bytes(), std::memory_order_relaxed);
}

namespace {

int mod(int a, int p) { return ((a % p) + p) % p; }

bool power_of_two(int n) { return n > 0 && std::has_single_bit(static_cast<unsigned>(n)); }
// Groups where the log2 P algorithms (halving-doubling, recursive-doubling allgather) are chosen.
bool doubling_group(int size) { return size >= 4 && power_of_two(size); }

// Contiguous blocks of a buffer, in elements: block b is [offset[b], offset[b] + count[b]).
struct Blocks {
  std::vector<int64_t> offset;
  std::vector<int64_t> count;
};

Blocks blocks_from_counts(const std::vector<int64_t>& counts) {
  Blocks blocks;
  blocks.count = counts;
  blocks.offset.resize(counts.size());
  int64_t at = 0;
  for (size_t b = 0; b < counts.size(); ++b) {
    blocks.offset[b] = at;
    at += counts[b];
  }
  return blocks;
}

int64_t chunk_elements(size_t chunk_bytes, size_t elem_size) {
  if (chunk_bytes == 0) return std::numeric_limits<int64_t>::max();
  return std::max<int64_t>(1, static_cast<int64_t>(chunk_bytes / elem_size));
}

}  // namespace

size_t ring_chunk_for_blocks(const AlgorithmOptions& options, size_t block_bytes) {
  const size_t lo = options.ring_chunk_bytes;
  if (lo == 0 || options.ring_chunk_max_bytes <= lo) return lo;
  return std::clamp(block_bytes / 4, lo, options.ring_chunk_max_bytes);
}

namespace {

// What a ring pass does with a received chunk.
struct RingReduction {
  bool reduce = false;  // false: the chunk is copied into place (allgather)
  DType dtype = DType::f32;
  ReduceOp op = ReduceOp::sum;
};

// P - 1 steps around the ring. At step s this rank sends block (rank - s + shift) to the next rank
// and receives block (rank - s - 1 + shift) from the previous one. The received block is the one it
// sends at step s + 1, so each chunk is forwarded as soon as it has arrived (and been reduced):
// successive chunks overlap along the ring instead of whole blocks waiting for each other.
// With shift = -1 and reduction, rank r ends holding the full reduction of block r (reduce-scatter);
// with shift = 0 and copying, every rank ends with every block (allgather, rank r starting with r).
//
// The recvs are posted ahead of need (a window of them), so that chunks arriving while this rank
// is still sending land where they are needed instead of in the transport's mailbox (a copy and an
// allocation more per chunk): straight into place when copying, and as reducing recvs when
// reducing, which the shared-memory and tcp transports reduce into place as the chunk arrives
// (from the ring, or from the socket a cache-sized piece at a time) instead of landing it in
// scratch to be reduced afterwards: one pass over the chunk less.
void ring_pass(Group& group, uint64_t tag, char* buffer, const Blocks& blocks, size_t elem_size, int shift,
               const RingReduction& how, const AlgorithmOptions& options) {
  const int size = group.size();
  const int rank = group.rank();
  if (size == 1) return;
  const int next = mod(rank + 1, size);
  const int prev = mod(rank - 1, size);
  const int64_t largest = *std::max_element(blocks.count.begin(), blocks.count.end());
  const int64_t chunk =
      chunk_elements(ring_chunk_for_blocks(options, static_cast<size_t>(largest) * elem_size), elem_size);

  struct Piece {
    char* at;
    size_t bytes;
    bool forward;  // sent on to the next rank once received
  };
  auto add_chunks = [&](int block, bool forward, std::vector<Piece>& into) {
    const auto b = static_cast<size_t>(block);
    for (int64_t begin = 0; begin < blocks.count[b]; begin += chunk) {
      const int64_t len = std::min(chunk, blocks.count[b] - begin);
      into.push_back({buffer + static_cast<size_t>(blocks.offset[b] + begin) * elem_size,
                      static_cast<size_t>(len) * elem_size, forward});
    }
  };
  std::vector<Piece> outgoing;  // this rank's first block
  add_chunks(mod(rank + shift, size), false, outgoing);
  std::vector<Piece> incoming;  // in the order they arrive: step by step, each block front to back
  for (int step = 0; step < size - 1; ++step) {
    add_chunks(mod(rank - step - 1 + shift, size), step + 1 < size - 1, incoming);
  }

  // Reducing recvs may hold scratch of a chunk each (Transport::post_recv_reduce's default): keep
  // that within options.ring_window_bytes.
  size_t window = std::min(incoming.size(), kMaxPostedRecvs);
  if (how.reduce) {
    const size_t chunk_bytes = static_cast<size_t>(std::min(chunk, largest)) * elem_size;
    window =
        std::min(window, std::max<size_t>(1, options.ring_window_bytes / std::max<size_t>(1, chunk_bytes)));
  }
  std::vector<std::unique_ptr<PostedRecv>> posted(window);
  size_t next_post = 0;
  auto post_next = [&] {
    const Piece& piece = incoming[next_post];
    posted[next_post % window] =
        how.reduce ? group.post_recv_reduce(prev, tag, piece.at, piece.bytes, {how.dtype, how.op})
                   : group.post_recv(prev, tag, piece.at, piece.bytes);
    ++next_post;
  };
  while (next_post < window) post_next();

  for (const Piece& piece : outgoing) group.send(next, tag, piece.at, piece.bytes);
  for (size_t k = 0; k < incoming.size(); ++k) {
    const Piece& piece = incoming[k];
    std::unique_ptr<PostedRecv>& recv = posted[k % window];
    group.wait(*recv);
    recv.reset();
    if (next_post < incoming.size()) post_next();  // in the place just freed, before forwarding
    if (piece.forward) group.send(next, tag, piece.at, piece.bytes);
  }
}

}  // namespace

void allreduce_ring(Group& group, uint64_t tag, void* data, int64_t n, DType dtype, ReduceOp op,
                    const AlgorithmOptions& options) {
  if (group.size() == 1 || n == 0) return;
  const Blocks blocks = blocks_from_counts(even_counts(n, group.size()));
  const size_t elem_size = dtype_size(dtype);
  auto* buffer = static_cast<char*>(data);
  ring_pass(group, tag, buffer, blocks, elem_size, -1, {true, dtype, op}, options);
  ring_pass(group, tag, buffer, blocks, elem_size, 0, {}, options);
}

void allreduce_halving_doubling(Group& group, uint64_t tag, void* data, int64_t n, DType dtype, ReduceOp op) {
  const int size = group.size();
  const int rank = group.rank();
  TERN_CHECK(power_of_two(size), "allreduce_halving_doubling: a group of ", size,
             " ranks (a power of two is needed)");
  if (size == 1 || n == 0) return;
  const size_t elem = dtype_size(dtype);
  auto* buffer = static_cast<char*>(data);
  auto at = [&](int64_t i) { return buffer + static_cast<size_t>(i) * elem; };
  auto bytes = [&](int64_t lo, int64_t hi) { return static_cast<size_t>(hi - lo) * elem; };
  struct Step {
    int partner;
    int64_t kept_lo, kept_hi, sent_lo, sent_hi;
  };
  std::vector<Step> steps;
  // Recursive halving: with the partner at distance d, keep one half of the current range (the
  // lower one if our bit d is clear) and reduce the partner's copy of it in; send the other half.
  int64_t lo = 0, hi = n;
  for (int d = size / 2; d >= 1; d /= 2) {
    const int64_t mid = lo + (hi - lo) / 2;
    const bool lower = (rank & d) == 0;
    const Step step{rank ^ d, lower ? lo : mid, lower ? mid : hi, lower ? mid : lo, lower ? hi : mid};
    const auto recv = group.post_recv_reduce(step.partner, tag, at(step.kept_lo), bytes(step.kept_lo, step.kept_hi),
                                             {dtype, op});
    group.send(step.partner, tag, at(step.sent_lo), bytes(step.sent_lo, step.sent_hi));
    group.wait(*recv);
    steps.push_back(step);
    lo = step.kept_lo;
    hi = step.kept_hi;
  }
  // Recursive doubling, the steps in reverse: swap the reduced halves back.
  for (auto step = steps.rbegin(); step != steps.rend(); ++step) {
    const auto recv = group.post_recv(step->partner, tag, at(step->sent_lo), bytes(step->sent_lo, step->sent_hi));
    group.send(step->partner, tag, at(step->kept_lo), bytes(step->kept_lo, step->kept_hi));
    group.wait(*recv);
  }
}

void allreduce_recursive_doubling(Group& group, uint64_t tag, void* data, int64_t n, DType dtype,
                                  ReduceOp op) {
  const int size = group.size();
  const int rank = group.rank();
  if (size == 1 || n == 0) return;
  const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  std::vector<char> scratch(bytes);
  auto exchange_and_reduce = [&](int peer) {
    // Posted first: the partner's data lands in scratch while this rank is still sending its own.
    const std::unique_ptr<PostedRecv> incoming = group.post_recv(peer, tag, scratch.data(), bytes);
    group.send(peer, tag, data, bytes);
    group.wait(*incoming);
    // Both partners compute a op b; sum and max commute, so every rank ends bit-identical.
    reduce_into(data, scratch.data(), n, dtype, op);
  };

  // Fold a non-power-of-two world onto the largest power of two below it: the first 2 * extra
  // ranks pair up, the even one hands its data to the odd one and waits for the result.
  int pof2 = 1;
  while (pof2 * 2 <= size) pof2 *= 2;
  const int extra = size - pof2;
  int folded_rank = rank - extra;
  if (rank < 2 * extra) {
    if (rank % 2 == 0) {
      group.send(rank + 1, tag, data, bytes);
      folded_rank = -1;
    } else {
      group.recv(rank - 1, tag, scratch.data(), bytes);
      reduce_into(data, scratch.data(), n, dtype, op);
      folded_rank = rank / 2;
    }
  }
  if (folded_rank >= 0) {
    for (int mask = 1; mask < pof2; mask <<= 1) {
      const int partner = folded_rank ^ mask;
      exchange_and_reduce(partner < extra ? partner * 2 + 1 : partner + extra);
    }
  }
  if (rank < 2 * extra) {
    if (rank % 2 == 1) {
      group.send(rank - 1, tag, data, bytes);
    } else {
      group.recv(rank + 1, tag, data, bytes);
    }
  }
}

void allreduce(Group& group, uint64_t tag, void* data, int64_t n, DType dtype, ReduceOp op,
               const AlgorithmOptions& options) {
  if (n == 0) return;
  const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  if (options.world_collectives != nullptr && bytes <= options.world_max_bytes && group.size() > 1) {
    const WorldCollectives::Moved moved = options.world_collectives->allreduce(
        data, n, dtype, op == ReduceOp::avg ? ReduceOp::sum : op, group.timeout());
    group.count(moved.sent, moved.received);
  } else if (bytes < options.small_message_bytes) {
    allreduce_recursive_doubling(group, tag, data, n, dtype, op);
  } else if (bytes <= options.halving_doubling_max_bytes && doubling_group(group.size())) {
    allreduce_halving_doubling(group, tag, data, n, dtype, op);
  } else {
    allreduce_ring(group, tag, data, n, dtype, op, options);
  }
  if (op == ReduceOp::avg) finish_average(data, n, dtype, group.size());
}

void reduce_scatter(Group& group, uint64_t tag, const void* in, void* out, int64_t n, DType dtype,
                    ReduceOp op, const AlgorithmOptions& options) {
  const std::vector<int64_t> counts = even_counts(n, group.size());
  const Blocks blocks = blocks_from_counts(counts);
  const size_t elem_size = dtype_size(dtype);
  const auto mine = static_cast<size_t>(group.rank());
  const size_t out_bytes = static_cast<size_t>(counts[mine]) * elem_size;
  if (group.size() == 1) {
    std::memmove(out, in, out_bytes);
  } else if (n > 0) {
    // The ring reduces in place, and `in` is the caller's: work on a copy.
    std::vector<char> work(static_cast<const char*>(in), static_cast<const char*>(in) + n * elem_size);
    ring_pass(group, tag, work.data(), blocks, elem_size, -1, {true, dtype, op}, options);
    std::memcpy(out, work.data() + static_cast<size_t>(blocks.offset[mine]) * elem_size, out_bytes);
  }
  if (op == ReduceOp::avg) finish_average(out, counts[mine], dtype, group.size());
}

void allgatherv_recursive_doubling(Group& group, uint64_t tag, void* out, const std::vector<int64_t>& counts,
                                   size_t elem_size) {
  const int size = group.size();
  const int rank = group.rank();
  TERN_CHECK(power_of_two(size), "allgatherv_recursive_doubling: a group of ", size,
             " ranks (a power of two is needed)");
  const Blocks blocks = blocks_from_counts(counts);
  auto* buffer = static_cast<char*>(out);
  // Blocks first .. first + n - 1 are adjacent in the output: one message.
  auto at = [&](int first) { return buffer + static_cast<size_t>(blocks.offset[static_cast<size_t>(first)]) * elem_size; };
  auto bytes = [&](int first, int n) {
    const auto last = static_cast<size_t>(first + n - 1);
    return static_cast<size_t>(blocks.offset[last] + blocks.count[last] - blocks.offset[static_cast<size_t>(first)]) *
           elem_size;
  };
  // With the partner at distance d, each holds the d blocks of its aligned group of d ranks and
  // sends them all; both know both sizes, so an empty range is skipped on both sides.
  for (int d = 1; d < size; d <<= 1) {
    const int partner = rank ^ d;
    const int mine = rank & ~(d - 1), theirs = partner & ~(d - 1);
    std::unique_ptr<PostedRecv> incoming;
    if (bytes(theirs, d) > 0) incoming = group.post_recv(partner, tag, at(theirs), bytes(theirs, d));
    if (bytes(mine, d) > 0) group.send(partner, tag, at(mine), bytes(mine, d));
    if (incoming) group.wait(*incoming);
  }
}

void allgatherv(Group& group, uint64_t tag, const void* in, void* out, const std::vector<int64_t>& counts,
                size_t elem_size, const AlgorithmOptions& options) {
  TERN_CHECK(static_cast<int>(counts.size()) == group.size(), "allgatherv: ", counts.size(),
             " counts for a group of ", group.size());
  const Blocks blocks = blocks_from_counts(counts);
  const auto mine = static_cast<size_t>(group.rank());
  auto* buffer = static_cast<char*>(out);
  const size_t total = static_cast<size_t>(blocks.offset.back() + counts.back()) * elem_size;
  // At every world size: at 4 ranks the segment's one wait per piece beats the ring's P-1 steps
  // (1 / 16 MB per rank, medians of 5 alternated runs: ring 683 / 11780 us, segment 190 / 6814),
  // and at 2 ranks it ties or wins too (outputs of 4 KB / 32 KB / 1 MB / 16 MB / 64 MB, medians of
  // 7-9 alternated runs: ring 5.4 / 18.0 / 46.7 / 2843 / 12058 us, segment 1.7 / 4.7 / 39.7 / 2483 /
  // 11424; 256 KB 17.4 against 22.2 in one run, 33.3 against 28.3 in another).
  if (options.world_collectives != nullptr && total <= options.world_max_bytes && group.size() > 1) {
    const WorldCollectives::Moved moved =
        options.world_collectives->allgatherv(in, out, counts, elem_size, group.timeout());
    group.count(moved.sent, moved.received);
    return;
  }
  std::memmove(buffer + static_cast<size_t>(blocks.offset[mine]) * elem_size, in,
               static_cast<size_t>(counts[mine]) * elem_size);
  if (total < options.small_gather_bytes && doubling_group(group.size())) {
    allgatherv_recursive_doubling(group, tag, out, counts, elem_size);
    return;
  }
  ring_pass(group, tag, buffer, blocks, elem_size, 0, {}, options);
}

void allgather(Group& group, uint64_t tag, const void* in, void* out, size_t bytes,
               const AlgorithmOptions& options) {
  const std::vector<int64_t> counts(static_cast<size_t>(group.size()), static_cast<int64_t>(bytes));
  allgatherv(group, tag, in, out, counts, 1, options);
}

void broadcast(Group& group, uint64_t tag, void* data, size_t bytes, int root,
               const AlgorithmOptions& options) {
  const int size = group.size();
  if (size == 1 || bytes == 0) return;
  const int relative = mod(group.rank() - root, size);
  auto member = [&](int relative_rank) { return mod(relative_rank + root, size); };
  if (bytes < options.small_message_bytes) {
    // Binomial tree: receive from the parent (relative rank minus its lowest set bit), then send
    // to the children, farthest first.
    int mask = 1;
    while (mask < size) {
      if (relative & mask) {
        group.recv(member(relative - mask), tag, data, bytes);
        break;
      }
      mask <<= 1;
    }
    for (mask >>= 1; mask > 0; mask >>= 1) {
      if (relative + mask < size) group.send(member(relative + mask), tag, data, bytes);
    }
    return;
  }
  // Chain root -> root+1 -> ...: each chunk is forwarded as soon as it arrives, so for large
  // messages every link carries data at once and the time is ~bytes / bandwidth + P chunks.
  // Every chunk's recv is posted up front (a window of them), straight into place, so chunks that
  // arrive while this rank forwards earlier ones skip the transport's mailbox.
  const size_t chunk = options.ring_chunk_bytes == 0 ? bytes : options.ring_chunk_bytes;
  const size_t chunks = (bytes + chunk - 1) / chunk;
  auto* buffer = static_cast<char*>(data);
  auto length = [&](size_t c) { return std::min(chunk, bytes - c * chunk); };
  const size_t window = relative > 0 ? std::min<size_t>(chunks, kMaxPostedRecvs) : 0;
  std::vector<std::unique_ptr<PostedRecv>> posted(window);
  size_t next_post = 0;
  auto post_next = [&] {
    posted[next_post % window] =
        group.post_recv(member(relative - 1), tag, buffer + next_post * chunk, length(next_post));
    ++next_post;
  };
  while (next_post < window) post_next();
  for (size_t c = 0; c < chunks; ++c) {
    if (relative > 0) {
      group.wait(*posted[c % window]);
      posted[c % window].reset();
      if (next_post < chunks) post_next();
    }
    if (relative + 1 < size) group.send(member(relative + 1), tag, buffer + c * chunk, length(c));
  }
}

void barrier(Group& group, uint64_t tag) {
  // Dissemination: in round k every rank signals rank + 2^k and waits for rank - 2^k; after
  // ceil(log2 P) rounds each rank has (transitively) heard from all. No pair meets twice.
  const int size = group.size();
  const int rank = group.rank();
  char token = 1;
  for (int distance = 1; distance < size; distance <<= 1) {
    group.send(mod(rank + distance, size), tag, &token, 1);
    group.recv(mod(rank - distance, size), tag, &token, 1);
  }
}

}  // namespace tern
