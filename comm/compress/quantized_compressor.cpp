// Quantizers on the wire: every rank's packet through allgather, or the two-phase compressed
// allreduce (1-bit Adam's): chunks to their owners, averaged there, sent back compressed.
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
                      uint64_t seed, const BucketLayout& layout, int rank, int world_size)
      : q_(std::move(q)), collective_(collective), ef_on_(error_feedback), seed_(seed), rank_(rank),
        n_(layout_numel(layout)), worker_(error_feedback ? n_ : 0),
        server_(error_feedback && collective == QuantizedCollective::twophase
                    ? even_counts(n_, world_size)[static_cast<size_t>(rank)]
                    : 0) {}

  std::string spec() const override {
    return detail::concat(q_->spec(), q_->spec().find(':') == std::string::npos ? ":" : ",", "collective=",
                          collective_ == QuantizedCollective::allgather ? "allgather" : "twophase",
                          ",ef=", ef_on_ ? 1 : 0);
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

  // Encodes x[0, n) (plus the residual of `ef`, when on) into out and keeps what was not sent.
  void encode_with_feedback(float* x, int64_t n, ErrorFeedback& ef, int64_t ef_offset, uint8_t* out, Rng& rng) {
    if (ef_on_) ef.add_to(x, ef_offset, n);
    q_->encode(x, n, out, rng);
    if (ef_on_) {
      sent_.assign(static_cast<size_t>(n), 0.0f);
      q_->decode_add(out, n, 1.0f, sent_.data());
      ef.keep(x, sent_.data(), ef_offset, n);
    }
  }

  void reduce_allgather(Communicator& comm, Rng& rng) {
    const int p = comm.size();
    auto t0 = Clock::now();
    const auto bytes = static_cast<int64_t>(q_->encoded_bytes(n_));
    packet_.resize(static_cast<size_t>(bytes));
    encode_with_feedback(x_.f32(), n_, worker_, 0, packet_.data(), rng);
    stats_.compress_seconds += since(t0);
    t0 = Clock::now();
    allgather_bytes(comm, packet_, std::vector<int64_t>(static_cast<size_t>(p), bytes), gathered_, offsets_);
    stats_.comm_seconds += since(t0);
    t0 = Clock::now();
    std::memset(x_.f32(), 0, static_cast<size_t>(n_) * sizeof(float));
    const float scale = 1.0f / static_cast<float>(p);
    for (int r = 0; r < p; ++r) q_->decode_add(gathered_.data() + offsets_[static_cast<size_t>(r)], n_, scale, x_.f32());
    stats_.decompress_seconds += since(t0);
  }

  void reduce_twophase(Communicator& comm, Rng& rng) {
    const int p = comm.size(), me = comm.rank();
    const std::vector<int64_t> counts = even_counts(n_, p);
    std::vector<int64_t> starts(static_cast<size_t>(p) + 1, 0), sizes(static_cast<size_t>(p));
    for (int j = 0; j < p; ++j) {
      starts[static_cast<size_t>(j) + 1] = starts[static_cast<size_t>(j)] + counts[static_cast<size_t>(j)];
      sizes[static_cast<size_t>(j)] = static_cast<int64_t>(q_->encoded_bytes(counts[static_cast<size_t>(j)]));
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
      encode_with_feedback(x_.f32() + starts[js], counts[js], worker_, starts[js], out[js].data<uint8_t>(), rng);
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
    chunk_.assign(static_cast<size_t>(my_count), 0.0f);
    const float scale = 1.0f / static_cast<float>(p);
    for (int i = 0; i < p; ++i) q_->decode_add(in[static_cast<size_t>(i)].data<uint8_t>(), my_count, scale, chunk_.data());
    packet_.resize(static_cast<size_t>(sizes[mine]));
    encode_with_feedback(chunk_.data(), my_count, server_, 0, packet_.data(), rng);
    stats_.decompress_seconds += since(t0);

    // Phase 2: every chunk's compressed average to every rank.
    t0 = Clock::now();
    allgather_bytes(comm, packet_, sizes, gathered_, offsets_);
    stats_.comm_seconds += since(t0);
    t0 = Clock::now();
    std::memset(x_.f32(), 0, static_cast<size_t>(n_) * sizeof(float));
    for (int j = 0; j < p; ++j) {
      const auto js = static_cast<size_t>(j);
      q_->decode_add(gathered_.data() + offsets_[js], counts[js], 1.0f, x_.f32() + starts[js]);
    }
    stats_.decompress_seconds += since(t0);
  }

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
};

}  // namespace

std::unique_ptr<Compressor> make_quantized_compressor(std::unique_ptr<Quantizer> quantizer,
                                                      QuantizedCollective collective, bool error_feedback,
                                                      uint64_t seed, const BucketLayout& layout, int rank,
                                                      int world_size) {
  TERN_CHECK(quantizer != nullptr, "quantized compressor: no quantizer");
  TERN_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "quantized compressor: rank ", rank, " of ",
             world_size);
  return std::make_unique<QuantizedCompressor>(std::move(quantizer), collective, error_feedback, seed, layout,
                                               rank, world_size);
}

}  // namespace tern
