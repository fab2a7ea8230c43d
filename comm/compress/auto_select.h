// compress=auto: measure the link (α, β of this backend's allreduce and allgather) and each
// candidate compressor's compute time on this machine, then pick per bucket the cheapest by an α–β cost model.
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/compress/compressor.h"

namespace tern {

// Time of a collective moving `bytes` (allreduce: the buffer; allgather: the whole output) ≈
// alpha + beta·bytes, fitted from a small and a large measurement.
struct LinkModel {
  double allreduce_alpha = 0, allreduce_beta = 0;  // seconds, seconds per byte
  double allgather_alpha = 0, allgather_beta = 0;
  double allreduce(double bytes) const { return allreduce_alpha + allreduce_beta * bytes; }
  double allgather(double bytes) const { return allgather_alpha + allgather_beta * bytes; }
};

// Collective: the link as every rank sees it (each measurement is the slowest rank's median).
LinkModel measure_link(Communicator& comm);

// One candidate for one bucket: its spec, the compute it costs here (compress + decompress,
// measured), what it sends (by collective) and the predicted step time.
struct CandidateCost {
  std::string spec;
  double compute_seconds = 0;
  std::vector<double> allreduce_bytes, allgather_bytes;  // one entry per collective call
  double predicted_seconds = 0;
};

struct AutoChoice {
  std::vector<CandidateCost> candidates;  // as evaluated, in candidate order
  size_t chosen = 0;
  const CandidateCost& best() const { return candidates[chosen]; }
};

// The candidates auto weighs: dense, fp16, PowerSGD rank 2, DGC at 0.1%.
std::vector<std::string> auto_candidates();

// Fills each candidate's predicted_seconds from link and picks the cheapest (pure; for tests).
AutoChoice choose(const LinkModel& link, std::vector<CandidateCost> candidates);

// What a candidate costs on `layout` for `world` ranks: compute measured by running it here on
// random data (one rank, a few repetitions), wire bytes from its algorithm. Local, not collective.
CandidateCost cost_candidate(const std::string& spec, const BucketLayout& layout, int world);

// Collective: measure_link, cost every candidate per bucket (each rank, locally), choose, and
// broadcast rank 0's choice so that every rank runs the same compressors.
std::vector<AutoChoice> choose_compressors(Communicator& comm, const std::vector<BucketLayout>& layouts);

}  // namespace tern
