#include "runtime/train/pipeline_checkpoint.h"

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "runtime/error.h"
#include "runtime/train/compressor_checkpoint.h"

namespace tern {
namespace {

// Tags of the gather on the pipeline communicator (below MPI's guaranteed 32767; the pipeline's
// own messages travel on communicators of their own).
constexpr int kPartSizeTag = 9100, kPartBytesTag = 9101;

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

std::string stage_prefix(size_t stage) { return "stage" + std::to_string(stage); }

std::string source_of(const CheckpointData& data) {
  return data.source.empty() ? std::string("(in memory)") : data.source;
}

std::vector<std::string> split_on(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t at = 0;
  for (;;) {
    const size_t next = text.find(sep, at);
    out.push_back(text.substr(at, next - at));
    if (next == std::string::npos) return out;
    at = next + 1;
  }
}

}  // namespace

CheckpointData capture_stage(Module& stage, Optimizer& optimizer, GradSync* sync,
                             Communicator* data_parallel) {
  CheckpointData part;
  // Collective first, on every replica; it fills only replica 0's part.
  if (sync != nullptr && data_parallel != nullptr) capture_compressor(*sync, *data_parallel, part);
  if (data_parallel != nullptr && data_parallel->rank() != 0) return part;
  capture_model(stage, part);
  capture_optimizer(optimizer, part);
  return part;
}

CheckpointData merge_stage_checkpoints(const std::vector<CheckpointData>& parts) {
  TERN_CHECK(!parts.empty(), "merge_stage_checkpoints: no stages to merge");
  CheckpointData whole;
  whole.optimizer_name = parts[0].optimizer_name;
  std::map<std::string, size_t> model_stage;
  std::map<std::string, std::pair<size_t, const Tensor*>> optimizer_stage;
  std::map<std::string, std::pair<size_t, const RngSnapshot*>> rng_stage;
  std::string specs;
  bool compressed = false;
  for (size_t s = 0; s < parts.size(); ++s) {
    const CheckpointData& part = parts[s];
    TERN_CHECK(part.optimizer_name == whole.optimizer_name, "pipeline checkpoint: stage ", s,
               " uses optimizer '", part.optimizer_name, "', stage 0 uses '", whole.optimizer_name, "'");
    for (const NamedTensor& nt : part.model) {
      const auto [it, fresh] = model_stage.emplace(nt.name, s);
      TERN_CHECK(fresh, "pipeline checkpoint: tensor '", nt.name, "' is on stage ", it->second,
                 " and on stage ", s, " (each layer belongs to one stage)");
      whole.model.push_back(nt);
    }
    for (const NamedTensor& nt : part.optimizer_state) {
      const auto [it, fresh] = optimizer_stage.emplace(nt.name, std::make_pair(s, &nt.value));
      if (fresh) {
        whole.optimizer_state.push_back(nt);
        continue;
      }
      // Per-parameter state cannot repeat (each param is on one stage); the global counters do.
      TERN_CHECK(same_bytes(*it->second.second, nt.value), "pipeline checkpoint: optimizer state '", nt.name,
                 "' differs between stage ", it->second.first, " and stage ", s,
                 " (every stage should have taken the same steps)");
    }
    for (const RngSnapshot& r : part.rngs) {
      const auto [it, fresh] = rng_stage.emplace(r.name, std::make_pair(s, &r));
      if (fresh) {
        whole.rngs.push_back(r);
        continue;
      }
      TERN_CHECK(it->second.second->state == r.state && it->second.second->increment == r.increment,
                 "pipeline checkpoint: random generator '", r.name, "' differs between stage ",
                 it->second.first, " and stage ", s);
    }
    compressed = compressed || !part.compressor.empty();
    specs += (s ? "|" : "") + stage_prefix(s) + "=" + part.compressor;
    for (const NamedTensor& nt : part.compressor_state)
      whole.compressor_state.push_back({stage_prefix(s) + "." + nt.name, nt.value});
  }
  if (compressed) whole.compressor = specs;
  return whole;
}

std::optional<CheckpointData> gather_stage_checkpoints(const CheckpointData& part, Communicator& pipeline) {
  // Each part travels as a framed checkpoint (header + CRC): a part damaged on the way is refused
  // by decode_checkpoint, naming the stage, instead of landing in the file.
  if (pipeline.rank() != 0) {
    const std::string bytes = encode_checkpoint(part);
    Tensor size = Tensor::empty({1}, DType::i64);
    size.data<int64_t>()[0] = static_cast<int64_t>(bytes.size());
    Tensor payload = Tensor::empty({static_cast<int64_t>(bytes.size())}, DType::u8);
    std::memcpy(payload.raw(), bytes.data(), bytes.size());
    pipeline.send(size, 0, kPartSizeTag);
    pipeline.send(payload, 0, kPartBytesTag);
    return std::nullopt;
  }
  std::vector<CheckpointData> parts{part};
  for (int s = 1; s < pipeline.size(); ++s) {
    Tensor size = Tensor::empty({1}, DType::i64);
    pipeline.recv(size, s, kPartSizeTag);
    const int64_t n = size.data<int64_t>()[0];
    TERN_CHECK(n >= static_cast<int64_t>(kCheckpointHeaderBytes), "pipeline checkpoint: stage ", s,
               " announced a part of ", n, " bytes, less than a checkpoint header");
    Tensor payload = Tensor::empty({n}, DType::u8);
    pipeline.recv(payload, s, kPartBytesTag);
    const std::string bytes(static_cast<const char*>(payload.raw()), static_cast<size_t>(n));
    parts.push_back(decode_checkpoint(bytes, "pipeline stage " + std::to_string(s) + "'s part"));
  }
  return merge_stage_checkpoints(parts);
}

void restore_stage_optimizer(Optimizer& optimizer, const CheckpointData& whole) {
  std::set<std::string> mine;
  for (const auto& [name, t] : optimizer.state()) mine.insert(name);
  CheckpointData part;
  part.source = whole.source;
  part.optimizer_name = whole.optimizer_name;
  for (const NamedTensor& nt : whole.optimizer_state)
    if (mine.count(nt.name)) part.optimizer_state.push_back(nt);
  restore_optimizer(optimizer, part);
}

void restore_stage_compressor(GradSync& sync, int stage, int stages, int replica,
                              const CheckpointData& whole) {
  CheckpointData part;
  part.source = whole.source;
  if (!whole.compressor.empty()) {
    const std::vector<std::string> per_stage = split_on(whole.compressor, '|');
    for (size_t s = 0; s < per_stage.size(); ++s)
      TERN_CHECK(
          per_stage[s].rfind(stage_prefix(s) + "=", 0) == 0, "checkpoint '", source_of(whole),
          "' holds the gradient compressor state of a data-parallel run ('", whole.compressor,
          "'), which does not fit the buckets of a pipeline stage (resume it without --pipeline-stages, or "
          "without --resume)");
    TERN_CHECK(per_stage.size() == static_cast<size_t>(stages), "checkpoint '", source_of(whole),
               "' holds gradient compressor state for ", per_stage.size(), " pipeline stages, this run has ",
               stages,
               " (the state belongs to each stage's gradient buckets: resume a compressed run with the "
               "same --pipeline-stages and --stages)");
    const auto s = static_cast<size_t>(stage);
    part.compressor = per_stage[s].substr(stage_prefix(s).size() + 1);
    const std::string prefix = stage_prefix(s) + ".";
    for (const NamedTensor& nt : whole.compressor_state)
      if (nt.name.rfind(prefix, 0) == 0)
        part.compressor_state.push_back({nt.name.substr(prefix.size()), nt.value});
  }
  restore_compressor(sync, replica, part);
}

}  // namespace tern
