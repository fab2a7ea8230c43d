// ReplicaState: a model's parameters and buffers copied after training, and the comparisons the
// data-parallel tests make between replicas (relative difference, bitwise equality).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/data/synthetic.h"
#include "runtime/nn/module.h"

namespace tern::testing {

// The small synthetic task the data-parallel, compression and pipeline equivalence tests train on.
inline const Dataset& equivalence_dataset() {
  static const Dataset data = make_synthetic(256, {1, 28, 28}, 10, /*seed=*/3, /*sample_seed=*/1);
  return data;
}

struct ReplicaState {
  std::vector<Tensor> params, buffers;
};

inline ReplicaState state_of(Module& m) {
  ReplicaState s;
  for (Param* p : m.params()) s.params.push_back(p->value.clone());
  for (Buffer* b : m.buffers()) s.buffers.push_back(b->value.clone());
  return s;
}

// max |a - b| / max |b| over one tensor.
inline double relative_difference(const Tensor& a, const Tensor& b) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a.f32()[i] - b.f32()[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b.f32()[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// The worst relative_difference over every param and buffer.
inline double worst_difference(const ReplicaState& a, const ReplicaState& b) {
  double worst = 0;
  for (size_t i = 0; i < a.params.size(); ++i) worst = std::max(worst, relative_difference(a.params[i], b.params[i]));
  for (size_t i = 0; i < a.buffers.size(); ++i)
    worst = std::max(worst, relative_difference(a.buffers[i], b.buffers[i]));
  return worst;
}

inline bool bitwise_equal(const ReplicaState& a, const ReplicaState& b) {
  auto same = [](const std::vector<Tensor>& x, const std::vector<Tensor>& y) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (x[i].nbytes() != y[i].nbytes() || std::memcmp(x[i].raw(), y[i].raw(), x[i].nbytes()) != 0) return false;
    return true;
  };
  return same(a.params, b.params) && same(a.buffers, b.buffers);
}

}  // namespace tern::testing
