#include "runtime/train/grad_sync.h"

#include <omp.h>

#include <algorithm>
#include <exception>

namespace tern {
namespace {

// Slots start on 64-byte boundaries, as fresh tensors do, so kernels writing a gradient see the
// alignment they would see without buckets. The padding travels with the bucket (zeros).
constexpr int64_t kSlotAlignFloats = 16;

int64_t align_up(int64_t n) { return (n + kSlotAlignFloats - 1) / kSlotAlignFloats * kSlotAlignFloats; }

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

double GradSyncStats::hidden_fraction() const {
  if (comm_seconds <= 0) return 0;
  return std::clamp(1.0 - exposed_seconds / comm_seconds, 0.0, 1.0);
}

GradSync::GradSync(std::vector<Param*> params, Communicator& comm, size_t bucket_bytes,
                   const GradCompression& compression)
    : comm_(comm), compression_(compression) {
  TERN_CHECK(bucket_bytes >= sizeof(float), "GradSync: bucket size ", bucket_bytes,
             " bytes, expected at least one float");
  const auto cap = static_cast<int64_t>(bucket_bytes / sizeof(float));
  int64_t used = 0;  // floats in the bucket being filled
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    Param* p = *it;
    TERN_CHECK(p != nullptr, "GradSync: null parameter");
    if (!p->trainable || p->value.numel() == 0) continue;
    TERN_CHECK(p->value.dtype() == DType::f32 && p->grad.defined() && p->grad.dtype() == DType::f32 &&
                   p->grad.numel() == p->value.numel(),
               "GradSync: parameter '", p->name, "' has value ", p->value.str(), " and grad ",
               p->grad.defined() ? p->grad.str() : "undefined", "; expected f32 tensors of one size");
    TERN_CHECK(where_.find(p) == where_.end(), "GradSync: parameter '", p->name, "' is listed twice");
    const int64_t numel = p->value.numel();
    int64_t offset = align_up(used);
    if (buckets_.empty() || (!buckets_.back().slots.empty() && offset + numel > cap)) {
      buckets_.emplace_back();
      offset = 0;
    }
    Bucket& bucket = buckets_.back();
    where_[p] = {buckets_.size() - 1, bucket.slots.size()};
    bucket.slots.push_back(Slot{p, offset});
    used = offset + numel;
  }
  // Give each bucket its buffer and make the grads views of it, keeping their current values.
  for (Bucket& bucket : buckets_) {
    const Slot& last = bucket.slots.back();
    bucket.flat = Tensor::zeros({last.offset + last.param->value.numel()});
    for (Slot& slot : bucket.slots) {
      Param& p = *slot.param;
      Tensor view = bucket.flat.slice(slot.offset, slot.offset + p.value.numel()).reshape(p.grad.shape());
      view.copy_from(p.grad);
      p.grad = view;
    }
    bucket.pending = bucket.slots.size();
    const int p = comm_.size();
    dense_bytes_per_step_ += static_cast<uint64_t>(2.0 * (p - 1) / p * static_cast<double>(bucket.flat.nbytes()));
  }
  if (compression_.enabled() && compression_.per_bucket.empty() && compression_.spec == "auto") {
    std::vector<BucketLayout> layouts;
    for (size_t b = 0; b < buckets_.size(); ++b) layouts.push_back(bucket_layout(b));
    auto_choices_ = choose_compressors(comm_, layouts);
    for (const AutoChoice& c : auto_choices_) compression_.per_bucket.push_back(c.best().spec);
  }
  if (compression_.enabled()) {
    TERN_CHECK(compression_.per_bucket.empty() || compression_.per_bucket.size() == buckets_.size(),
               "GradSync: ", compression_.per_bucket.size(), " compressor specs for ", buckets_.size(), " buckets");
    for (size_t b = 0; b < buckets_.size(); ++b) {
      const std::string& spec = compression_.per_bucket.empty() ? compression_.spec : compression_.per_bucket[b];
      CompressorContext context{comm_.rank(), comm_.size(), compression_.seed, b};
      compressors_.push_back(std::make_unique<BucketCompressor>(spec, bucket_layout(b), context));
    }
    sparse_results_.resize(buckets_.size());
    executor_ = std::make_unique<CommThread>();
  }
  watcher_ = std::thread([this] { watch(); });
}

GradSync::~GradSync() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  watcher_.join();
}

void GradSync::mark_ready(Param& p) {
  const auto it = where_.find(&p);
  if (it == where_.end()) return;
  const auto [b, s] = it->second;
  Bucket& bucket = buckets_[b];
  Slot& slot = bucket.slots[s];
  TERN_CHECK(!slot.announced, "GradSync: parameter '", p.name,
             "' was announced twice in one step, so its gradient was not final the first time (is a "
             "module used twice in forward?). Each backward pass must be followed by wait()");
  slot.announced = true;
  --bucket.pending;
  if (b == next_launch_) launch_ready();
}

void GradSync::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    launch(next_launch_);
    std::lock_guard lock(mu_);
    ++stats_.buckets_launched_in_backward;
  }
}

void GradSync::launch(size_t b) {
  Bucket& bucket = buckets_[b];
  for (Slot& slot : bucket.slots) {
    Param& p = *slot.param;
    const float* mine = bucket.flat.f32() + slot.offset;
    if (p.grad.defined() && p.grad.raw() == mine) continue;
    // Someone replaced the grad tensor: take its values and make it a view again.
    TERN_CHECK(p.grad.defined() && p.grad.dtype() == DType::f32 && p.grad.numel() == p.value.numel(),
               "GradSync: the gradient of parameter '", p.name, "' was replaced by ",
               p.grad.defined() ? p.grad.str() : "an undefined tensor", "; expected f32 with ",
               p.value.numel(), " elements");
    Tensor view = bucket.flat.slice(slot.offset, slot.offset + p.value.numel()).reshape(p.grad.shape());
    view.copy_from(p.grad);
    p.grad = view;
  }
  if (next_launch_ == 0) {
    sent_at_step_start_ = comm_.bytes_sent();
    received_at_step_start_ = comm_.bytes_received();
  }
  bucket.work = compressors_.empty() ? comm_.allreduce_async(bucket.flat, ReduceOp::avg)
                                     : executor_->enqueue([this, b] { reduce_compressed(b); });
  {
    std::lock_guard lock(mu_);
    to_watch_.push_back(Launch{bucket.work, Clock::now()});
    ++launched_total_;
  }
  cv_.notify_all();
  next_launch_ = b + 1;
}

void GradSync::wait() {
  const auto begin = Clock::now();
  while (next_launch_ < buckets_.size()) launch(next_launch_);
  std::exception_ptr error;
  for (Bucket& bucket : buckets_) {
    try {
      bucket.work->wait();
    } catch (...) {
      if (!error) error = std::current_exception();
    }
    bucket.work.reset();
  }
  if (!error && !compressors_.empty()) collect_sparse();
  const auto end = Clock::now();
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return watched_ == launched_total_; });
    ++stats_.steps;
    stats_.buckets += static_cast<int64_t>(buckets_.size());
    stats_.exposed_seconds += seconds(end - begin);
    if (!buckets_.empty()) {
      stats_.bytes_sent += comm_.bytes_sent() - sent_at_step_start_;
      stats_.bytes_received += comm_.bytes_received() - received_at_step_start_;
      stats_.bytes_dense += dense_bytes_per_step_;
    }
  }
  reset_step();
  ++step_info_.step;
  if (error) std::rethrow_exception(error);
}

void GradSync::reduce_compressed(size_t b) {
  // One thread for the compressors' kernels (PowerSGD's GEMMs): a new thread starts with the
  // default OpenMP team size, which would take the cores backward is computing on. Restored on
  // the way out: the CommThread may run this on a waiting caller (the training thread), whose
  // own setting must not change (oneDNN picks other algorithms for other thread counts).
  struct OneOmpThread {
    int saved = omp_get_max_threads();
    OneOmpThread() { omp_set_num_threads(1); }
    ~OneOmpThread() { omp_set_num_threads(saved); }
  } one_thread;
  Bucket& bucket = buckets_[b];
  if (compression_.fold_weight_decay != 0) {
    const float wd = compression_.fold_weight_decay;
    for (const Slot& slot : bucket.slots) {
      if (!slot.param->decay) continue;
      float* g = bucket.flat.f32() + slot.offset;
      const float* w = slot.param->value.f32();
      const int64_t n = slot.param->value.numel();
      for (int64_t i = 0; i < n; ++i) g[i] += wd * w[i];
    }
  }
  BucketCompressor& c = *compressors_[b];
  const double before = c.stats().compress_seconds + c.stats().decompress_seconds;
  c.reduce(bucket.flat, comm_, step_info_, compression_.keep_sparse ? &sparse_results_[b] : nullptr);
  const double after = c.stats().compress_seconds + c.stats().decompress_seconds;
  std::lock_guard lock(mu_);
  stats_.compress_seconds += after - before;
}

// Turns each bucket's sparse result (bucket indices) into per-param sparse gradients, checking
// that every index lies inside a compressed param of that bucket (a peer's corrupt packet must
// not write outside the model).
void GradSync::collect_sparse() {
  sparse_grads_.clear();
  if (!compression_.keep_sparse) return;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const SparseVector& v = sparse_results_[b];
    if (!compressors_[b]->sparse_result()) continue;
    const Bucket& bucket = buckets_[b];
    // Every compressed param is sparse this step, even with no entries (its gradient is zero).
    for (const Segment& seg : compressors_[b]->compressed_layout()) {
      const Slot& slot = *std::find_if(bucket.slots.begin(), bucket.slots.end(),
                                       [&](const Slot& s) { return s.offset == seg.offset; });
      sparse_grads_[slot.param];
    }
    for (size_t j = 0; j < v.size(); ++j) {
      const int64_t at = v.indices[j];
      // Slots are sorted by offset: the last one starting at or before `at`.
      auto it = std::upper_bound(bucket.slots.begin(), bucket.slots.end(), at,
                                 [](int64_t x, const Slot& s) { return x < s.offset; });
      TERN_CHECK(it != bucket.slots.begin(), "GradSync: sparse gradient index ", at, " lies before bucket ", b);
      const Slot& slot = *(it - 1);
      const int64_t local = at - slot.offset;
      auto found = sparse_grads_.find(slot.param);
      TERN_CHECK(local < slot.param->value.numel() && found != sparse_grads_.end(), "GradSync: sparse gradient index ",
                 at, " of bucket ", b, " is not inside a compressed parameter (corrupt packet?)");
      found->second.indices.push_back(static_cast<int32_t>(local));
      found->second.values.push_back(v.values[j]);
    }
  }
}

BucketLayout GradSync::bucket_layout(size_t i) const {
  TERN_CHECK(i < buckets_.size(), "GradSync: bucket ", i, " of ", buckets_.size());
  BucketLayout layout;
  for (const Slot& slot : buckets_[i].slots)
    layout.push_back(Segment{slot.param->name, slot.offset, slot.param->value.numel(), slot.param->value.shape()});
  return layout;
}

std::vector<std::string> GradSync::bucket_specs() const {
  std::vector<std::string> specs;
  for (const auto& c : compressors_) specs.push_back(c->spec());
  return specs;
}

StateTensors GradSync::compressor_state() {
  StateTensors out;
  for (size_t b = 0; b < compressors_.size(); ++b) {
    for (auto& [name, t] : compressors_[b]->state()) out.emplace_back("bucket" + std::to_string(b) + "." + name, t);
  }
  return out;
}

void GradSync::reset_step() {
  for (Bucket& bucket : buckets_) {
    for (Slot& slot : bucket.slots) slot.announced = false;
    bucket.pending = bucket.slots.size();
  }
  next_launch_ = 0;
}

void GradSync::watch() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !to_watch_.empty(); });
    if (to_watch_.empty()) return;  // stopping, and every launch has been stamped
    const Launch launch = to_watch_.front();
    to_watch_.pop_front();
    lock.unlock();
    try {
      launch.work->wait();
    } catch (...) {
      // wait() on the caller's side reports the error; here only the time counts.
    }
    const auto done = Clock::now();
    lock.lock();
    stats_.comm_seconds += seconds(done - std::max(launch.at, last_done_));
    last_done_ = done;
    ++watched_;
    cv_.notify_all();
  }
}

std::vector<std::string> GradSync::bucket_param_names(size_t i) const {
  TERN_CHECK(i < buckets_.size(), "GradSync: bucket ", i, " of ", buckets_.size());
  std::vector<std::string> names;
  for (const Slot& slot : buckets_[i].slots) names.push_back(slot.param->name);
  return names;
}

size_t GradSync::bucket_bytes(size_t i) const {
  TERN_CHECK(i < buckets_.size(), "GradSync: bucket ", i, " of ", buckets_.size());
  return buckets_[i].flat.nbytes();
}

GradSyncStats GradSync::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void GradSync::reset_stats() {
  std::lock_guard lock(mu_);
  stats_ = GradSyncStats{};
}

}  // namespace tern
