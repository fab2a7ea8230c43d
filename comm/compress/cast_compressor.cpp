// none / fp16 / bf16: dense averaging with the wire in reduced precision.
#include <chrono>

#include "comm/compress/compressors.h"
#include "comm/compress/exchange.h"

namespace tern {
namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class CastCompressor : public Compressor {
 public:
  explicit CastCompressor(DType wire) : wire_(wire) {}
  std::string spec() const override {
    return wire_ == DType::f32 ? "none" : wire_ == DType::f16 ? "fp16" : "bf16";
  }

  void reduce(Tensor grad, const BucketLayout& layout, Communicator& comm, const StepInfo&,
              SparseVector* sparse) override {
    if (sparse) sparse->clear();
    const int64_t n = layout_numel(layout);
    if (n == 0) return;
    // Contiguous segments (the usual case: a bucket is dense end to end) need no packing in f32.
    auto t0 = std::chrono::steady_clock::now();
    if (buffer_.numel() != n || buffer_.dtype() != wire_) buffer_ = Tensor::empty({n}, wire_);
    int64_t at = 0;
    for (const Segment& s : layout) {
      buffer_.slice(at, at + s.numel).copy_from(grad.slice(s.offset, s.offset + s.numel));
      at += s.numel;
    }
    stats_.compress_seconds += since(t0);
    t0 = std::chrono::steady_clock::now();
    comm.allreduce(buffer_, ReduceOp::avg);
    stats_.comm_seconds += since(t0);
    t0 = std::chrono::steady_clock::now();
    at = 0;
    for (const Segment& s : layout) {
      Tensor dst = grad.slice(s.offset, s.offset + s.numel);
      dst.copy_from(buffer_.slice(at, at + s.numel));
      at += s.numel;
    }
    stats_.decompress_seconds += since(t0);
  }

 private:
  DType wire_;
  Tensor buffer_;
};

}  // namespace

std::unique_ptr<Compressor> make_cast_compressor(DType wire) {
  TERN_CHECK(wire == DType::f32 || wire == DType::f16 || wire == DType::bf16,
             "cast compressor: wire dtype must be f32, f16 or bf16, got ", dtype_name(wire));
  return std::make_unique<CastCompressor>(wire);
}

}  // namespace tern
