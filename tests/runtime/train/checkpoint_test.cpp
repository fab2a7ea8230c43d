#include "runtime/train/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>

#include "optim/adam.h"
#include "optim/sgd.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/norm.h"
#include "runtime/nn/sequential.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/error_of.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

using testing::error_of;

// Linear then BatchNorm: parameters and BN running-stat buffers.
std::unique_ptr<Sequential> small_model(uint64_t seed, int64_t hidden = 3) {
  Rng rng(seed);
  auto m = std::make_unique<Sequential>();
  m->emplace<Linear>(4, hidden, rng);
  m->emplace<BatchNorm2d>(hidden);
  return m;
}

Tensor input_batch(uint64_t seed) {
  Rng rng(seed);
  Tensor x = Tensor::empty({8, 4});
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = rng.normal();
  return x;
}

// One step of 0.5*|y|^2: moves parameters, BN running stats and the optimizer's state.
void train_step(Module& model, Optimizer& opt, uint64_t seed) {
  opt.zero_grad();
  const Tensor y = model.forward(input_batch(seed));
  model.backward(y.clone());
  opt.step();
}

AdamOptions adam_options() {
  AdamOptions o;
  o.lr = 0.01f;
  return o;
}

CheckpointData every_dtype_checkpoint() {
  CheckpointData d;
  d.model_name = "cnn";
  d.world_size = 4;
  d.step = 1234567;
  d.epoch = 3;
  d.batches_in_epoch = 17;
  d.optimizer_name = "adam";
  d.compressor = "topk:ratio=0.001";
  d.config = "model=cnn lr=0.1\nnote=\"ünïcode\"";
  Tensor f32 = Tensor::empty({2, 3});
  const float specials[6] = {-0.0f,
                             std::numeric_limits<float>::denorm_min(),
                             std::nanf("0x1234"),
                             std::numeric_limits<float>::infinity(),
                             1.0f / 3.0f,
                             -7.5f};
  std::memcpy(f32.raw(), specials, sizeof specials);
  Tensor f16 = Tensor::empty({3}, DType::f16), bf16 = Tensor::empty({2, 2}, DType::bf16);
  for (int i = 0; i < 3; ++i) f16.data<uint16_t>()[i] = static_cast<uint16_t>(0x7C01 + 1000 * i);
  for (int i = 0; i < 4; ++i) bf16.data<uint16_t>()[i] = static_cast<uint16_t>(0xFF81 - 77 * i);
  Tensor i8 = Tensor::empty({5}, DType::i8), u8 = Tensor::empty({5}, DType::u8);
  for (int i = 0; i < 5; ++i) {
    i8.data<int8_t>()[i] = static_cast<int8_t>(-128 + 60 * i);
    u8.data<uint8_t>()[i] = static_cast<uint8_t>(255 - 50 * i);
  }
  Tensor i32 = Tensor::empty({1}, DType::i32), i64 = Tensor::empty({2}, DType::i64);
  i32.data<int32_t>()[0] = std::numeric_limits<int32_t>::min();
  i64.data<int64_t>()[0] = std::numeric_limits<int64_t>::max();
  i64.data<int64_t>()[1] = -1;
  Tensor scalar = Tensor::empty({}), empty = Tensor::empty({0, 3});
  scalar.f32()[0] = 42.0f;
  d.model = {{"w.f32", f32}, {"w.f16", f16}, {"w.bf16", bf16}, {"scalar", scalar}, {"empty", empty}};
  d.optimizer_state = {{"step", i32}, {"w.i64", i64}};
  d.compressor_state = {{"residual.i8", i8}, {"mask.u8", u8}};
  d.rngs = {{"data.shuffle", 0xDEADBEEFCAFEF00DULL, 0x1234567890ABCDEFULL}, {"dropout", 0, 1}};
  return d;
}

void expect_same_tensors(const std::vector<NamedTensor>& a, const std::vector<NamedTensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_TRUE(same_bytes(a[i].value, b[i].value)) << a[i].name << ": " << b[i].value.str();
  }
}

// --- the file format ---

TEST(Checkpoint, RoundTripIsBitExactForEveryDtypeAndField) {
  ScratchDir dir;
  const CheckpointData saved = every_dtype_checkpoint();
  save_checkpoint(dir.file("a.tern"), saved);
  const CheckpointData loaded = load_checkpoint(dir.file("a.tern"));
  EXPECT_EQ(loaded.source, dir.file("a.tern"));
  EXPECT_EQ(loaded.model_name, saved.model_name);
  EXPECT_EQ(loaded.world_size, saved.world_size);
  EXPECT_EQ(loaded.step, saved.step);
  EXPECT_EQ(loaded.epoch, saved.epoch);
  EXPECT_EQ(loaded.batches_in_epoch, saved.batches_in_epoch);
  EXPECT_EQ(loaded.optimizer_name, saved.optimizer_name);
  EXPECT_EQ(loaded.compressor, saved.compressor);
  EXPECT_EQ(loaded.config, saved.config);
  expect_same_tensors(loaded.model, saved.model);
  expect_same_tensors(loaded.optimizer_state, saved.optimizer_state);
  expect_same_tensors(loaded.compressor_state, saved.compressor_state);
  ASSERT_EQ(loaded.rngs.size(), 2u);
  EXPECT_EQ(loaded.rngs[0].name, "data.shuffle");
  EXPECT_EQ(loaded.rngs[0].state, 0xDEADBEEFCAFEF00DULL);
  EXPECT_EQ(loaded.rngs[0].increment, 0x1234567890ABCDEFULL);
  EXPECT_EQ(loaded.rngs[1].state, 0u);
}

TEST(Checkpoint, FileStartsWithTheDocumentedHeader) {
  const std::string bytes = encode_checkpoint(every_dtype_checkpoint());
  ASSERT_GT(bytes.size(), kCheckpointHeaderBytes);
  EXPECT_EQ(bytes.substr(0, 8), "TERNCKPT");
  EXPECT_EQ(static_cast<unsigned char>(bytes[8]), kCheckpointFormatVersion);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(bytes[16 + i]);
  EXPECT_EQ(length, bytes.size() - kCheckpointHeaderBytes);
  uint32_t crc = 0;
  for (int i = 3; i >= 0; --i) crc = (crc << 8) | static_cast<unsigned char>(bytes[12 + i]);
  EXPECT_EQ(crc, crc32(0L, reinterpret_cast<const Bytef*>(bytes.data() + kCheckpointHeaderBytes),
                       static_cast<uInt>(length)));
}

TEST(Checkpoint, MissingFileIsRefusedAsMissing) {
  ScratchDir dir;
  const std::string msg = error_of([&] { load_checkpoint(dir.file("nope.tern")); });
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.file("nope.tern")), std::string::npos) << msg;
}

TEST(Checkpoint, TruncatedFileIsRefusedAtEveryCut) {
  ScratchDir dir;
  save_checkpoint(dir.file("full.tern"), every_dtype_checkpoint());
  const std::string bytes = read_bytes(dir.file("full.tern"));
  for (size_t cut :
       {size_t{0}, size_t{5}, size_t{8}, size_t{12}, kCheckpointHeaderBytes - 1, kCheckpointHeaderBytes,
        kCheckpointHeaderBytes + 1, bytes.size() / 2, bytes.size() - 1}) {
    const std::string path = dir.file("cut.tern");
    write_bytes(path, bytes.substr(0, cut));
    const std::string msg = error_of([&] { load_checkpoint(path); });
    EXPECT_NE(msg.find("truncated"), std::string::npos) << "cut at " << cut << ": " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  // The payload cut says how many bytes were expected and how many arrived.
  write_bytes(dir.file("cut.tern"), bytes.substr(0, bytes.size() - 10));
  const std::string msg = error_of([&] { load_checkpoint(dir.file("cut.tern")); });
  EXPECT_NE(msg.find("expected " + std::to_string(bytes.size()) + " bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got " + std::to_string(bytes.size() - 10)), std::string::npos) << msg;
}

TEST(Checkpoint, FlippedPayloadByteIsRefusedAsCorrupted) {
  ScratchDir dir;
  save_checkpoint(dir.file("full.tern"), every_dtype_checkpoint());
  const std::string bytes = read_bytes(dir.file("full.tern"));
  for (size_t at : {kCheckpointHeaderBytes, bytes.size() / 2, bytes.size() - 1}) {
    std::string bad = bytes;
    bad[at] = static_cast<char>(bad[at] ^ 0x01);
    write_bytes(dir.file("bad.tern"), bad);
    const std::string msg = error_of([&] { load_checkpoint(dir.file("bad.tern")); });
    EXPECT_NE(msg.find("corrupted"), std::string::npos) << "byte " << at << ": " << msg;
    EXPECT_NE(msg.find("CRC"), std::string::npos) << msg;
  }
}

TEST(Checkpoint, TrailingBytesAreRefusedAsCorrupted) {
  ScratchDir dir;
  write_bytes(dir.file("long.tern"), encode_checkpoint(every_dtype_checkpoint()) + "xyz");
  const std::string msg = error_of([&] { load_checkpoint(dir.file("long.tern")); });
  EXPECT_NE(msg.find("corrupted"), std::string::npos) << msg;
}

TEST(Checkpoint, ForeignFileIsRefusedAsBadMagic) {
  ScratchDir dir;
  write_bytes(dir.file("notes.txt"), "model=cnn lr=0.1 and other things that are not a checkpoint\n");
  const std::string msg = error_of([&] { load_checkpoint(dir.file("notes.txt")); });
  EXPECT_NE(msg.find("not a Tern checkpoint"), std::string::npos) << msg;
  // A file shorter than the magic that does not start like it is foreign too, not truncated.
  write_bytes(dir.file("short"), "PK");
  EXPECT_NE(error_of([&] { load_checkpoint(dir.file("short")); }).find("not a Tern checkpoint"),
            std::string::npos);
}

TEST(Checkpoint, NewerFormatVersionIsRefusedNamingIt) {
  std::string bytes = encode_checkpoint(every_dtype_checkpoint());
  bytes[8] = 2;
  const std::string msg = error_of([&] { decode_checkpoint(bytes, "v2.tern"); });
  EXPECT_NE(msg.find("unsupported format version 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("v2.tern"), std::string::npos) << msg;
}

TEST(Checkpoint, ValidFramingAroundGarbageIsRefusedAsUnparseable) {
  const std::string payload(64, '\xFF');  // varint continuation bytes forever: not a message
  std::string bytes = "TERNCKPT";
  auto put = [&](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes += static_cast<char>((v >> (8 * i)) & 0xFF);
  };
  put(kCheckpointFormatVersion, 4);
  put(crc32(0L, reinterpret_cast<const Bytef*>(payload.data()), static_cast<uInt>(payload.size())), 4);
  put(payload.size(), 8);
  bytes += payload;
  const std::string msg = error_of([&] { decode_checkpoint(bytes, "garbage.tern"); });
  EXPECT_NE(msg.find("unparseable"), std::string::npos) << msg;
}

// --- atomic writes ---

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Checkpoint, FailedRenameRemovesTheTempFileAndNamesTheOsError) {
  ScratchDir dir;
  fs::create_directory(dir.file("target.tern"));  // rename(file, directory) fails with EISDIR
  fs::create_directory(dir.file("target.tern/keep"));
  const std::string msg =
      error_of([&] { save_checkpoint(dir.file("target.tern"), every_dtype_checkpoint()); });
  EXPECT_NE(msg.find(dir.file("target.tern")), std::string::npos) << msg;
  EXPECT_NE(msg.find("renaming"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::strerror(EISDIR)), std::string::npos) << msg;
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"target.tern"});  // no temp file left
  EXPECT_TRUE(fs::is_directory(dir.file("target.tern/keep")));
}

TEST(Checkpoint, FailedWriteLeavesThePreviousCheckpointIntact) {
  ScratchDir dir;
  const std::string path = dir.file("ckpt.tern");
  CheckpointData first = every_dtype_checkpoint();
  first.step = 100;
  save_checkpoint(path, first);
  const std::string before = read_bytes(path);

  // The temp file cannot be created: its name is taken by a directory.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  fs::create_directory(tmp);
  CheckpointData second = every_dtype_checkpoint();
  second.step = 200;
  EXPECT_NE(error_of([&] { save_checkpoint(path, second); }).find(tmp), std::string::npos);
  fs::remove(tmp);
  EXPECT_EQ(read_bytes(path), before);

  // A tensor that cannot be encoded fails before any file is touched.
  second.model.push_back({"undefined", Tensor()});
  EXPECT_NE(error_of([&] { save_checkpoint(path, second); }).find("undefined"), std::string::npos);
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(load_checkpoint(path).step, 100);
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"ckpt.tern"});
}

TEST(Checkpoint, SavingAgainReplacesTheFileWhole) {
  ScratchDir dir;
  CheckpointData big = every_dtype_checkpoint();
  big.model.push_back({"big", Tensor::zeros({4096})});
  save_checkpoint(dir.file("c.tern"), big);
  CheckpointData small = every_dtype_checkpoint();
  small.step = 7;
  save_checkpoint(dir.file("c.tern"), small);  // shorter: no tail of the old file may remain
  EXPECT_EQ(load_checkpoint(dir.file("c.tern")).step, 7);
}

// --- model, optimizer, RNG ---

TEST(Checkpoint, RestoredModelAndOptimizerContinueBitIdentically) {
  ScratchDir dir;
  auto a = small_model(1);
  Adam opt_a(a->params(), adam_options());
  for (uint64_t s = 0; s < 3; ++s) train_step(*a, opt_a, s);
  CheckpointData data;
  data.model_name = "small";
  capture_model(*a, data);
  capture_optimizer(opt_a, data);
  EXPECT_EQ(data.model.size(), a->params().size() + a->buffers().size());  // BN running stats too
  save_checkpoint(dir.file("c.tern"), data);

  auto b = small_model(2);  // different initial values, all overwritten by the restore
  Adam opt_b(b->params(), adam_options());
  const CheckpointData loaded = load_checkpoint(dir.file("c.tern"));
  restore_model(*b, loaded, "small");
  restore_optimizer(opt_b, loaded);
  EXPECT_EQ(opt_b.steps(), 3);
  // The next steps match bit for bit: every piece of state the update reads came back.
  train_step(*a, opt_a, 9);
  train_step(*b, opt_b, 9);
  for (size_t i = 0; i < a->params().size(); ++i)
    EXPECT_TRUE(same_bytes(a->params()[i]->value, b->params()[i]->value)) << a->params()[i]->name;
  for (size_t i = 0; i < a->buffers().size(); ++i)
    EXPECT_TRUE(same_bytes(a->buffers()[i]->value, b->buffers()[i]->value)) << a->buffers()[i]->name;
  const auto sa = opt_a.state(), sb = opt_b.state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(same_bytes(*sa[i].second, *sb[i].second)) << sa[i].first;
}

TEST(Checkpoint, CaptureIsASnapshotNotAView) {
  auto m = small_model(1);
  CheckpointData data;
  capture_model(*m, data);
  const Tensor before = data.model[0].value.clone();
  m->params()[0]->value.fill(5.0);
  EXPECT_TRUE(same_bytes(data.model[0].value, before));
}

TEST(Checkpoint, CheckpointForAnotherModelIsRefusedNamingBoth) {
  auto m = small_model(1);
  CheckpointData data;
  data.model_name = "resnet20";
  data.source = "run/ckpt-0000000010.tern";
  capture_model(*m, data);
  const std::string msg = error_of([&] { restore_model(*m, data, "cnn"); });
  EXPECT_NE(msg.find("another model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'resnet20'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'cnn'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(data.source), std::string::npos) << msg;
  EXPECT_NO_THROW(restore_model(*m, data));  // no expected name: not checked
}

TEST(Checkpoint, ShapeMismatchNamesTheTensorAndBothShapesAndChangesNothing) {
  auto wide = small_model(1, /*hidden=*/5);
  CheckpointData data;
  capture_model(*wide, data);
  auto narrow = small_model(2, /*hidden=*/3);
  std::vector<Tensor> before;
  for (Param* p : narrow->params()) before.push_back(p->value.clone());
  const std::string msg = error_of([&] { restore_model(*narrow, data); });
  EXPECT_NE(msg.find("'0.weight' is f32[5, 4] in the checkpoint but f32[3, 4] in the model"),
            std::string::npos)
      << msg;
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(same_bytes(narrow->params()[i]->value, before[i]));
}

TEST(Checkpoint, MissingAndExtraTensorsAreNamed) {
  auto m = small_model(1);
  CheckpointData data;
  capture_model(*m, data);
  const std::string dropped = data.model.back().name;
  data.model.pop_back();
  data.model.push_back({"head.weight", Tensor::zeros({2})});
  const std::string msg = error_of([&] { restore_model(*m, data); });
  EXPECT_NE(msg.find("'" + dropped + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing from the checkpoint"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'head.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not have"), std::string::npos) << msg;
}

TEST(Checkpoint, DtypeMismatchIsRefused) {
  auto m = small_model(1);
  CheckpointData data;
  capture_model(*m, data);
  data.model[0].value = data.model[0].value.to(DType::bf16);
  const std::string msg = error_of([&] { restore_model(*m, data); });
  EXPECT_NE(msg.find("bf16[3, 4] in the checkpoint but f32[3, 4]"), std::string::npos) << msg;
}

TEST(Checkpoint, OptimizerStateOfAnotherOptimizerIsRefused) {
  auto m = small_model(1);
  Adam adam(m->params(), adam_options());
  CheckpointData data;
  capture_optimizer(adam, data);
  SgdOptions so;
  so.momentum = 0.9f;
  Sgd sgd(m->params(), so);
  const std::string msg = error_of([&] { restore_optimizer(sgd, data); });
  EXPECT_NE(msg.find("'adam'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'" + sgd.name() + "'"), std::string::npos) << msg;
}

TEST(Checkpoint, RestoredRngContinuesTheSameStream) {
  Rng rng(77, 3);
  for (int i = 0; i < 5; ++i) rng.next_u32();
  CheckpointData data;
  capture_rng("data.shuffle", rng, data);
  capture_rng("data.shuffle", rng, data);  // replaces, does not duplicate
  EXPECT_EQ(data.rngs.size(), 1u);
  const CheckpointData loaded = decode_checkpoint(encode_checkpoint(data), "mem");
  Rng restored;
  restore_rng(loaded, "data.shuffle", restored);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(restored.next_u32(), rng.next_u32());
  const std::string msg = error_of([&] { restore_rng(loaded, "dropout", restored); });
  EXPECT_NE(msg.find("'dropout'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.shuffle"), std::string::npos) << msg;
}

// --- checkpoint directories ---

CheckpointData at_step(int64_t step) {
  CheckpointData d;
  d.model_name = "m";
  d.step = step;
  d.model = {{"w", Tensor::full({3}, static_cast<double>(step))}};
  return d;
}

TEST(CheckpointDir, FileNamesSortByStep) {
  EXPECT_EQ(checkpoint_file_name(42), "ckpt-0000000042.tern");
  EXPECT_LT(checkpoint_file_name(999), checkpoint_file_name(1000));
}

TEST(CheckpointDir, LatestIsTheHighestStepAndTempFilesAreIgnored) {
  ScratchDir dir;
  EXPECT_EQ(latest_checkpoint(dir.path()), "");
  EXPECT_EQ(latest_checkpoint(dir.file("does-not-exist")), "");
  EXPECT_FALSE(load_latest_checkpoint(dir.path()).has_value());
  for (int64_t s : {1000, 20, 300}) save_checkpoint(dir.file(checkpoint_file_name(s)), at_step(s));
  // Debris of a crashed write and unrelated files.
  write_bytes(dir.file(checkpoint_file_name(5000) + ".tmp.12345"), "TERNCK");
  write_bytes(dir.file("ckpt-latest.tern"), "x");
  write_bytes(dir.file("notes.txt"), "x");
  EXPECT_EQ(latest_checkpoint(dir.path()), dir.file(checkpoint_file_name(1000)));
  const auto files = list_checkpoints(dir.path());
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].step, 20);
  EXPECT_EQ(files[1].step, 300);
  EXPECT_EQ(files[2].step, 1000);
  EXPECT_EQ(load_latest_checkpoint(dir.path())->step, 1000);
}

TEST(CheckpointDir, AProgramsCheckpointArgumentIsAFileOrADirectoryOfThem) {
  ScratchDir dir;
  EXPECT_NE(error_of([&] { load_checkpoint_file_or_dir(dir.path()); }).find("no checkpoint in this directory"),
            std::string::npos);
  for (int64_t s : {7, 30}) save_checkpoint(dir.file(checkpoint_file_name(s)), at_step(s));
  EXPECT_EQ(load_checkpoint_file_or_dir(dir.path()).step, 30);  // the newest
  EXPECT_EQ(load_checkpoint_file_or_dir(dir.file(checkpoint_file_name(7))).step, 7);
  EXPECT_THROW(load_checkpoint_file_or_dir(dir.file("missing.tern")), Error);
}

TEST(CheckpointDir, SavingKeepsOnlyTheNewestK) {
  ScratchDir dir;
  const std::string sub = dir.file("run");  // created on first save
  for (int64_t s = 1; s <= 5; ++s) save_checkpoint_to_dir(sub, at_step(s * 10), /*keep=*/2);
  const auto files = list_checkpoints(sub);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].step, 40);
  EXPECT_EQ(files[1].step, 50);
  save_checkpoint_to_dir(sub, at_step(60), /*keep=*/1);
  EXPECT_EQ(list_checkpoints(sub).size(), 1u);
}

TEST(CheckpointDir, PruningSparesLaterStepsAndTheFileJustWritten) {
  ScratchDir dir;
  for (int64_t s : {500, 600}) save_checkpoint(dir.file(checkpoint_file_name(s)), at_step(s));
  // A new run writing low steps into a directory that holds a later run's checkpoints.
  for (int64_t s : {1, 2, 3}) save_checkpoint_to_dir(dir.path(), at_step(s), /*keep=*/2);
  std::vector<int64_t> steps;
  for (const auto& f : list_checkpoints(dir.path())) steps.push_back(f.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 3, 500, 600}));
}

TEST(CheckpointDir, CorruptNewestIsRefusedNamingThePreviousValidOne) {
  ScratchDir dir;
  for (int64_t s : {10, 20}) save_checkpoint(dir.file(checkpoint_file_name(s)), at_step(s));
  const std::string newest = dir.file(checkpoint_file_name(20));
  std::string bytes = read_bytes(newest);
  bytes.resize(bytes.size() - 3);
  write_bytes(newest, bytes);
  const std::string msg = error_of([&] { load_latest_checkpoint(dir.path()); });
  EXPECT_NE(msg.find(newest), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.file(checkpoint_file_name(10))), std::string::npos) << msg;
  EXPECT_EQ(read_bytes(newest), bytes);  // nothing was overwritten or removed
}

}  // namespace
}  // namespace tern
