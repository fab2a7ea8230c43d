#include "runtime/data/fortunes.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "tests/support/scratch_dir.h"

namespace tern {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CharCorpus, VocabularyIsTheSortedBytesThatOccur) {
  const CharCorpus c = CharCorpus::from_text("hello, world\n", 0.0, "test");
  const std::string vocab(c.vocab.begin(), c.vocab.end());
  EXPECT_EQ(vocab, "\n ,dehlorw");
  EXPECT_EQ(c.vocab_size(), 10);
  EXPECT_EQ(c.id_of('\n'), 0);
  EXPECT_EQ(c.id_of('w'), 9);
  EXPECT_EQ(c.id_of('z'), -1);
  EXPECT_EQ(c.decode(c.train), "hello, world\n");
  EXPECT_EQ(c.encode("world"), (std::vector<int32_t>{9, 7, 8, 6, 3}));
  EXPECT_NE(error_of([&] { c.encode("wxz"); }).find("byte 120 at offset 1"), std::string::npos);
  EXPECT_THROW(c.decode({10}), Error);
}

TEST(CharCorpus, ValidationIsTheTailOfTheTextByOffset) {
  std::string text;
  for (int i = 0; i < 100; ++i) text.push_back(static_cast<char>('a' + i % 26));
  const CharCorpus c = CharCorpus::from_text(text, 0.1, "test");
  ASSERT_EQ(c.train.size(), 90u);
  ASSERT_EQ(c.validation.size(), 10u);
  EXPECT_EQ(c.decode(c.train), text.substr(0, 90));
  EXPECT_EQ(c.decode(c.validation), text.substr(90));
  EXPECT_THROW(CharCorpus::from_text(text, 1.0, "test"), Error);
}

TEST(Fortunes, ReadsTextFilesInNameOrderSkippingIndexesLinksAndSubdirectories) {
  ScratchDir dir;
  write(dir.file("zeta"), "ZZ\n%\n");
  write(dir.file("alpha"), "AA\n%\n");
  write(dir.file("alpha.dat"), std::string("\x00\x01\xff", 3));
  fs::create_symlink("alpha", dir.file("alpha.u8"));
  fs::create_directory(dir.file("off"));
  write(dir.file("off/rude"), "XX\n%\n");
  const CharCorpus c = load_fortunes(dir.path(), 0.5);
  EXPECT_EQ(c.decode(c.train) + c.decode(c.validation), "AA\n%\nZZ\n%\n");
  EXPECT_EQ(c.decode(c.validation), "ZZ\n%\n");
  EXPECT_EQ(c.id_of('X'), -1);
  EXPECT_EQ(c.id_of(0xff), -1) << "bytes of the .dat index must not enter the vocabulary";
  EXPECT_NE(c.name.find("2 files"), std::string::npos) << c.name;
}

TEST(Fortunes, MissingFilesAreAnErrorNamingTheDirectoryAndThePackage) {
  ScratchDir dir;
  const std::string missing = dir.file("nowhere");
  std::string msg = error_of([&] { load_fortunes(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("`fortunes` package"), std::string::npos) << msg;
  write(dir.file("only.dat"), "x");
  msg = error_of([&] { load_fortunes(dir.path()); });
  EXPECT_NE(msg.find("no fortune files in " + dir.path()), std::string::npos) << msg;
  EXPECT_NE(msg.find("`fortunes` package"), std::string::npos) << msg;
}

TEST(TextWindows, TargetsAreTheInputsShiftedByOneFromAContiguousWindow) {
  std::vector<int32_t> ids(500);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);  // id = offset
  Rng rng(1);
  const TextBatch b = random_windows(ids, 8, 16, rng);
  ASSERT_EQ(b.inputs.shape(), (Shape{8, 16}));
  ASSERT_EQ(b.inputs.dtype(), DType::i32);
  ASSERT_EQ(b.targets.size(), 8u * 16u);
  const int32_t* in = b.inputs.data<int32_t>();
  std::set<int32_t> starts;
  for (int64_t r = 0; r < 8; ++r) {
    starts.insert(in[r * 16]);
    EXPECT_LE(in[r * 16] + 16, 499) << "the target window must end inside the text";
    for (int64_t t = 0; t < 16; ++t) {
      EXPECT_EQ(in[r * 16 + t], in[r * 16] + t);
      EXPECT_EQ(b.targets[static_cast<size_t>(r * 16 + t)], in[r * 16 + t] + 1);
    }
  }
  EXPECT_GT(starts.size(), 4u) << "8 random starts out of 484 should rarely collide";
}

TEST(TextWindows, SameSeedSameBatchAndEveryStartIsReachable) {
  std::vector<int32_t> ids(12);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  Rng a(5), b(5);
  const TextBatch x = random_windows(ids, 4, 3, a), y = random_windows(ids, 4, 3, b);
  EXPECT_EQ(x.targets, y.targets);
  // Starts 0..8 are valid for windows of 3 + 1 in 12 ids; 400 draws reach every one of them
  // (each is missed with probability (8/9)^400 < 1e-20).
  std::set<int32_t> starts;
  for (int i = 0; i < 100; ++i) {
    const TextBatch w = random_windows(ids, 4, 3, a);
    for (int r = 0; r < 4; ++r) starts.insert(w.inputs.data<int32_t>()[r * 3]);
  }
  EXPECT_EQ(starts, (std::set<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_THROW(random_windows(ids, 1, 12, a), Error);
}

TEST(TextWindows, SpreadWindowsCoverTheTextFromStartToEnd) {
  std::vector<int32_t> ids(101);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  const TextBatch b = spread_windows(ids, 5, 10);
  const int32_t* in = b.inputs.data<int32_t>();
  EXPECT_EQ(in[0], 0);
  EXPECT_EQ(b.targets.back(), 100) << "the last window ends at the last id";
  for (int r = 1; r < 5; ++r) EXPECT_GT(in[r * 10], in[(r - 1) * 10]);
  EXPECT_EQ(spread_windows(ids, 5, 10).targets, b.targets);
}

TEST(Fortunes, TheInstalledPackageGivesAnEnglishCharacterCorpus) {
  if (!fs::is_directory(kDefaultFortunesDir))
    GTEST_SKIP() << "fortunes not installed in " << kDefaultFortunesDir << " (Debian package fortunes)";
  const CharCorpus c = load_fortunes();
  const double total = static_cast<double>(c.train.size() + c.validation.size());
  EXPECT_GT(total, 1e6) << "the package holds a few MB of text";
  EXPECT_NEAR(static_cast<double>(c.validation.size()) / total, 0.1, 1e-6);
  EXPECT_LE(c.vocab_size(), 256);
  for (char ch : std::string("aeiou AEIOU.,!?\n%0123456789"))
    EXPECT_GE(c.id_of(static_cast<uint8_t>(ch)), 0) << ch;
}

}  // namespace
}  // namespace tern
