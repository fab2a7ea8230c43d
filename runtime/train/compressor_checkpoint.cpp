#include "runtime/train/compressor_checkpoint.h"

#include <cstring>
#include <map>

namespace tern {
namespace {

std::string joined_specs(const GradSync& sync) {
  std::string out;
  for (const std::string& s : sync.bucket_specs()) out += (out.empty() ? "" : ";") + s;
  return out;
}

}  // namespace

void capture_compressor(GradSync& sync, Communicator& comm, CheckpointData& data) {
  if (!sync.compressed()) return;
  const int p = comm.size();
  StateTensors mine = sync.compressor_state();
  std::vector<NamedTensor> gathered;
  for (auto& [name, t] : mine) {
    TERN_CHECK(t.dtype() == DType::f32, "capture_compressor: state '", name, "' is ", dtype_name(t.dtype()),
               ", expected f32");
    // Sizes may differ per rank (the two-phase server residual is this rank's chunk).
    Tensor n = Tensor::empty({1}, DType::i64), all_n = Tensor::empty({p}, DType::i64);
    n.data<int64_t>()[0] = t.numel();
    comm.allgather(n, all_n);
    std::vector<int64_t> counts(all_n.data<int64_t>(), all_n.data<int64_t>() + p);
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    Tensor all = Tensor::empty({total});
    comm.allgatherv(t.reshape({t.numel()}), all, counts);
    int64_t at = 0;
    for (int r = 0; r < p; ++r) {
      const int64_t c = counts[static_cast<size_t>(r)];
      gathered.push_back(NamedTensor{"rank" + std::to_string(r) + "." + name, all.slice(at, at + c).clone()});
      at += c;
    }
  }
  if (comm.rank() != 0) return;
  data.compressor = joined_specs(sync);
  data.compressor_state = std::move(gathered);
}

void restore_compressor(GradSync& sync, int rank, const CheckpointData& data) {
  const std::string specs = joined_specs(sync);
  const std::string source = data.source.empty() ? std::string("checkpoint") : "checkpoint '" + data.source + "'";
  if (!sync.compressed() && data.compressor.empty()) return;
  TERN_CHECK(data.compressor == specs, source, " was written with gradient compression '",
             data.compressor.empty() ? std::string("none") : data.compressor, "', this run uses '",
             specs.empty() ? std::string("none") : specs, "' (resume with the same --compress and --bucket-mb)");
  std::map<std::string, const Tensor*> saved;
  for (const NamedTensor& nt : data.compressor_state) saved[nt.name] = &nt.value;
  const std::string prefix = "rank" + std::to_string(rank) + ".";
  StateTensors live = sync.compressor_state();
  for (auto& [name, t] : live) {  // check everything before writing anything
    const auto it = saved.find(prefix + name);
    TERN_CHECK(it != saved.end(), source, " has no compressor state '", prefix + name, "'");
    TERN_CHECK(it->second->numel() == t.numel() && it->second->dtype() == t.dtype(), source, ": compressor state '",
               prefix + name, "' is ", it->second->str(), ", this run's is ", t.str());
  }
  for (auto& [name, t] : live) t.copy_from(*saved.at(prefix + name));
}

}  // namespace tern
