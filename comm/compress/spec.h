// CompressorSpec: the command-line form of a compressor, "name:key=value,key=value"
// (`dgc:ratio=0.001,warmup_epochs=4`), parsed and checked so that a typo is an error, not a default.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

namespace tern {

class CompressorSpec {
 public:
  // Throws tern::Error for a malformed spec (empty name, "key" without "=value", a key given twice).
  static CompressorSpec parse(const std::string& text);

  const std::string& name() const { return name_; }
  bool has(const std::string& key) const { return options_.count(key) != 0; }
  // Typed getters: the value of key, or fallback when absent; a value that does not parse as the
  // type (or lies outside [lo, hi]) is an Error naming the key, the value and what was expected.
  double get_double(const std::string& key, double fallback, double lo, double hi);
  int64_t get_int(const std::string& key, int64_t fallback, int64_t lo, int64_t hi);
  bool get_bool(const std::string& key, bool fallback);
  // Every key must have been read by a getter: an unknown option (a typo) is an Error that lists
  // the options this compressor knows.
  void check_all_used() const;

 private:
  std::string text_, name_;
  std::map<std::string, std::string> options_;
  std::set<std::string> used_;
};

}  // namespace tern
