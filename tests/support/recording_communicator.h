// RecordingCommunicator: passes every operation to another communicator and appends a line for
// it to a log, so tests can check which collectives were issued and in what order relative to
// other events (a module's backward, say) written to the same log.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"

namespace tern::testing {

class RecordingCommunicator : public Communicator {
 public:
  // Logging is not synchronised: issue operations from one thread.
  RecordingCommunicator(Communicator& inner, std::vector<std::string>& log) : inner_(inner), log_(log) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend() const override { return inner_.backend(); }
  WorkPtr allreduce_async(Tensor t, ReduceOp op) override {
    log_.push_back("allreduce " + std::to_string(t.numel()) + " " + reduce_op_name(op));
    return inner_.allreduce_async(std::move(t), op);
  }
  WorkPtr reduce_scatter_async(Tensor in, Tensor out, ReduceOp op) override {
    log_.push_back("reduce_scatter");
    return inner_.reduce_scatter_async(std::move(in), std::move(out), op);
  }
  WorkPtr allgather_async(Tensor in, Tensor out) override {
    log_.push_back("allgather");
    return inner_.allgather_async(std::move(in), std::move(out));
  }
  WorkPtr allgatherv_async(Tensor in, Tensor out, std::vector<int64_t> counts) override {
    log_.push_back("allgatherv");
    return inner_.allgatherv_async(std::move(in), std::move(out), std::move(counts));
  }
  WorkPtr broadcast_async(Tensor t, int root) override {
    log_.push_back("broadcast");
    return inner_.broadcast_async(std::move(t), root);
  }
  WorkPtr send_async(Tensor t, int dst, int tag) override {
    return inner_.send_async(std::move(t), dst, tag);
  }
  WorkPtr recv_async(Tensor t, int src, int tag) override {
    return inner_.recv_async(std::move(t), src, tag);
  }
  WorkPtr barrier_async() override { return inner_.barrier_async(); }
  std::unique_ptr<Communicator> split(int color, int key) override { return inner_.split(color, key); }
  uint64_t bytes_sent() const override { return inner_.bytes_sent(); }
  uint64_t bytes_received() const override { return inner_.bytes_received(); }

 private:
  Communicator& inner_;
  std::vector<std::string>& log_;
};

}  // namespace tern::testing
