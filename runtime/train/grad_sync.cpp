#include "runtime/train/grad_sync.h"

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

GradSync::GradSync(std::vector<Param*> params, Communicator& comm, size_t bucket_bytes) : comm_(comm) {
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
  bucket.work = comm_.allreduce_async(bucket.flat, ReduceOp::avg);
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
    }
  }
  reset_step();
  if (error) std::rethrow_exception(error);
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
