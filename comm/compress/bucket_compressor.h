// BucketCompressor: what GradSync holds per bucket — the per-tensor policy (small tensors such as
// biases and norm scales go dense) around the chosen Compressor, and the bucket's wire accounting.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/compress/compressor.h"

namespace tern {

// The names --compress accepts, with their options, for --help and error messages.
std::string compressor_help();

// Checks a spec (name and options) without building anything; throws tern::Error saying what is
// wrong. "auto" is valid here (it is resolved per bucket by auto_select.h before building).
void check_compressor_spec(const std::string& spec);

// Tensors with fewer elements than this go dense unless the spec says dense_below=N.
inline constexpr int64_t kDefaultDenseBelow = 1024;

// Where this compressor runs: rank and world size (seeded choices and chunking depend on them),
// the run's seed, and the bucket's index (so buckets draw different random streams).
struct CompressorContext {
  int rank = 0;
  int world_size = 1;
  uint64_t seed = 0;
  size_t bucket = 0;
};

class BucketCompressor {
 public:
  // layout: every tensor of the bucket. spec must not be "auto".
  BucketCompressor(const std::string& spec, BucketLayout layout, const CompressorContext& context);

  // Averages flat over comm's ranks (see Compressor::reduce): dense segments in one f32
  // allreduce, the others through the compressor. With `sparse` non-null and a sparse compressor,
  // the compressed segments' average is in *sparse (bucket indices) and the dense segments in flat.
  void reduce(Tensor flat, Communicator& comm, const StepInfo& step, SparseVector* sparse);

  std::string spec() const;
  bool sparse_result() const { return compressor_->sparse_result(); }
  const BucketLayout& dense_layout() const { return dense_; }
  const BucketLayout& compressed_layout() const { return compressed_; }
  // Bytes as the communicator counted them; bytes_dense as a dense f32 ring allreduce of the whole
  // bucket would send (2(p-1)/p · 4n per rank); times from the compressor, plus the dense part's
  // allreduce in comm_seconds.
  CompressStats stats() const;
  void reset_stats();
  StateTensors state() { return compressor_->state(); }
  Compressor& compressor() { return *compressor_; }

 private:
  BucketLayout dense_, compressed_;
  int64_t dense_below_ = kDefaultDenseBelow;
  std::unique_ptr<Compressor> compressor_;
  Tensor dense_buffer_;
  CompressStats own_;  // bytes, and the dense part's time
};

}  // namespace tern
