#include "runtime/train/data_parallel.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/nn/norm.h"

namespace tern {
namespace {

// One line per param and buffer: what must agree across ranks for the replicas to be one model.
std::vector<std::string> model_entries(Module& model) {
  std::vector<std::string> entries;
  for (Param* p : model.params()) {
    entries.push_back(
        detail::concat("param '", p->name, "' ", p->value.str(), p->trainable ? " trainable" : " frozen"));
  }
  for (Buffer* b : model.buffers())
    entries.push_back(detail::concat("buffer '", b->name, "' ", b->value.str()));
  return entries;
}

std::string join(const std::vector<std::string>& lines) {
  std::string out = "model\n";  // never empty, so every rank sends at least one byte
  for (const std::string& line : lines) out += line + "\n";
  return out;
}

std::vector<std::string> split_lines(const char* data, int64_t n) {
  std::vector<std::string> lines;
  std::string line;
  for (int64_t i = 0; i < n; ++i) {
    if (data[i] == '\n') {
      lines.push_back(line);
      line.clear();
    } else {
      line += data[i];
    }
  }
  lines.erase(lines.begin());  // the "model" header
  return lines;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Every rank holds every rank's entries; each builds the same message about the first rank that
// differs from rank 0 at its first differing entry.
std::string describe_difference(const std::vector<std::vector<std::string>>& ranks) {
  const std::vector<std::string>& ref = ranks[0];
  for (size_t r = 1; r < ranks.size(); ++r) {
    const std::vector<std::string>& mine = ranks[r];
    if (mine == ref) continue;
    size_t i = 0;
    while (i < ref.size() && i < mine.size() && ref[i] == mine[i]) ++i;
    std::ostringstream out;
    out << "DataParallel: the model differs between ranks at entry " << i
        << " of its params and buffers (registration order): rank 0 has "
        << (i < ref.size() ? ref[i] : "nothing there") << ", rank " << r << " has "
        << (i < mine.size() ? mine[i] : "nothing there")
        << ". Every rank must build the same model (same --model, flags and input shape)";
    return out.str();
  }
  return "DataParallel: the model differs between ranks (hashes differ, entries equal)";
}

}  // namespace

void check_same_model(Module& model, Communicator& comm) {
  if (comm.size() == 1) return;
  const std::string text = join(model_entries(model));
  Tensor hash = Tensor::empty({1}, DType::i64);
  hash.data<int64_t>()[0] = static_cast<int64_t>(fnv1a(text));
  Tensor hashes = Tensor::empty({comm.size()}, DType::i64);
  comm.allgather(hash, hashes);
  bool same = true;
  for (int r = 1; r < comm.size(); ++r) same &= hashes.data<int64_t>()[r] == hashes.data<int64_t>()[0];
  if (same) return;

  // Some rank differs: exchange the descriptions themselves to say where.
  Tensor length = Tensor::empty({1}, DType::i64);
  length.data<int64_t>()[0] = static_cast<int64_t>(text.size());
  Tensor lengths = Tensor::empty({comm.size()}, DType::i64);
  comm.allgather(length, lengths);
  std::vector<int64_t> counts(lengths.data<int64_t>(), lengths.data<int64_t>() + comm.size());
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  Tensor mine = Tensor::empty({static_cast<int64_t>(text.size())}, DType::u8);
  std::memcpy(mine.raw(), text.data(), text.size());
  Tensor all = Tensor::empty({total}, DType::u8);
  comm.allgatherv(mine, all, counts);
  std::vector<std::vector<std::string>> ranks;
  const char* data = static_cast<const char*>(all.raw());
  for (int64_t c : counts) {
    ranks.push_back(split_lines(data, c));
    data += c;
  }
  throw Error(describe_difference(ranks));
}

void broadcast_model(Module& model, Communicator& comm) {
  if (comm.size() == 1) return;
  std::vector<Tensor*> tensors;
  for (Param* p : model.params()) tensors.push_back(&p->value);
  for (Buffer* b : model.buffers()) tensors.push_back(&b->value);
  size_t total = 0;
  for (Tensor* t : tensors) total += t->nbytes();
  if (total == 0) return;
  // One message instead of one per tensor: the model is small and latency is what costs here.
  Tensor packed = Tensor::empty({static_cast<int64_t>(total)}, DType::u8);
  auto* bytes = static_cast<char*>(packed.raw());
  if (comm.rank() == 0) {
    size_t at = 0;
    for (Tensor* t : tensors) {
      std::memcpy(bytes + at, t->raw(), t->nbytes());
      at += t->nbytes();
    }
  }
  comm.broadcast(packed, 0);
  size_t at = 0;
  for (Tensor* t : tensors) {
    std::memcpy(t->raw(), bytes + at, t->nbytes());
    at += t->nbytes();
  }
}

BatchNorm2d::StatsAllreduce sync_bn_stats_sum(Communicator& comm) {
  return [&comm](std::vector<double>& values) {
    const auto n = static_cast<int64_t>(values.size());
    const size_t bytes = values.size() * sizeof(double);
    Tensor mine = Tensor::empty({n}, DType::i64);  // the doubles' bytes
    std::memcpy(mine.raw(), values.data(), bytes);
    Tensor all = Tensor::empty({n * comm.size()}, DType::i64);
    comm.allgather(mine, all);
    std::vector<double> part(values.size());
    std::fill(values.begin(), values.end(), 0.0);
    for (int r = 0; r < comm.size(); ++r) {
      std::memcpy(part.data(), static_cast<const char*>(all.raw()) + static_cast<size_t>(r) * bytes, bytes);
      for (size_t i = 0; i < values.size(); ++i) values[i] += part[i];
    }
  };
}

DataParallel::DataParallel(Module& model, Communicator& comm, DataParallelOptions options)
    : model_(model), comm_(comm) {
  check_same_model(model, comm);
  broadcast_model(model, comm);
  // With one rank the local statistics are the global ones.
  if (options.sync_bn && comm.size() > 1) bn_comm_ = comm.split(0, comm.rank());
  grad_sync_ = std::make_unique<GradSync>(model.params(), comm, options.bucket_bytes, options.compression);
  // Hooks last: nothing below throws, so a failed construction leaves none behind.
  GradSync* sync = grad_sync_.get();
  model.set_grad_ready_hook([sync](Param& p) { sync->mark_ready(p); });
  if (bn_comm_) {
    Communicator* bn_comm = bn_comm_.get();
    model.visit([bn_comm](Module& m) {
      if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) {
        bn->set_stats_allreduce(sync_bn_stats_sum(*bn_comm));
      }
    });
  }
}

DataParallel::~DataParallel() {
  model_.set_grad_ready_hook({});
  if (bn_comm_) {
    model_.visit([](Module& m) {
      if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) bn->set_stats_allreduce({});
    });
  }
}

uint64_t DataParallel::sync_bn_bytes_sent() const { return bn_comm_ ? bn_comm_->bytes_sent() : 0; }
uint64_t DataParallel::sync_bn_bytes_received() const { return bn_comm_ ? bn_comm_->bytes_received() : 0; }

}  // namespace tern
