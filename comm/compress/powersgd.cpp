// PowerSGD (Vogels et al., NeurIPS 2019, Algorithm 1 with error feedback as in Algorithm 2), with
// the practical choices of PyTorch's powerSGD_hook: a tensor [d0, d1, ...] is the matrix
// [d0, d1·d2·...], a matrix is compressed only when rank R saves at least min_ratio, the first
// start_iter steps are plain dense allreduce, and Q is carried over from the previous step.
//
// Per step, for every rank: M = grad + residual (kept in residual_, so no extra buffer);
// P = M·Q; P = sum over ranks (one allreduce for all matrices); P̂ = orthonormal columns of P;
// Q = Mᵀ·P̂; Q = mean over ranks (one allreduce); grad = P̂·Qᵀ; residual = M - grad.
// The dense segments are packed into one buffer whose allreduce is queued first, so it runs on
// the communication thread while P is being computed.
//
// Q's random values are a pure function of (seed, step, matrix, column): every rank draws the
// same ones without exchanging them, and a run restored from a checkpoint draws what the original
// would have. With warm start, a Q column that is exactly zero is drawn afresh: that is the state
// before the first compressed step, and also what a zero or rank-deficient gradient leaves behind
// (orthonormalisation zeroes the dependent columns of P, so Mᵀ·P̂ has zero columns); without the
// redraw such a column would stay zero for the rest of training and the effective rank would
// shrink for good. Q is identical on every rank (it is the result of an allreduce), so every rank
// redraws the same columns.
#include "comm/compress/powersgd.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>

#include "runtime/error.h"
#include "runtime/kernels/cpu/gemm.h"

namespace tern {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// What one rank sends (and receives) in a ring allreduce of `bytes` over p ranks: 2(p-1)/p·bytes.
uint64_t ring_allreduce_bytes(uint64_t bytes, int p) {
  if (p <= 1) return 0;
  const auto ranks = static_cast<uint64_t>(p);
  return 2 * (ranks - 1) * bytes / ranks;
}

// The rank used for one matrix: R, or less when the matrix is thinner than R.
int64_t matrix_rank(int64_t rows, int64_t cols, int rank) {
  return std::min({static_cast<int64_t>(rank), rows, cols});
}

double column_norm(const float* a, int64_t rows, int64_t cols, int64_t j) {
  double sum = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const double v = a[i * cols + j];
    sum += v * v;
  }
  return std::sqrt(sum);
}

bool column_is_zero(const float* a, int64_t rows, int64_t cols, int64_t j) {
  for (int64_t i = 0; i < rows; ++i) {
    if (a[i * cols + j] != 0.0f) return false;
  }
  return true;
}

// Column c of the [rows, cols] matrix a, standard normal, from a generator keyed by
// (seed, step, matrix, c) alone.
void draw_column(float* a, int64_t rows, int64_t cols, int64_t c, uint64_t seed, int64_t step,
                 size_t matrix) {
  const uint64_t key = mix_seed(mix_seed(seed ^ mix_seed(static_cast<uint64_t>(step))) + matrix);
  Rng rng(key, static_cast<uint64_t>(c));
  for (int64_t i = 0; i < rows; ++i) a[i * cols + c] = rng.normal();
}

// Whether the segments, in the order given, lie back to back in the bucket (then grad itself can
// be allreduced instead of a packed copy).
bool back_to_back(const BucketLayout& layout, const std::vector<size_t>& segments) {
  for (size_t i = 1; i < segments.size(); ++i) {
    const Segment& prev = layout[segments[i - 1]];
    if (layout[segments[i]].offset != prev.offset + prev.numel) return false;
  }
  return true;
}

// The dense segments' elements as one tensor: a view of grad when they are back to back, else a
// copy packed into scratch (which unpack() writes back).
class DenseBatch {
 public:
  DenseBatch(const Tensor& grad, const BucketLayout& layout, const std::vector<size_t>& segments,
             Tensor& scratch)
      : grad_(grad.f32()), layout_(layout), segments_(segments) {
    if (segments.empty()) return;
    if (back_to_back(layout, segments)) {
      const Segment& last = layout[segments.back()];
      buffer_ = grad.reshape({-1}).slice(layout[segments.front()].offset, last.offset + last.numel);
      return;
    }
    int64_t total = 0;
    for (size_t s : segments) total += layout[s].numel;
    if (scratch.numel() != total) scratch = Tensor::zeros({total});
    buffer_ = scratch;
    packed_ = true;
    float* out = buffer_.f32();
    for (size_t s : segments) {
      std::memcpy(out, grad_ + layout[s].offset, static_cast<size_t>(layout[s].numel) * sizeof(float));
      out += layout[s].numel;
    }
  }

  bool empty() const { return !buffer_.defined() || buffer_.numel() == 0; }
  Tensor& buffer() { return buffer_; }

  void unpack() {
    if (!packed_) return;
    const float* in = buffer_.f32();
    for (size_t s : segments_) {
      std::memcpy(grad_ + layout_[s].offset, in, static_cast<size_t>(layout_[s].numel) * sizeof(float));
      in += layout_[s].numel;
    }
  }

 private:
  float* grad_;
  const BucketLayout& layout_;
  const std::vector<size_t>& segments_;
  Tensor buffer_;
  bool packed_ = false;
};

}  // namespace

void orthonormalize_columns(float* a, int64_t rows, int64_t cols) {
  // A column whose part orthogonal to the columns before it is below this fraction of its own
  // norm is taken as dependent on them: float32 rounding leaves about 1e-7 of an exactly
  // dependent column, and a direction this small carries nothing worth sending.
  constexpr double kDependent = 1e-5;
  for (int64_t j = 0; j < cols; ++j) {
    const double before = column_norm(a, rows, cols, j);
    // Modified Gram-Schmidt, twice ("twice is enough"): one pass loses orthogonality in
    // proportion to the conditioning, and power-iteration P is often ill-conditioned.
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t k = 0; k < j; ++k) {
        double dot = 0;
        for (int64_t i = 0; i < rows; ++i) dot += static_cast<double>(a[i * cols + k]) * a[i * cols + j];
        if (dot == 0) continue;  // includes the zeroed columns
        const auto d = static_cast<float>(dot);
        for (int64_t i = 0; i < rows; ++i) a[i * cols + j] -= d * a[i * cols + k];
      }
    }
    const double after = column_norm(a, rows, cols, j);
    if (after <= kDependent * before) {  // also a zero column; NaN falls through and stays visible
      for (int64_t i = 0; i < rows; ++i) a[i * cols + j] = 0.0f;
      continue;
    }
    const double scale = 1.0 / after;
    for (int64_t i = 0; i < rows; ++i) a[i * cols + j] = static_cast<float>(a[i * cols + j] * scale);
  }
}

PowerSgd::PowerSgd(const PowerSgdOptions& options, const BucketLayout& layout)
    : options_(options), layout_(layout) {
  TERN_CHECK(options.rank >= 1, "powersgd: rank must be at least 1, got ", options.rank);
  TERN_CHECK(options.start_iter >= 0, "powersgd: start_iter must be >= 0, got ", options.start_iter);
  TERN_CHECK(std::isfinite(options.min_ratio) && options.min_ratio >= 0,
             "powersgd: min_ratio must be a finite number >= 0, got ", options.min_ratio);
  int64_t extent = 0, p_size = 0, q_size = 0, dense_size = 0;
  for (size_t s = 0; s < layout.size(); ++s) {
    const Segment& seg = layout[s];
    TERN_CHECK(seg.offset >= 0 && seg.numel >= 0, "powersgd: segment '", seg.name, "' has offset ",
               seg.offset, " and numel ", seg.numel, "; both must be >= 0");
    TERN_CHECK(seg.shape.empty() || shape_numel(seg.shape) == seg.numel, "powersgd: segment '", seg.name,
               "' has shape ", shape_str(seg.shape), " but numel ", seg.numel);
    extent = std::max(extent, seg.offset + seg.numel);
    if (seg.numel == 0) continue;
    if (seg.shape.size() >= 2) {
      const int64_t rows = seg.shape[0], cols = seg.numel / rows;
      const int64_t r = matrix_rank(rows, cols, options.rank);
      // Compressed unless m·n / (r·(m+n)) is below min_ratio.
      if (static_cast<double>(rows) * static_cast<double>(cols) >=
          options.min_ratio * static_cast<double>(r) * static_cast<double>(rows + cols)) {
        matrices_.push_back({s, rows, cols, p_size, q_size});
        p_size += rows * r;
        q_size += cols * r;
        continue;
      }
    }
    dense_segments_.push_back(s);
    dense_size += seg.numel;
  }
  // Overlapping segments would be averaged twice and break error feedback.
  std::vector<const Segment*> by_offset;
  for (const Segment& seg : layout) {
    if (seg.numel > 0) by_offset.push_back(&seg);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Segment* a, const Segment* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    TERN_CHECK(by_offset[i]->offset >= by_offset[i - 1]->offset + by_offset[i - 1]->numel,
               "powersgd: segments '", by_offset[i - 1]->name, "' and '", by_offset[i]->name, "' overlap");
  }
  residual_ = Tensor::zeros({extent});
  p_ = Tensor::zeros({p_size});
  q_ = Tensor::zeros({q_size});
  dense_ = Tensor::zeros({dense_size});
}

std::string PowerSgd::spec() const {
  char ratio[32];
  const auto end = std::to_chars(ratio, ratio + sizeof ratio, options_.min_ratio).ptr;  // shortest round trip
  return detail::concat("powersgd:rank=", options_.rank, ",start_iter=", options_.start_iter,
                        ",min_ratio=", std::string(ratio, end), ",warm_start=", options_.warm_start ? 1 : 0);
}

StateTensors PowerSgd::state() { return {{"residual", residual_}, {"q", q_}}; }

void PowerSgd::reduce(Tensor grad, const BucketLayout& layout, Communicator& comm, const StepInfo& step,
                      SparseVector* sparse) {
  if (sparse != nullptr) sparse->clear();
  TERN_CHECK(layout.size() == layout_.size(), "powersgd: reduce() got a layout of ", layout.size(),
             " segments, but the compressor was built for ", layout_.size());
  int64_t elements = 0;
  for (size_t s = 0; s < layout.size(); ++s) {
    TERN_CHECK(layout[s].offset == layout_[s].offset && layout[s].numel == layout_[s].numel &&
                   layout[s].shape == layout_[s].shape,
               "powersgd: segment ", s, " ('", layout[s].name,
               "') differs from the layout the compressor was built for");
    elements += layout[s].numel;
  }
  TERN_CHECK(grad.dtype() == DType::f32, "powersgd: gradients must be f32, got ", grad.str());
  TERN_CHECK(grad.numel() >= residual_.numel(), "powersgd: gradient buffer ", grad.str(),
             " is smaller than the ", residual_.numel(), " elements its layout spans");
  const int world = comm.size();
  stats_.bytes_dense += ring_allreduce_bytes(4 * static_cast<uint64_t>(elements), world);

  auto allreduce = [&](Tensor& t, ReduceOp op) {
    const uint64_t bytes = ring_allreduce_bytes(t.nbytes(), world);
    stats_.bytes_sent += bytes;
    stats_.bytes_received += bytes;
    return comm.allreduce_async(t, op);
  };

  if (step.step < options_.start_iter) {
    // Warm-up: the exact average, and no error feedback yet.
    auto start = Clock::now();
    std::vector<size_t> all;
    for (size_t s = 0; s < layout_.size(); ++s) {
      if (layout_[s].numel > 0) all.push_back(s);
    }
    Tensor scratch;
    DenseBatch batch(grad, layout_, all, scratch);
    stats_.compress_seconds += seconds_since(start);
    if (batch.empty() || world == 1) return;
    start = Clock::now();
    allreduce(batch.buffer(), ReduceOp::avg)->wait();
    stats_.comm_seconds += seconds_since(start);
    start = Clock::now();
    batch.unpack();
    stats_.decompress_seconds += seconds_since(start);
    return;
  }

  auto start = Clock::now();
  float* g = grad.f32();
  float* m = residual_.f32();
  float* p = p_.f32();
  float* q = q_.f32();
  DenseBatch dense(grad, layout_, dense_segments_, dense_);
  WorkPtr dense_work;
  if (!dense.empty() && world > 1) dense_work = allreduce(dense.buffer(), ReduceOp::avg);

  for (size_t i = 0; i < matrices_.size(); ++i) {
    const Matrix& mat = matrices_[i];
    const Segment& seg = layout_[mat.segment];
    const int64_t r = matrix_rank(mat.rows, mat.cols, options_.rank);
    float* mi = m + seg.offset;
    const float* gi = g + seg.offset;
    for (int64_t k = 0; k < seg.numel; ++k) mi[k] += gi[k];  // M = grad + residual
    float* qi = q + mat.q_offset;
    for (int64_t c = 0; c < r; ++c) {
      if (!options_.warm_start || column_is_zero(qi, mat.cols, r, c)) {
        draw_column(qi, mat.cols, r, c, options_.seed, step.step, i);
      }
    }
    cpu::gemm(false, false, mat.rows, r, mat.cols, 1.0f, mi, mat.cols, qi, r, 0.0f, p + mat.p_offset,
              r);  // P = M·Q
  }
  stats_.compress_seconds += seconds_since(start);

  if (world > 1 && p_.numel() > 0) {
    start = Clock::now();
    allreduce(p_, ReduceOp::sum)->wait();  // orthonormalisation ignores the scale: no need to divide
    stats_.comm_seconds += seconds_since(start);
  }

  start = Clock::now();
  for (const Matrix& mat : matrices_) {
    const int64_t r = matrix_rank(mat.rows, mat.cols, options_.rank);
    float* pi = p + mat.p_offset;
    orthonormalize_columns(pi, mat.rows, r);
    const float* mi = m + layout_[mat.segment].offset;
    cpu::gemm(true, false, mat.cols, r, mat.rows, 1.0f, mi, mat.cols, pi, r, 0.0f, q + mat.q_offset,
              r);  // Q = Mᵀ·P̂
  }
  stats_.compress_seconds += seconds_since(start);

  if (world > 1 && q_.numel() > 0) {
    start = Clock::now();
    allreduce(q_, ReduceOp::avg)->wait();
    stats_.comm_seconds += seconds_since(start);
  }

  start = Clock::now();
  for (const Matrix& mat : matrices_) {
    const Segment& seg = layout_[mat.segment];
    const int64_t r = matrix_rank(mat.rows, mat.cols, options_.rank);
    float* gi = g + seg.offset;
    cpu::gemm(false, true, mat.rows, mat.cols, r, 1.0f, p + mat.p_offset, r, q + mat.q_offset, r, 0.0f, gi,
              mat.cols);  // grad = P̂·Qᵀ
    float* mi = m + seg.offset;
    for (int64_t k = 0; k < seg.numel; ++k) mi[k] -= gi[k];  // residual = M - grad
  }
  stats_.decompress_seconds += seconds_since(start);

  if (dense_work) {
    start = Clock::now();
    dense_work->wait();
    stats_.comm_seconds += seconds_since(start);
  }
  start = Clock::now();
  dense.unpack();
  stats_.decompress_seconds += seconds_since(start);
}

}  // namespace tern
