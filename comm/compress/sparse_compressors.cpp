// topk, randomk and dgc: compressors whose packets are (index, value) pairs.
#include <chrono>
#include <cmath>
#include <cstring>

#include "comm/compress/compressors.h"
#include "comm/compress/error_feedback.h"
#include "comm/compress/exchange.h"
#include "runtime/kernels/cpu/sparse_update.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int64_t keep_count(double ratio, int64_t numel) {
  if (numel == 0) return 0;
  return std::min<int64_t>(numel, std::max<int64_t>(1, static_cast<int64_t>(std::ceil(ratio * static_cast<double>(numel)))));
}

int64_t bucket_extent(const BucketLayout& layout) {
  int64_t end = 0;
  for (const Segment& s : layout) end = std::max(end, s.offset + s.numel);
  return end;
}

// The exchange all sparse compressors share: every rank's entries to every rank, then either the
// caller's sparse result (values divided by the world size) or the dense average in grad.
void exchange_sparse(Communicator& comm, const SparseVector& mine, const BucketLayout& layout, Tensor& grad,
                     SparseVector* sparse, SparseVector& scratch, CompressStats& stats, bool fp16_values) {
  auto t0 = Clock::now();
  SparseVector& all = sparse ? *sparse : scratch;
  allgather_sparse(comm, mine, all, fp16_values);
  stats.comm_seconds += since(t0);
  t0 = Clock::now();
  const float scale = 1.0f / static_cast<float>(comm.size());
  if (sparse) {
    for (float& v : all.values) v *= scale;
  } else {
    densify(all, scale, layout, grad.f32());
  }
  stats.decompress_seconds += since(t0);
}

class TopkCompressor : public Compressor {
 public:
  TopkCompressor(double ratio, const BucketLayout& layout) : ratio_(ratio), ef_(bucket_extent(layout)) {}
  std::string spec() const override { return detail::concat("topk:ratio=", ratio_); }
  bool sparse_result() const override { return true; }
  StateTensors state() override { return {{"residual", ef_.residual()}}; }

  void reduce(Tensor grad, const BucketLayout& layout, Communicator& comm, const StepInfo&,
              SparseVector* sparse) override {
    const auto t0 = Clock::now();
    float* g = grad.f32();
    mine_.clear();
    for (const Segment& s : layout) {
      ef_.add_to(g + s.offset, s.offset, s.numel);  // accumulated = g + residual
      topk_select(g + s.offset, s.numel, keep_count(ratio_, s.numel), static_cast<int32_t>(s.offset), mine_.indices);
      ef_.keep_all(g + s.offset, s.offset, s.numel);
    }
    mine_.values.resize(mine_.indices.size());
    cpu::sparse_gather(g, mine_.indices.data(), static_cast<int64_t>(mine_.size()), mine_.values.data());
    ef_.forget(mine_.indices.data(), static_cast<int64_t>(mine_.size()));  // what is sent leaves the residual
    stats_.compress_seconds += since(t0);
    exchange_sparse(comm, mine_, layout, grad, sparse, scratch_, stats_, false);
  }

 private:
  double ratio_;
  ErrorFeedback ef_;
  SparseVector mine_, scratch_;
};

class RandomkCompressor : public Compressor {
 public:
  RandomkCompressor(double ratio, bool unbiased, uint64_t seed, const BucketLayout& layout)
      : ratio_(ratio), unbiased_(unbiased), seed_(seed), ef_(unbiased ? 0 : bucket_extent(layout)) {
    for (const Segment& s : layout) layout_hash_ = mix_seed(layout_hash_ ^ static_cast<uint64_t>(s.offset));
  }
  std::string spec() const override {
    return detail::concat("randomk:ratio=", ratio_, ",unbiased=", unbiased_ ? 1 : 0);
  }
  bool sparse_result() const override { return true; }
  StateTensors state() override {
    if (unbiased_) return {};
    return {{"residual", ef_.residual()}};
  }

  void reduce(Tensor grad, const BucketLayout& layout, Communicator& comm, const StepInfo& step,
              SparseVector* sparse) override {
    auto t0 = Clock::now();
    float* g = grad.f32();
    // Every rank draws the same indices: the generator depends on (seed, step, this bucket) only.
    Rng rng(mix_seed(seed_ ^ mix_seed(static_cast<uint64_t>(step.step))), layout_hash_);
    idx_.clear();
    scale_.clear();
    for (const Segment& s : layout) {
      const int64_t k = keep_count(ratio_, s.numel);
      // Selection sampling (Knuth's algorithm S): k distinct indices, ascending, in one pass.
      int64_t needed = k;
      for (int64_t i = 0; i < s.numel && needed > 0; ++i) {
        const double left = static_cast<double>(s.numel - i);
        if (static_cast<double>(rng.uniform()) * left < static_cast<double>(needed)) {
          idx_.push_back(static_cast<int32_t>(s.offset + i));
          scale_.push_back(unbiased_ ? static_cast<float>(static_cast<double>(s.numel) / static_cast<double>(k)) : 1.0f);
          --needed;
        }
      }
      if (!unbiased_) {
        ef_.add_to(g + s.offset, s.offset, s.numel);
        ef_.keep_all(g + s.offset, s.offset, s.numel);
      }
    }
    const auto k = static_cast<int64_t>(idx_.size());
    if (values_.numel() != k) values_ = Tensor::empty({k});
    cpu::sparse_gather(g, idx_.data(), k, values_.f32());
    for (int64_t j = 0; j < k; ++j) values_.f32()[j] *= scale_[static_cast<size_t>(j)];
    if (!unbiased_) ef_.forget(idx_.data(), k);
    stats_.compress_seconds += since(t0);
    t0 = Clock::now();
    if (k > 0) comm.allreduce(values_, ReduceOp::avg);
    stats_.comm_seconds += since(t0);
    t0 = Clock::now();
    if (sparse) {
      sparse->indices = idx_;
      sparse->values.assign(values_.f32(), values_.f32() + k);
    } else {
      SparseVector v;
      v.indices = idx_;
      v.values.assign(values_.f32(), values_.f32() + k);
      densify(v, 1.0f, layout, g);
    }
    stats_.decompress_seconds += since(t0);
  }

 private:
  double ratio_;
  bool unbiased_;
  uint64_t seed_;
  uint64_t layout_hash_ = 0;
  ErrorFeedback ef_;
  std::vector<int32_t> idx_;
  std::vector<float> scale_;
  Tensor values_;
};

class DgcCompressor : public Compressor {
 public:
  DgcCompressor(const DgcOptions& options, bool fp16, const BucketLayout& layout, const BucketLayout& dense,
                int world_size)
      : fp16_(fp16), dgc_(options, layout, world_size), dense_velocity_(Tensor::zeros({std::max(bucket_extent(dense), int64_t{0})})) {}
  std::string spec() const override {
    const DgcOptions& o = dgc_.options();
    return detail::concat("dgc:ratio=", o.ratio, ",momentum=", o.momentum, ",clip=", o.clip,
                          ",warmup_epochs=", o.warmup_epochs, ",fp16=", fp16_ ? 1 : 0);
  }
  DType dense_wire_dtype() const override { return fp16_ ? DType::f16 : DType::f32; }
  bool sparse_result() const override { return true; }
  StateTensors state() override {
    return {{"velocity", dgc_.velocity()}, {"accumulation", dgc_.accumulation()}, {"dense_velocity", dense_velocity_}};
  }

  void after_dense_average(float* grad, const BucketLayout& dense) override {
    const auto m = static_cast<float>(dgc_.options().momentum);
    float* u = dense_velocity_.f32();
    for (const Segment& s : dense) {
      for (int64_t i = s.offset; i < s.offset + s.numel; ++i) {
        u[i] = m * u[i] + grad[i];
        grad[i] = u[i];
      }
    }
  }

  void reduce(Tensor grad, const BucketLayout& layout, Communicator& comm, const StepInfo& step,
              SparseVector* sparse) override {
    const auto t0 = Clock::now();
    mine_.clear();
    dgc_.compress(grad.f32(), step, mine_);
    stats_.compress_seconds += since(t0);
    exchange_sparse(comm, mine_, layout, grad, sparse, scratch_, stats_, fp16_);
  }

 private:
  bool fp16_;  // values and dense tensors travel as f16
  Dgc dgc_;
  Tensor dense_velocity_;  // momentum of the dense tensors, flat over the bucket
  SparseVector mine_, scratch_;
};

}  // namespace

std::unique_ptr<Compressor> make_topk_compressor(double ratio, const BucketLayout& layout) {
  TERN_CHECK(ratio > 0 && ratio <= 1, "topk: ratio must be in (0, 1], got ", ratio);
  return std::make_unique<TopkCompressor>(ratio, layout);
}

std::unique_ptr<Compressor> make_randomk_compressor(double ratio, bool unbiased, uint64_t seed,
                                                    const BucketLayout& layout) {
  TERN_CHECK(ratio > 0 && ratio <= 1, "randomk: ratio must be in (0, 1], got ", ratio);
  return std::make_unique<RandomkCompressor>(ratio, unbiased, seed, layout);
}

std::unique_ptr<Compressor> make_dgc_compressor(const DgcOptions& options, bool fp16, const BucketLayout& layout,
                                                const BucketLayout& dense, int world_size) {
  TERN_CHECK(options.ratio > 0 && options.ratio <= 1, "dgc: ratio must be in (0, 1], got ", options.ratio);
  TERN_CHECK(options.momentum >= 0 && options.momentum < 1, "dgc: momentum must be in [0, 1), got ",
             options.momentum);
  return std::make_unique<DgcCompressor>(options, fp16, layout, dense, world_size);
}

}  // namespace tern
