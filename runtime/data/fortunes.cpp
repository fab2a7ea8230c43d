#include "runtime/data/fortunes.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace tern {

namespace fs = std::filesystem;

std::vector<int32_t> CharCorpus::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    TERN_CHECK(index_[byte] >= 0, name, ": byte ", static_cast<int>(byte), " at offset ", i,
               " of the text to encode is not in the vocabulary of ", vocab.size(), " bytes");
    ids.push_back(index_[byte]);
  }
  return ids;
}

std::string CharCorpus::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    TERN_CHECK(id >= 0 && id < vocab_size(), name, ": id ", id, " is outside the vocabulary [0, ",
               vocab_size(), ")");
    text.push_back(static_cast<char>(vocab[static_cast<size_t>(id)]));
  }
  return text;
}

CharCorpus CharCorpus::from_text(const std::string& text, double validation_fraction, std::string name) {
  TERN_CHECK(validation_fraction >= 0 && validation_fraction < 1, name, ": validation fraction ",
             validation_fraction, " is outside [0, 1)");
  CharCorpus c;
  c.name = std::move(name);
  std::array<bool, 256> seen{};
  for (char ch : text) seen[static_cast<uint8_t>(ch)] = true;
  for (int b = 0; b < 256; ++b)
    if (seen[b]) {
      c.index_[b] = static_cast<int32_t>(c.vocab.size());
      c.vocab.push_back(static_cast<uint8_t>(b));
    }
  const auto split = static_cast<size_t>(static_cast<double>(text.size()) * (1 - validation_fraction));
  c.train.reserve(split);
  c.validation.reserve(text.size() - split);
  for (size_t i = 0; i < text.size(); ++i)
    (i < split ? c.train : c.validation).push_back(c.index_[static_cast<uint8_t>(text[i])]);
  return c;
}

CharCorpus load_fortunes(const std::string& dir, double validation_fraction) {
  const std::string hint =
      "install Debian's `fortunes` package (apt-get install fortunes, or scripts/install-deps.sh) "
      "or point --data-dir at a directory of fortune files";
  std::error_code ec;
  TERN_CHECK(fs::is_directory(dir, ec), "fortunes: ", dir, " is not a directory: ", hint);
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const fs::path& p = entry.path();
    const std::string ext = p.extension().string();
    // Only regular files (not symlinks: the *.u8 names point at the same files), no indexes.
    if (!entry.is_regular_file() || entry.is_symlink() || ext == ".dat" || ext == ".u8") continue;
    if (p.filename().string().starts_with(".")) continue;
    files.push_back(p);
  }
  TERN_CHECK(!ec, "fortunes: cannot list ", dir, ": ", ec.message());
  TERN_CHECK(!files.empty(), "fortunes: no fortune files in ", dir, ": ", hint);
  std::sort(files.begin(), files.end());  // directory order varies between file systems
  std::string text;
  for (const fs::path& p : files) {
    std::ifstream in(p, std::ios::binary);
    TERN_CHECK(in, "fortunes: cannot read ", p.string());
    text.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return CharCorpus::from_text(text, validation_fraction,
                               detail::concat("fortunes (", files.size(), " files in ", dir, ")"));
}

namespace {
TextBatch windows_at(const std::vector<int32_t>& ids, const std::vector<size_t>& starts, int64_t seq_len) {
  const auto B = static_cast<int64_t>(starts.size());
  TextBatch batch;
  batch.inputs = Tensor::empty({B, seq_len}, DType::i32);
  batch.targets.resize(static_cast<size_t>(B * seq_len));
  int32_t* in = batch.inputs.data<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* w = ids.data() + starts[static_cast<size_t>(b)];
    std::copy(w, w + seq_len, in + b * seq_len);
    std::copy(w + 1, w + 1 + seq_len, batch.targets.begin() + b * seq_len);
  }
  return batch;
}

void check_windows(const std::vector<int32_t>& ids, int64_t count, int64_t seq_len) {
  TERN_CHECK(count > 0 && seq_len > 0, "text windows: need a positive count and length, got ", count, " x ",
             seq_len);
  TERN_CHECK(static_cast<int64_t>(ids.size()) > seq_len, "text windows: the text has ", ids.size(),
             " characters, too few for one window of ", seq_len, " + 1");
}
}  // namespace

TextBatch random_windows(const std::vector<int32_t>& ids, int64_t batch, int64_t seq_len, Rng& rng) {
  check_windows(ids, batch, seq_len);
  const auto starts_count = static_cast<uint32_t>(ids.size() - static_cast<size_t>(seq_len));
  std::vector<size_t> starts(static_cast<size_t>(batch));
  for (size_t& s : starts) s = rng.below(starts_count);
  return windows_at(ids, starts, seq_len);
}

TextBatch spread_windows(const std::vector<int32_t>& ids, int64_t count, int64_t seq_len) {
  check_windows(ids, count, seq_len);
  const size_t last = ids.size() - static_cast<size_t>(seq_len) - 1;  // the last valid start
  std::vector<size_t> starts(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i)
    starts[static_cast<size_t>(i)] =
        count == 1 ? 0 : last * static_cast<size_t>(i) / static_cast<size_t>(count - 1);
  return windows_at(ids, starts, seq_len);
}

}  // namespace tern
