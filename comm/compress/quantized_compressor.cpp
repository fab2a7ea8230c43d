// Quantizers on the wire: every rank's packet through allgather, or the two-phase compressed
// allreduce (1-bit Adam's): chunks to their owners, averaged there, sent back compressed.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "comm/compress/compressors.h"
#include "comm/compress/error_feedback.h"
#include "comm/compress/exchange.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Point-to-point tag of the two-phase exchange's first phase.
constexpr int kScatterTag = 0x51ed;

class QuantizedCompressor : public Compressor {
 public:
  QuantizedCompressor(std::unique_ptr<Quantizer> q, QuantizedCollective collective, bool error_feedback,
                      int64_t block, uint64_t seed, const BucketLayout& layout, int rank, int world_size)
      : block_(block), q_(std::move(q)), collective_(collective), ef_on_(error_feedback), seed_(seed), rank_(rank),
        n_(layout_numel(layout)), worker_(error_feedback ? n_ : 0),
        server_(error_feedback && collective == QuantizedCollective::twophase
                    ? even_counts(n_, world_size)[static_cast<size_t>(rank)]
                    : 0) {
    int64_t at = 0;
    for (const Segment& seg : layout) {
      if (seg.numel == 0) continue;
      starts_.push_back(at);
      at += seg.numel;
    }
    starts_.push_back(at);
  }

  std::string spec() const override {
    return detail::concat(q_->spec(), q_->spec().find(':') == std::string::npos ? ":" : ",", "collective=",
                          collective_ == QuantizedCollective::allgather ? "allgather" : "twophase",
                          ",ef=", ef_on_ ? 1 : 0, ",block=", block_);
  }
  StateTensors state() override {
    if (!ef_on_) return {};
    return {{"worker_residual", worker_.residual()}, {"server_residual", server_.residual()}};
  }

  void reduce(Tensor grad, const BucketLayout& layout, Communicator& comm, const StepInfo& step,
              SparseVector* sparse) override {
    if (sparse) sparse->clear();
    TERN_CHECK(layout_numel(layout) == n_, "quantized compressor: built for ", n_, " elements, given ",
               layout_numel(layout));
    if (n_ == 0) return;
    // Stochastic rounding differs per rank and step but is reproducible.
    Rng rng(mix_seed(seed_ ^ mix_seed(static_cast<uint64_t>(step.step))), static_cast<uint64_t>(rank_));
    gather_segments(grad, layout);
    if (collective_ == QuantizedCollective::allgather)
      reduce_allgather(comm, rng);
    else
      reduce_twophase(comm, rng);
    scatter_segments(grad, layout);
  }

 private:
  void gather_segments(const Tensor& grad, const BucketLayout& layout) {
    if (x_.numel() != n_) x_ = Tensor::empty({n_});
    int64_t at = 0;
    for (const Segment& s : layout) {
      std::memcpy(x_.f32() + at, grad.f32() + s.offset, static_cast<size_t>(s.numel) * sizeof(float));
      at += s.numel;
    }
  }
  void scatter_segments(Tensor& grad, const BucketLayout& layout) const {
    int64_t at = 0;
    for (const Segment& s : layout) {
      std::memcpy(grad.f32() + s.offset, x_.f32() + at, static_cast<size_t>(s.numel) * sizeof(float));
      at += s.numel;
    }
  }

  // The pieces of [begin, end) (flattened compressed positions) cut at tensor boundaries: each
  // piece is quantized with its own scale, so a layer with small gradients is never scaled by a
  // neighbour's (one scale across layers made sign compression diverge).
  template <typename F>
  void for_each_piece(int64_t begin, int64_t end, F&& f) const {
    for (size_t i = 0; i + 1 < starts_.size(); ++i) {
      const int64_t b = std::max(begin, starts_[i]), e = std::min(end, starts_[i + 1]);
      if (b >= e) continue;
      if (block_ <= 0) {
        f(b, e - b);
        continue;
      }
      // Blocks are aligned to the tensor's start, so every rank and both phases cut alike.
      for (int64_t at = b; at < e;) {
        const int64_t block_end = starts_[i] + ((at - starts_[i]) / block_ + 1) * block_;
        const int64_t stop = std::min(e, block_end);
        f(at, stop - at);
        at = stop;
      }
    }
  }
  size_t range_bytes(int64_t begin, int64_t end) const {
    size_t bytes = 0;
    for_each_piece(begin, end, [&](int64_t, int64_t n) { bytes += q_->encoded_bytes(n); });
    return bytes;
  }

  // Encodes the flattened positions [begin, end) of x piece by piece (x[0] holds position x_base;
  // the residual of `ef` added first when on, ef indexed from ef_base) into out, and keeps what was
  // not sent.
  void encode_range(float* x, int64_t x_base, int64_t begin, int64_t end, ErrorFeedback& ef, int64_t ef_base,
                    uint8_t* out, Rng& rng) {
    for_each_piece(begin, end, [&](int64_t at, int64_t n) {
      float* xs = x + (at - x_base);
      if (ef_on_) ef.add_to(xs, at - ef_base, n);
      q_->encode(xs, n, out, rng);
      if (ef_on_) {
        sent_.assign(static_cast<size_t>(n), 0.0f);
        q_->decode_add(out, n, 1.0f, sent_.data());
        ef.keep(xs, sent_.data(), at - ef_base, n);
      }
      out += q_->encoded_bytes(n);
    });
  }
  // out[at - out_base] += scale · decoded, for the flattened positions at of [begin, end).
  void decode_range(const uint8_t* in, int64_t begin, int64_t end, float scale, float* out, int64_t out_base) const {
    for_each_piece(begin, end, [&](int64_t at, int64_t n) {
      q_->decode_add(in, n, scale, out + (at - out_base));
      in += q_->encoded_bytes(n);
    });
  }

  void reduce_allgather(Communicator& comm, Rng& rng) {
    const int p = comm.size();
    auto t0 = Clock::now();
    const auto bytes = static_cast<int64_t>(range_bytes(0, n_));
    packet_.resize(static_cast<size_t>(bytes));
    encode_range(x_.f32(), 0, 0, n_, worker_, 0, packet_.data(), rng);
    stats_.compress_seconds += since(t0);
    t0 = Clock::now();
    allgather_bytes(comm, packet_, std::vector<int64_t>(static_cast<size_t>(p), bytes), gathered_, offsets_);
    stats_.comm_seconds += since(t0);
    t0 = Clock::now();
    std::memset(x_.f32(), 0, static_cast<size_t>(n_) * sizeof(float));
    const float scale = 1.0f / static_cast<float>(p);
    for (int r = 0; r < p; ++r) decode_range(gathered_.data() + offsets_[static_cast<size_t>(r)], 0, n_, scale, x_.f32(), 0);
    stats_.decompress_seconds += since(t0);
  }

  void reduce_twophase(Communicator& comm, Rng& rng) {
    const int p = comm.size(), me = comm.rank();
    const std::vector<int64_t> counts = even_counts(n_, p);
    std::vector<int64_t> starts(static_cast<size_t>(p) + 1, 0), sizes(static_cast<size_t>(p));
    for (int j = 0; j < p; ++j) {
      starts[static_cast<size_t>(j) + 1] = starts[static_cast<size_t>(j)] + counts[static_cast<size_t>(j)];
      sizes[static_cast<size_t>(j)] =
          static_cast<int64_t>(range_bytes(starts[static_cast<size_t>(j)], starts[static_cast<size_t>(j)] + counts[static_cast<size_t>(j)]));
    }
    const auto mine = static_cast<size_t>(me);
    const int64_t my_count = counts[mine];
    TERN_CHECK(!ef_on_ || server_.residual().numel() == my_count, "quantized compressor: built for another world size");

    // Phase 1: chunk j, compressed with the worker's error feedback, goes to rank j.
    auto t0 = Clock::now();
    std::vector<Tensor> out(static_cast<size_t>(p)), in(static_cast<size_t>(p));
    for (int j = 0; j < p; ++j) {
      const auto js = static_cast<size_t>(j);
      out[js] = Tensor::empty({sizes[js]}, DType::u8);
      encode_range(x_.f32(), 0, starts[js], starts[js] + counts[js], worker_, 0, out[js].data<uint8_t>(), rng);
    }
    stats_.compress_seconds += since(t0);
    t0 = Clock::now();
    std::vector<WorkPtr> works;
    for (int j = 0; j < p; ++j) {  // sends are buffered on every backend, so posting them first is safe
      if (j != me) works.push_back(comm.send_async(out[static_cast<size_t>(j)], j, kScatterTag));
    }
    for (int i = 0; i < p; ++i) {
      if (i == me) continue;
      in[static_cast<size_t>(i)] = Tensor::empty({sizes[mine]}, DType::u8);
      works.push_back(comm.recv_async(in[static_cast<size_t>(i)], i, kScatterTag));
    }
    for (auto& w : works) w->wait();
    in[mine] = out[mine];
    stats_.comm_seconds += since(t0);

    // This rank's chunk: the average of every rank's packet, compressed again (server feedback).
    t0 = Clock::now();
    // chunk_ holds flattened positions [my_begin, my_begin + my_count).
    const int64_t my_begin = starts[mine];
    chunk_.assign(static_cast<size_t>(my_count), 0.0f);
    const float scale = 1.0f / static_cast<float>(p);
    for (int i = 0; i < p; ++i)
      decode_range(in[static_cast<size_t>(i)].data<uint8_t>(), my_begin, my_begin + my_count, scale, chunk_.data(), my_begin);
    packet_.resize(static_cast<size_t>(sizes[mine]));
    encode_range(chunk_.data(), my_begin, my_begin, my_begin + my_count, server_, my_begin, packet_.data(), rng);
    stats_.decompress_seconds += since(t0);

    // Phase 2: every chunk's compressed average to every rank.
    t0 = Clock::now();
    allgather_bytes(comm, packet_, sizes, gathered_, offsets_);
    stats_.comm_seconds += since(t0);
    t0 = Clock::now();
    std::memset(x_.f32(), 0, static_cast<size_t>(n_) * sizeof(float));
    for (int j = 0; j < p; ++j) {
      const auto js = static_cast<size_t>(j);
      decode_range(gathered_.data() + offsets_[js], starts[js], starts[js] + counts[js], 1.0f, x_.f32(), 0);
    }
    stats_.decompress_seconds += since(t0);
  }

  int64_t block_;  // values per scale (0: one scale per tensor)
  std::unique_ptr<Quantizer> q_;
  QuantizedCollective collective_;
  bool ef_on_;
  uint64_t seed_;
  int rank_;
  int64_t n_;
  ErrorFeedback worker_, server_;
  Tensor x_;  // the compressed segments, contiguous
  std::vector<float> sent_, chunk_;
  std::vector<uint8_t> packet_, gathered_;
  std::vector<int64_t> offsets_;
  std::vector<int64_t> starts_;  // flattened start of each non-empty tensor, then n
};

}  // namespace

std::unique_ptr<Compressor> make_quantized_compressor(std::unique_ptr<Quantizer> quantizer,
                                                      QuantizedCollective collective, bool error_feedback,
                                                      int64_t block, uint64_t seed, const BucketLayout& layout,
                                                      int rank, int world_size) {
  TERN_CHECK(block >= 0, "quantized compressor: block must be >= 0, got ", block);
  TERN_CHECK(quantizer != nullptr, "quantized compressor: no quantizer");
  TERN_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "quantized compressor: rank ", rank, " of ",
             world_size);
  return std::make_unique<QuantizedCompressor>(std::move(quantizer), collective, error_feedback, block, seed,
                                               layout, rank, world_size);
}

}  // namespace tern
