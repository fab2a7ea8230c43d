// TransportCommunicator: a Communicator for a group of a Transport's ranks, running Tern's own
// collective algorithms (comm/algorithms.h). The local and tcp backends are this over their
// transports; split() makes sub-groups that share the parent's transport under a new context.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "comm/comm_thread.h"
#include "comm/communicator.h"
#include "comm/transport.h"

namespace tern {

class TransportCommunicator : public Communicator {
 public:
  // group: the transport ranks that form this communicator, in this communicator's rank order
  // (the world is 0..size-1). context: unique per communicator, the same on all its members.
  // world: this is the communicator over the transport's whole world (the backend's first), which
  // alone may use the transport's own world collectives (Transport::world_collectives) — a split
  // covering the same ranks runs its collectives in its own order, which would interleave there.
  TransportCommunicator(std::shared_ptr<Transport> transport, std::vector<int> group, uint64_t context,
                        std::string backend, CommOptions options, bool world = false);
  ~TransportCommunicator() override;

  int rank() const override;
  int size() const override;
  std::string backend() const override;
  WorkPtr allreduce_async(Tensor t, ReduceOp op) override;
  WorkPtr reduce_scatter_async(Tensor in, Tensor out, ReduceOp op) override;
  WorkPtr allgather_async(Tensor in, Tensor out) override;
  WorkPtr allgatherv_async(Tensor in, Tensor out, std::vector<int64_t> counts) override;
  WorkPtr broadcast_async(Tensor t, int root) override;
  WorkPtr send_async(Tensor t, int dst, int tag) override;
  WorkPtr recv_async(Tensor t, int src, int tag) override;
  WorkPtr barrier_async() override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  uint64_t bytes_sent() const override;
  uint64_t bytes_received() const override;

 private:
  struct State;  // defined with the algorithms; owns group, tags, options
  std::unique_ptr<State> state_;
  CommThread thread_;  // last member: joined first, while state_ is still alive
};

}  // namespace tern
