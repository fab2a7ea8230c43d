#include "comm/compress/bucket_compressor.h"

#include <chrono>
#include <cstring>

#include "comm/compress/compressors.h"
#include "comm/compress/exchange.h"
#include "comm/compress/powersgd.h"
#include "comm/compress/spec.h"

namespace tern {
namespace {

constexpr double kMaxRatio = 1.0;

// twophase=1: the compressed allreduce; else every rank's packet through allgather.
QuantizedCollective parse_collective(CompressorSpec& spec) {
  const int64_t twophase = spec.get_int("twophase", 0, 0, 1);
  return twophase ? QuantizedCollective::twophase : QuantizedCollective::allgather;
}

// Builds the compressor named by spec for `layout` (the compressed segments). Reads every option
// it knows from spec; the caller checks that none is left over.
std::unique_ptr<Compressor> build(CompressorSpec& spec, const BucketLayout& layout, const BucketLayout& dense,
                                  const CompressorContext& c) {
  const std::string& name = spec.name();
  const uint64_t seed = mix_seed(c.seed ^ mix_seed(0xC0DE + c.bucket));
  if (name == "none") return make_cast_compressor(DType::f32);
  if (name == "fp16") return make_cast_compressor(DType::f16);
  if (name == "bf16") return make_cast_compressor(DType::bf16);
  if (name == "topk") return make_topk_compressor(spec.get_double("ratio", 0.01, 1e-9, kMaxRatio), layout);
  if (name == "randomk") {
    const double ratio = spec.get_double("ratio", 0.01, 1e-9, kMaxRatio);
    return make_randomk_compressor(ratio, spec.get_bool("unbiased", false), seed, layout);
  }
  if (name == "dgc") {
    DgcOptions o;
    o.ratio = spec.get_double("ratio", 0.001, 1e-9, kMaxRatio);
    o.momentum = spec.get_double("momentum", 0.9, 0, 0.999999);
    o.clip = spec.get_double("clip", 0, 0, 1e30);
    o.warmup_epochs = spec.get_int("warmup_epochs", 4, 0, 1000000);
    o.seed = seed;
    return make_dgc_compressor(o, spec.get_bool("fp16", true), layout, dense, c.world_size);
  }
  if (name == "qsgd" || name == "terngrad" || name == "signsgd" || name == "onebit") {
    std::unique_ptr<Quantizer> q;
    if (name == "qsgd") q = make_qsgd(static_cast<int>(spec.get_int("levels", 16, 1, 65535)));
    if (name == "terngrad") q = make_terngrad();
    if (name == "signsgd") q = make_signsgd();
    if (name == "onebit") q = make_onebit();
    const QuantizedCollective collective = parse_collective(spec);
    const bool ef = spec.get_bool("ef", !q->unbiased());
    // Defaults, measured on the MLP (4 ranks, 3 epochs; README): the 1-bit codecs need small
    // blocks to stay within a point of dense; QSGD's paper buckets 512 values; TernGrad scales per layer.
    const int64_t default_block = (name == "signsgd" || name == "onebit") ? 64 : name == "qsgd" ? 512 : 0;
    const int64_t block = spec.get_int("block", default_block, 0, int64_t{1} << 40);
    return make_quantized_compressor(std::move(q), collective, ef, block, seed, layout, c.rank, c.world_size);
  }
  if (name == "powersgd") {
    PowerSgdOptions o;
    o.rank = static_cast<int>(spec.get_int("rank", 1, 1, 1024));
    o.start_iter = spec.get_int("start_iter", 10, 0, int64_t{1} << 40);
    o.min_ratio = spec.get_double("min_ratio", 2.0, 0, 1e9);
    o.warm_start = spec.get_bool("warm_start", true);
    o.seed = seed;
    return std::make_unique<PowerSgd>(o, layout);
  }
  throw Error(detail::concat("unknown compressor '", name, "'; expected one of: ", compressor_help()));
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string compressor_help() {
  return "none | fp16 | bf16 | topk:ratio=R | randomk:ratio=R,unbiased=0|1 | "
         "dgc:ratio=R,momentum=M,clip=C,warmup_epochs=E,fp16=0|1 | qsgd:levels=S | terngrad | signsgd | onebit "
         "(quantizers: twophase=1 for the compressed allreduce, ef=0|1, block=N values per scale) | "
         "powersgd:rank=R,start_iter=T,min_ratio=X,warm_start=0|1 | auto; every one takes dense_below=N "
         "(tensors under N elements go dense, default 1024)";
}

void check_compressor_spec(const std::string& text) {
  CompressorSpec spec = CompressorSpec::parse(text);
  spec.get_int("dense_below", kDefaultDenseBelow, 0, int64_t{1} << 40);
  if (spec.name() == "auto") {
    spec.check_all_used();
    return;
  }
  // Build for an empty bucket: cheap, and it reads (so checks) every option.
  build(spec, {}, {}, CompressorContext{});
  spec.check_all_used();
}

BucketCompressor::BucketCompressor(const std::string& text, BucketLayout layout, const CompressorContext& context) {
  CompressorSpec spec = CompressorSpec::parse(text);
  TERN_CHECK(spec.name() != "auto", "BucketCompressor: 'auto' must be resolved before building (auto_select.h)");
  dense_below_ = spec.get_int("dense_below", kDefaultDenseBelow, 0, int64_t{1} << 40);
  for (Segment& s : layout) {
    if (s.numel == 0) continue;
    (s.numel < dense_below_ ? dense_ : compressed_).push_back(std::move(s));
  }
  compressor_ = build(spec, compressed_, dense_, context);
  spec.check_all_used();
  own_.bytes_dense = 0;
}

std::string BucketCompressor::spec() const {
  std::string s = compressor_->spec();
  s += s.find(':') == std::string::npos ? ":" : ",";
  return s + "dense_below=" + std::to_string(dense_below_);
}

void BucketCompressor::reduce(Tensor flat, Communicator& comm, const StepInfo& step, SparseVector* sparse) {
  const uint64_t sent0 = comm.bytes_sent(), received0 = comm.bytes_received();
  const int p = comm.size();
  const int64_t n_dense = layout_numel(dense_);
  if (n_dense > 0 && p > 1) {
    const auto t0 = std::chrono::steady_clock::now();
    const DType wire = compressor_->dense_wire_dtype();
    if (dense_buffer_.numel() != n_dense || dense_buffer_.dtype() != wire) dense_buffer_ = Tensor::empty({n_dense}, wire);
    int64_t at = 0;
    for (const Segment& s : dense_) {
      dense_buffer_.slice(at, at + s.numel).copy_from(flat.slice(s.offset, s.offset + s.numel));
      at += s.numel;
    }
    comm.allreduce(dense_buffer_, ReduceOp::avg);
    at = 0;
    for (const Segment& s : dense_) {
      Tensor dst = flat.slice(s.offset, s.offset + s.numel);
      dst.copy_from(dense_buffer_.slice(at, at + s.numel));
      at += s.numel;
    }
    own_.comm_seconds += since(t0);
  }
  if (n_dense > 0) compressor_->after_dense_average(flat.f32(), dense_);
  compressor_->reduce(flat, compressed_, comm, step, sparse);
  own_.bytes_sent += comm.bytes_sent() - sent0;
  own_.bytes_received += comm.bytes_received() - received0;
  const int64_t n = n_dense + layout_numel(compressed_);
  own_.bytes_dense += static_cast<uint64_t>(2.0 * (p - 1) / p * 4.0 * static_cast<double>(n));
}

CompressStats BucketCompressor::stats() const {
  CompressStats s = compressor_->stats();
  s.bytes_sent = own_.bytes_sent;
  s.bytes_received = own_.bytes_received;
  s.bytes_dense = own_.bytes_dense;
  s.comm_seconds += own_.comm_seconds;
  return s;
}

void BucketCompressor::reset_stats() {
  compressor_->reset_stats();
  own_ = CompressStats{};
}

CompressStats& CompressStats::operator+=(const CompressStats& o) {
  bytes_sent += o.bytes_sent;
  bytes_received += o.bytes_received;
  bytes_dense += o.bytes_dense;
  compress_seconds += o.compress_seconds;
  comm_seconds += o.comm_seconds;
  decompress_seconds += o.decompress_seconds;
  return *this;
}

double CompressStats::ratio() const {
  return bytes_sent == 0 ? 1.0 : static_cast<double>(bytes_dense) / static_cast<double>(bytes_sent);
}

}  // namespace tern
