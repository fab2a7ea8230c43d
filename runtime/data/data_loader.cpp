#include "runtime/data/data_loader.h"

#include <cstring>
#include <numeric>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace tern {

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  TERN_CHECK(n >= 0 && n <= int64_t{UINT32_MAX}, "epoch_permutation: n = ", n,
             ", expected 0..2^32-1");
  TERN_CHECK(epoch >= 0, "epoch_permutation: epoch = ", epoch, ", expected >= 0");
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  Rng rng(mix_seed(seed ^ mix_seed(static_cast<uint64_t>(epoch))), 3);
  rng.shuffle(order);
  return order;
}

DataLoader::DataLoader(const Dataset& data, int64_t batch_size, bool shuffle, uint64_t seed,
                       bool drop_last, Shard shard)
    : data_(&data), batch_size_(batch_size), shuffle_(shuffle), seed_(seed), drop_last_(drop_last),
      shard_(shard) {
  TERN_CHECK(batch_size > 0, "DataLoader: batch size ", batch_size, ", expected > 0");
  check_shard(shard, "DataLoader");
  TERN_CHECK(data.images.defined() && data.images.dtype() == DType::f32 &&
                 data.images.ndim() >= 1 && data.images.dim(0) == data.size(),
             "DataLoader: dataset '", data.name, "' has images ", data.images.str(), " for ",
             data.size(), " labels, expected f32 [", data.size(), ", ...]");
  Shape shape = data.images.shape();
  sample_numel_ = shape_numel(Shape(shape.begin() + 1, shape.end()));
  shape[0] = batch_size;
  buffer_ = Tensor::empty(shape);
  start_epoch(0);
}

void DataLoader::start_epoch(int64_t epoch) {
  TERN_CHECK(epoch >= 0, "DataLoader: epoch ", epoch, ", expected >= 0");
  epoch_ = epoch;
  cursor_ = 0;
  if (shard_.world_size > 1) {
    order_ = shard_order(data_->size(), shard_, batch_size_, shuffle_, seed_, epoch);
  } else if (shuffle_) {
    order_ = epoch_permutation(data_->size(), seed_, epoch);
  } else if (static_cast<int64_t>(order_.size()) != data_->size()) {
    order_.resize(static_cast<size_t>(data_->size()));
    std::iota(order_.begin(), order_.end(), int64_t{0});
  }
}

int64_t DataLoader::num_batches() const {
  const auto n = static_cast<int64_t>(order_.size());  // a shard's order holds full batches only
  return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

bool DataLoader::next(Batch& out) {
  const int64_t n = static_cast<int64_t>(order_.size());
  const int64_t b = std::min(batch_size_, n - cursor_);
  if (b <= 0 || (drop_last_ && b < batch_size_)) return false;
  const float* src = data_->images.f32();
  float* dst = buffer_.f32();
  const size_t row_bytes = static_cast<size_t>(sample_numel_) * sizeof(float);
  out.y.resize(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) {
    const int64_t j = order_[static_cast<size_t>(cursor_ + i)];
    std::memcpy(dst + i * sample_numel_, src + j * sample_numel_, row_bytes);
    out.y[static_cast<size_t>(i)] = data_->labels[static_cast<size_t>(j)];
  }
  // Copy-assigning the buffer reuses out.x's shape vector: a full batch allocates nothing.
  out.x = b == batch_size_ ? buffer_ : buffer_.slice(0, b);
  cursor_ += b;
  return true;
}

}  // namespace tern
