#include "runtime/train/trainer.h"

#include <chrono>
#include <cmath>

#include "optim/clip.h"
#include "runtime/data/distributed_sampler.h"
#include "runtime/nn/loss.h"

namespace tern {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Turns an epoch's running sums into its means, summing them over ranks first when distributed.
void finish(EpochStats& s, double loss_sum, int64_t correct, std::chrono::steady_clock::time_point t0,
            Communicator* comm) {
  s.seconds = seconds_since(t0);
  if (comm != nullptr && comm->size() > 1) {
    // f64 would be exact, but the communicators reduce f32/i64: counts as i64, the loss sum as
    // f32 (its relative error, ~1e-7, is far below what a logged loss shows).
    Tensor counts = Tensor::empty({2}, DType::i64);
    counts.data<int64_t>()[0] = correct;
    counts.data<int64_t>()[1] = s.samples;
    Tensor loss = Tensor::from({1}, {static_cast<float>(loss_sum)});
    comm->allreduce(counts, ReduceOp::sum);
    comm->allreduce(loss, ReduceOp::sum);
    correct = counts.data<int64_t>()[0];
    s.samples = counts.data<int64_t>()[1];
    loss_sum = loss.f32()[0];
  }
  if (s.samples > 0) {
    s.loss = loss_sum / static_cast<double>(s.samples);
    s.accuracy = static_cast<double>(correct) / static_cast<double>(s.samples);
  }
}
}  // namespace

Trainer::Trainer(Module& model, Optimizer& optimizer, const LrSchedule* schedule, TrainerOptions options)
    : model_(model), optimizer_(optimizer), schedule_(schedule), options_(options), params_(model.params()) {
  model_.set_input_grad(false);  // the data needs no gradient
}

double Trainer::train_step(const Batch& batch, int64_t* correct) {
  if (schedule_) optimizer_.set_lr(schedule_->lr_at(step_));
  optimizer_.zero_grad();
  Tensor logits = model_.forward(batch.x);
  const LossResult r = softmax_cross_entropy(logits, batch.y, &dlogits_);
  TERN_CHECK(std::isfinite(r.loss), "training diverged at step ", step_, ": loss is ", r.loss,
             " (try a smaller --lr)");
  model_.run_backward(dlogits_);  // announces finished gradients (data-parallel buckets listen)
  if (options_.after_backward) options_.after_backward();
  if (options_.sparse_grads != nullptr && !options_.sparse_grads->empty()) {
    TERN_CHECK(options_.clip_grad_norm == 0, "gradient clipping needs dense gradients; keep them dense");
    optimizer_.step(*options_.sparse_grads);
  } else {
    if (options_.clip_grad_norm > 0) clip_grad_norm(params_, options_.clip_grad_norm);
    optimizer_.step();
  }
  ++step_;
  last_loss_ = r.loss;
  if (correct) *correct += r.correct;
  return r.loss;
}

EpochStats Trainer::train_epoch(DataLoader& loader, const BatchCallback& on_batch) {
  model_.train();
  EpochStats s;
  double loss_sum = 0;
  int64_t correct = 0;
  Batch batch;
  const auto t0 = std::chrono::steady_clock::now();
  while (loader.next(batch)) {
    const auto n = static_cast<int64_t>(batch.y.size());
    loss_sum += train_step(batch, &correct) * static_cast<double>(n);
    s.samples += n;
    if (on_batch) on_batch(s.samples, loss_sum / static_cast<double>(s.samples));
  }
  finish(s, loss_sum, correct, t0, options_.comm);
  return s;
}

EpochStats Trainer::evaluate(const Dataset& data, int64_t batch_size, const BatchCallback& on_batch) {
  model_.eval();
  EpochStats s;
  double loss_sum = 0;
  int64_t correct = 0;
  // Each rank evaluates a contiguous shard; finish() adds the shards' sums up.
  Dataset shard_storage;
  const Dataset* shard = &data;
  if (options_.comm != nullptr && options_.comm->size() > 1) {
    const auto [begin, end] = shard_range(data.size(), Shard{options_.comm->rank(), options_.comm->size()});
    shard_storage.name = data.name;
    shard_storage.num_classes = data.num_classes;
    shard_storage.images = data.images.slice(begin, end);
    shard_storage.labels.assign(data.labels.begin() + begin, data.labels.begin() + end);
    shard = &shard_storage;
  }
  DataLoader loader(*shard, batch_size, /*shuffle=*/false, /*seed=*/0);
  loader.start_epoch(0);
  Batch batch;
  const auto t0 = std::chrono::steady_clock::now();
  while (loader.next(batch)) {
    const auto n = static_cast<int64_t>(batch.y.size());
    const LossResult r = softmax_cross_entropy(model_.forward(batch.x), batch.y, nullptr);
    loss_sum += r.loss * static_cast<double>(n);
    correct += r.correct;
    s.samples += n;
    if (on_batch) on_batch(s.samples, loss_sum / static_cast<double>(s.samples));
  }
  finish(s, loss_sum, correct, t0, options_.comm);
  model_.train();
  return s;
}

}  // namespace tern
