// Character-level text from Debian's `fortunes` package (the English cookie files under
// /usr/share/games/fortunes), the training data of gpt-tiny and examples/gpt.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/rng.h"
#include "runtime/tensor/tensor.h"

namespace tern {

// Where the `fortunes` package installs its English files.
inline constexpr const char* kDefaultFortunesDir = "/usr/share/games/fortunes";

// A text encoded as ids of the bytes that occur in it, split into training and validation by
// offset: the first part of the text trains, the rest validates.
struct CharCorpus {
  std::string name;                 // where it came from, for logs
  std::vector<uint8_t> vocab;       // the bytes that occur anywhere in the text, ascending: id -> byte
  std::vector<int32_t> train;       // ids of the text's first (1 - validation_fraction) bytes
  std::vector<int32_t> validation;  // ids of the rest

  int64_t vocab_size() const { return static_cast<int64_t>(vocab.size()); }
  // Id of a byte, or -1 when it is not in the vocabulary.
  int32_t id_of(uint8_t byte) const { return index_[byte]; }
  // Throws tern::Error naming the first byte the vocabulary does not hold.
  std::vector<int32_t> encode(const std::string& text) const;
  // Throws tern::Error for an id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;

  // Builds the vocabulary of `text` and splits it at floor(size * (1 - validation_fraction)).
  // validation_fraction in [0, 1).
  static CharCorpus from_text(const std::string& text, double validation_fraction, std::string name);

 private:
  // byte -> id, -1 for bytes not in the vocabulary.
  std::array<int32_t, 256> index_ = [] {
    std::array<int32_t, 256> a;
    a.fill(-1);
    return a;
  }();
};

// Reads every regular file of `dir` except the index files (*.dat) and the *.u8 links, in
// name order, concatenated, and splits off the last validation_fraction of it. Subdirectories
// (the offensive `off/` of older packages) are skipped. Throws tern::Error naming the directory
// and the `fortunes` package when the directory is missing or holds no such file.
CharCorpus load_fortunes(const std::string& dir = kDefaultFortunesDir, double validation_fraction = 0.1);

// A batch of next-character prediction problems: windows of seq_len + 1 ids; the first seq_len
// are the inputs, the last seq_len (shifted by one) the targets.
struct TextBatch {
  Tensor inputs;                 // i32 [B, seq_len]
  std::vector<int32_t> targets;  // B * seq_len ids, row-major like inputs
};

// batch windows starting at uniform random offsets of ids (rng.below), so the same rng state
// gives the same batch. ids must hold more than seq_len ids.
TextBatch random_windows(const std::vector<int32_t>& ids, int64_t batch, int64_t seq_len, Rng& rng);

// count windows starting at evenly spaced offsets across ids (the same ones every call), for a
// validation loss that is comparable between evaluations. ids must hold more than seq_len ids.
TextBatch spread_windows(const std::vector<int32_t>& ids, int64_t count, int64_t seq_len);

}  // namespace tern
