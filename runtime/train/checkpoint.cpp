#include "runtime/train/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>
#include <system_error>

#include "proto/tern.pb.h"
#include "runtime/error.h"

namespace tern {

// Tensor bytes are stored as the host lays them out; the format says little-endian.
static_assert(std::endian::native == std::endian::little, "checkpoints store host bytes as little-endian");

namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'T', 'E', 'R', 'N', 'C', 'K', 'P', 'T'};

std::string os_error(int err) { return std::strerror(err); }

[[noreturn]] void refuse(const std::string& source, const std::string& what) {
  throw Error("checkpoint '" + source + "' " + what);
}

// --- tensors <-> proto ---

proto::DType to_proto(DType t) {
  switch (t) {
    case DType::f32:
      return proto::DTYPE_F32;
    case DType::f16:
      return proto::DTYPE_F16;
    case DType::bf16:
      return proto::DTYPE_BF16;
    case DType::i8:
      return proto::DTYPE_I8;
    case DType::i32:
      return proto::DTYPE_I32;
    case DType::u8:
      return proto::DTYPE_U8;
    case DType::i64:
      return proto::DTYPE_I64;
  }
  throw Error("checkpoint: unknown dtype " + std::to_string(static_cast<int>(t)));
}

std::optional<DType> from_proto(int t) {
  switch (t) {
    case proto::DTYPE_F32:
      return DType::f32;
    case proto::DTYPE_F16:
      return DType::f16;
    case proto::DTYPE_BF16:
      return DType::bf16;
    case proto::DTYPE_I8:
      return DType::i8;
    case proto::DTYPE_I32:
      return DType::i32;
    case proto::DTYPE_U8:
      return DType::u8;
    case proto::DTYPE_I64:
      return DType::i64;
    default:
      return std::nullopt;
  }
}

void encode_tensors(const std::vector<NamedTensor>& in, const char* section,
                    google::protobuf::RepeatedPtrField<proto::NamedTensor>* out) {
  for (const NamedTensor& nt : in) {
    TERN_CHECK(nt.value.defined(), "checkpoint: ", section, " tensor '", nt.name, "' is undefined");
    TERN_CHECK(nt.value.device() == Device::cpu, "checkpoint: ", section, " tensor '", nt.name,
               "' is not on the CPU; copy it to the CPU before saving");
    proto::NamedTensor* pt = out->Add();
    pt->set_name(nt.name);
    pt->set_dtype(to_proto(nt.value.dtype()));
    for (int64_t d : nt.value.shape()) pt->add_shape(d);
    pt->set_data(nt.value.raw(), nt.value.nbytes());
  }
}

std::vector<NamedTensor> decode_tensors(const google::protobuf::RepeatedPtrField<proto::NamedTensor>& in,
                                        const char* section, const std::string& source) {
  std::vector<NamedTensor> out;
  out.reserve(in.size());
  for (const proto::NamedTensor& pt : in) {
    const std::optional<DType> dtype = from_proto(pt.dtype());
    if (!dtype)
      refuse(source, "is corrupted: " + std::string(section) + " tensor '" + pt.name() +
                         "' has unknown dtype code " + std::to_string(pt.dtype()));
    Shape shape(pt.shape().begin(), pt.shape().end());
    // Bound the element count by what the bytes can hold before multiplying, so a damaged shape
    // cannot overflow into a size that happens to match.
    const int64_t max_elements = static_cast<int64_t>(pt.data().size() / dtype_size(*dtype));
    int64_t numel = 1;
    for (int64_t d : shape) {
      if (d < 0 || (d > 0 && numel > max_elements / d))
        refuse(source, "is corrupted: " + std::string(section) + " tensor '" + pt.name() + "' has shape " +
                           shape_str(shape) + ", which does not fit its " + std::to_string(pt.data().size()) +
                           " data bytes");
      numel *= d;
    }
    const size_t expected = static_cast<size_t>(numel) * dtype_size(*dtype);
    if (pt.data().size() != expected)
      refuse(source, "is corrupted: " + std::string(section) + " tensor '" + pt.name() + "' of shape " +
                         shape_str(shape) + " should hold " + std::to_string(expected) + " bytes, holds " +
                         std::to_string(pt.data().size()));
    Tensor t = Tensor::empty(shape, *dtype);
    if (expected > 0) std::memcpy(t.raw(), pt.data().data(), expected);
    out.push_back({pt.name(), std::move(t)});
  }
  return out;
}

// --- framing ---

void put_u32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put_u64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

uint32_t crc32_of(const char* data, size_t n) {
  return static_cast<uint32_t>(crc32_z(crc32_z(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data), n));
}

// --- POSIX file helpers: std::ofstream can neither fsync nor report errno reliably ---

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  // Closes now and returns close()'s errno (0 on success): on some file systems a write error
  // only surfaces at close.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

// Returns 0 or the errno of the failed write.
int write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

std::string parent_dir(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// Makes the rename itself durable: without this a crash can forget the new directory entry.
int fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  FileDescriptor guard(fd);
  if (::fsync(fd) != 0) return errno;
  return guard.close();
}

// "ckpt-0000000042.tern" -> 42; nullopt for any other name (temp files included).
std::optional<int64_t> parse_checkpoint_name(const std::string& name) {
  const std::string prefix = "ckpt-", suffix = ".tern";
  if (name.size() < prefix.size() + 10 + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

// Matches checkpoint tensors to live tensors by name; every problem is collected so one error
// lists them all.
void restore_tensors(const std::vector<std::pair<std::string, Tensor*>>& live,
                     const std::vector<NamedTensor>& saved, const char* what, const std::string& source) {
  std::map<std::string, const Tensor*> by_name;
  std::vector<std::string> problems;
  for (const NamedTensor& nt : saved)
    if (!by_name.emplace(nt.name, &nt.value).second)
      problems.push_back("tensor '" + nt.name + "' appears twice in the checkpoint");
  std::map<std::string, Tensor*> live_by_name;
  for (const auto& [name, t] : live)
    TERN_CHECK(live_by_name.emplace(name, t).second, "restoring ", what, ": two tensors are named '", name,
               "', so a checkpoint cannot tell them apart");
  for (const auto& [name, t] : live) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) {
      problems.push_back("tensor '" + name + "' (" + t->str() + ") is missing from the checkpoint");
    } else if (it->second->shape() != t->shape() || it->second->dtype() != t->dtype()) {
      problems.push_back("tensor '" + name + "' is " + it->second->str() + " in the checkpoint but " +
                         t->str() + " in the " + what);
    }
  }
  for (const NamedTensor& nt : saved)
    if (!live_by_name.count(nt.name))
      problems.push_back("the checkpoint has tensor '" + nt.name + "' (" + nt.value.str() + ") that the " +
                         what + " does not have");
  if (!problems.empty()) {
    std::string msg = "checkpoint '" + source + "' does not match the " + what + ": ";
    const size_t shown = std::min<size_t>(problems.size(), 5);
    for (size_t i = 0; i < shown; ++i) msg += (i ? "; " : "") + problems[i];
    if (problems.size() > shown) msg += "; and " + std::to_string(problems.size() - shown) + " more";
    throw Error(msg);
  }
  for (const auto& [name, t] : live) {
    TERN_CHECK(t->device() == Device::cpu, "restoring ", what, ": tensor '", name, "' is not on the CPU");
    if (t->nbytes() > 0) std::memcpy(t->raw(), by_name.at(name)->raw(), t->nbytes());
  }
}

std::vector<NamedTensor> snapshot(const std::vector<std::pair<std::string, Tensor*>>& live,
                                  const char* what) {
  std::vector<NamedTensor> out;
  out.reserve(live.size());
  for (const auto& [name, t] : live) {
    TERN_CHECK(t->defined(), "capturing ", what, ": tensor '", name, "' is undefined");
    out.push_back({name, t->clone()});
  }
  return out;
}

std::vector<std::pair<std::string, Tensor*>> model_tensors(Module& model) {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (Param* p : model.params()) out.emplace_back(p->name, &p->value);
  for (Buffer* b : model.buffers()) out.emplace_back(b->name, &b->value);
  return out;
}

std::string describe_source(const CheckpointData& data) {
  return data.source.empty() ? std::string("(in memory)") : data.source;
}

}  // namespace

// --- encode / decode ---

std::string encode_checkpoint(const CheckpointData& data) {
  proto::Checkpoint msg;
  msg.set_format_version(kCheckpointFormatVersion);
  msg.set_model_name(data.model_name);
  msg.set_world_size(data.world_size);
  msg.set_step(data.step);
  msg.set_epoch(data.epoch);
  msg.set_batches_in_epoch(data.batches_in_epoch);
  encode_tensors(data.model, "model", msg.mutable_model());
  msg.set_optimizer_name(data.optimizer_name);
  encode_tensors(data.optimizer_state, "optimizer", msg.mutable_optimizer_state());
  msg.set_compressor(data.compressor);
  encode_tensors(data.compressor_state, "compressor", msg.mutable_compressor_state());
  for (const RngSnapshot& r : data.rngs) {
    proto::RngState* pr = msg.add_rngs();
    pr->set_name(r.name);
    pr->set_state(r.state);
    pr->set_increment(r.increment);
  }
  msg.set_config(data.config);

  const size_t payload = msg.ByteSizeLong();
  // Protobuf's own limit: one message cannot exceed 2 GiB.
  TERN_CHECK(payload <= static_cast<size_t>(INT_MAX), "checkpoint of model '", data.model_name, "' is ",
             payload, " bytes; protobuf messages are limited to 2 GiB");
  std::string bytes(kCheckpointHeaderBytes + payload, '\0');
  char* body = bytes.data() + kCheckpointHeaderBytes;
  TERN_CHECK(msg.SerializeToArray(body, static_cast<int>(payload)), "checkpoint: serializing model '",
             data.model_name, "' failed");
  std::memcpy(bytes.data(), kMagic, sizeof kMagic);
  put_u32(bytes.data() + 8, kCheckpointFormatVersion);
  put_u32(bytes.data() + 12, crc32_of(body, payload));
  put_u64(bytes.data() + 16, payload);
  return bytes;
}

CheckpointData decode_checkpoint(const std::string& bytes, const std::string& source) {
  const size_t n = bytes.size();
  // Magic first: a short file that is not even a prefix of the magic is not ours at all.
  if (std::memcmp(bytes.data(), kMagic, std::min(n, sizeof kMagic)) != 0)
    refuse(source, "is not a Tern checkpoint (bad magic: the file does not start with \"TERNCKPT\")");
  if (n < kCheckpointHeaderBytes)
    refuse(source, "is truncated: expected a " + std::to_string(kCheckpointHeaderBytes) +
                       "-byte header, got " + std::to_string(n) + " bytes");
  const uint32_t version = get_u32(bytes.data() + 8);
  if (version != kCheckpointFormatVersion)
    refuse(source, "has unsupported format version " + std::to_string(version) +
                       "; this build reads version " + std::to_string(kCheckpointFormatVersion));
  const uint32_t crc = get_u32(bytes.data() + 12);
  const uint64_t payload = get_u64(bytes.data() + 16);
  const uint64_t got = n - kCheckpointHeaderBytes;
  if (got < payload)
    refuse(source, "is truncated: expected " + std::to_string(kCheckpointHeaderBytes + payload) + " bytes (" +
                       std::to_string(payload) + " of payload), got " + std::to_string(n));
  if (got > payload)
    refuse(source, "is corrupted: " + std::to_string(got - payload) + " unexpected bytes after the " +
                       std::to_string(payload) + "-byte payload");
  const char* body = bytes.data() + kCheckpointHeaderBytes;
  const uint32_t actual = crc32_of(body, payload);
  if (actual != crc) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "is corrupted: CRC-32 mismatch (header says %08x, payload gives %08x)",
                  crc, actual);
    refuse(source, buf);
  }
  proto::Checkpoint msg;
  if (payload > static_cast<uint64_t>(INT_MAX) || !msg.ParseFromArray(body, static_cast<int>(payload)))
    refuse(source, "is unparseable: its CRC matches but the payload is not a tern.proto.Checkpoint message");
  if (msg.format_version() != version)
    refuse(source, "is corrupted: header version " + std::to_string(version) + " but message version " +
                       std::to_string(msg.format_version()));

  CheckpointData data;
  data.source = source;
  data.model_name = msg.model_name();
  data.world_size = msg.world_size();
  data.step = msg.step();
  data.epoch = msg.epoch();
  data.batches_in_epoch = msg.batches_in_epoch();
  data.model = decode_tensors(msg.model(), "model", source);
  data.optimizer_name = msg.optimizer_name();
  data.optimizer_state = decode_tensors(msg.optimizer_state(), "optimizer", source);
  data.compressor = msg.compressor();
  data.compressor_state = decode_tensors(msg.compressor_state(), "compressor", source);
  for (const proto::RngState& r : msg.rngs()) data.rngs.push_back({r.name(), r.state(), r.increment()});
  data.config = msg.config();
  return data;
}

// --- files ---

void save_checkpoint(const std::string& path, const CheckpointData& data) {
  // Encoding first: a bad tensor fails before any file is touched.
  const std::string bytes = encode_checkpoint(data);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error("cannot write checkpoint '" + path + "': creating temp file '" + tmp +
                "' failed: " + os_error(errno));
  FileDescriptor file(fd);
  auto fail = [&](const std::string& step, int err) {
    ::unlink(tmp.c_str());
    throw Error("cannot write checkpoint '" + path + "': " + step + " failed: " + os_error(err) +
                " (the previous checkpoint, if any, is unchanged)");
  };
  if (const int err = write_all(fd, bytes.data(), bytes.size())) fail("writing temp file '" + tmp + "'", err);
  if (::fsync(fd) != 0) fail("fsync of temp file '" + tmp + "'", errno);
  if (const int err = file.close()) fail("closing temp file '" + tmp + "'", err);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming '" + tmp + "' over it", errno);
  // The new file is in place; only its durability across a power cut is still open.
  if (const int err = fsync_dir(parent_dir(path)))
    throw Error("checkpoint '" + path + "' was written but fsync of its directory '" + parent_dir(path) +
                "' failed: " + os_error(err) + "; it may not survive a crash");
}

CheckpointData load_checkpoint(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) refuse(path, "is missing: no such file");
    refuse(path, "cannot be opened: " + os_error(err));
  }
  FileDescriptor file(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) refuse(path, "cannot be read: fstat failed: " + os_error(errno));
  if (!S_ISREG(st.st_mode)) refuse(path, "is not a regular file");
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      refuse(path, "cannot be read: " + os_error(errno));
    }
    if (r == 0) break;  // shrank since fstat: decode reports it as truncated
    done += static_cast<size_t>(r);
  }
  bytes.resize(done);
  return decode_checkpoint(bytes, path);
}

// --- model, optimizer, RNG ---

void capture_model(Module& model, CheckpointData& data) {
  data.model = snapshot(model_tensors(model), "model");
}

void check_model_name(const CheckpointData& data, const std::string& expected_model_name) {
  if (expected_model_name.empty() || data.model_name == expected_model_name) return;
  throw Error("checkpoint '" + describe_source(data) + "' is for another model: it was written for model '" +
              data.model_name + "', this run builds model '" + expected_model_name + "'");
}

void restore_model(Module& model, const CheckpointData& data, const std::string& expected_model_name) {
  check_model_name(data, expected_model_name);
  restore_tensors(model_tensors(model), data.model, "model", describe_source(data));
}

void capture_optimizer(Optimizer& optimizer, CheckpointData& data) {
  data.optimizer_name = optimizer.name();
  data.optimizer_state = snapshot(optimizer.state(), "optimizer state");
}

void restore_optimizer(Optimizer& optimizer, const CheckpointData& data) {
  if (data.optimizer_name != optimizer.name())
    throw Error("checkpoint '" + describe_source(data) + "' holds state of optimizer '" +
                data.optimizer_name + "', this run uses optimizer '" + optimizer.name() + "'");
  restore_tensors(optimizer.state(), data.optimizer_state, "optimizer state", describe_source(data));
}

void capture_rng(const std::string& name, const Rng& rng, CheckpointData& data) {
  for (RngSnapshot& r : data.rngs) {
    if (r.name == name) {
      r.state = rng.state();
      r.increment = rng.increment();
      return;
    }
  }
  data.rngs.push_back({name, rng.state(), rng.increment()});
}

void restore_rng(const CheckpointData& data, const std::string& name, Rng& rng) {
  std::string known;
  for (const RngSnapshot& r : data.rngs) {
    if (r.name == name) {
      rng.set_state(r.state, r.increment);
      return;
    }
    known += (known.empty() ? "" : ", ") + r.name;
  }
  throw Error("checkpoint '" + describe_source(data) + "' has no state for random generator '" + name +
              "' (it has: " + (known.empty() ? std::string("none") : known) + ")");
}

// --- directories ---

std::string checkpoint_file_name(int64_t step) {
  TERN_CHECK(step >= 0, "checkpoint step must be >= 0, got ", step);
  char buf[40];
  std::snprintf(buf, sizeof buf, "ckpt-%010lld.tern", static_cast<long long>(step));
  return buf;
}

std::vector<CheckpointFile> list_checkpoints(const std::string& dir) {
  std::vector<CheckpointFile> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  fs::directory_iterator it(dir, ec);
  TERN_CHECK(!ec, "cannot list checkpoint directory '", dir, "': ", ec.message());
  for (const fs::directory_entry& entry : it) {
    const std::optional<int64_t> step = parse_checkpoint_name(entry.path().filename().string());
    if (step && entry.is_regular_file(ec)) out.push_back({*step, entry.path().string()});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointFile& a, const CheckpointFile& b) { return a.step < b.step; });
  return out;
}

std::string latest_checkpoint(const std::string& dir) {
  const std::vector<CheckpointFile> files = list_checkpoints(dir);
  return files.empty() ? std::string() : files.back().path;
}

std::optional<CheckpointData> load_latest_checkpoint(const std::string& dir) {
  const std::vector<CheckpointFile> files = list_checkpoints(dir);
  if (files.empty()) return std::nullopt;
  try {
    return load_checkpoint(files.back().path);
  } catch (const Error& newest) {
    // Name the checkpoint the user could fall back to, so the refusal is actionable.
    std::string advice = "; no earlier checkpoint in '" + dir + "' loads either";
    for (size_t i = files.size() - 1; i-- > 0;) {
      try {
        load_checkpoint(files[i].path);
        advice = "; the previous checkpoint '" + files[i].path + "' (step " + std::to_string(files[i].step) +
                 ") loads: move the bad file away to resume from it";
        break;
      } catch (const Error&) {
      }
    }
    throw Error(std::string(newest.what()) + "; refusing to resume" + advice);
  }
}

CheckpointData load_checkpoint_file_or_dir(const std::string& path) {
  if (!std::filesystem::is_directory(path)) return load_checkpoint(path);
  std::optional<CheckpointData> latest = load_latest_checkpoint(path);
  if (!latest) throw Error("--checkpoint " + path + ": no checkpoint in this directory");
  return std::move(*latest);
}

void prune_checkpoints(const std::string& dir, int keep, int64_t up_to_step) {
  TERN_CHECK(keep >= 1, "checkpoints to keep must be >= 1, got ", keep);
  std::vector<CheckpointFile> files = list_checkpoints(dir);
  files.erase(std::remove_if(files.begin(), files.end(),
                             [&](const CheckpointFile& f) { return f.step > up_to_step; }),
              files.end());
  if (files.size() <= static_cast<size_t>(keep)) return;
  for (size_t i = 0; i + keep < files.size(); ++i) {
    std::error_code ec;
    fs::remove(files[i].path, ec);
    TERN_CHECK(!ec, "cannot remove old checkpoint '", files[i].path, "': ", ec.message());
  }
}

std::string save_checkpoint_to_dir(const std::string& dir, const CheckpointData& data, int keep) {
  TERN_CHECK(keep >= 1, "checkpoints to keep must be >= 1, got ", keep);
  std::error_code ec;
  fs::create_directories(dir, ec);
  TERN_CHECK(!ec, "cannot create checkpoint directory '", dir, "': ", ec.message());
  const std::string path = (fs::path(dir) / checkpoint_file_name(data.step)).string();
  save_checkpoint(path, data);
  prune_checkpoints(dir, keep, data.step);
  return path;
}

}  // namespace tern
