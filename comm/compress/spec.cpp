#include "comm/compress/spec.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "runtime/error.h"

namespace tern {

CompressorSpec CompressorSpec::parse(const std::string& text) {
  CompressorSpec spec;
  spec.text_ = text;
  const size_t colon = text.find(':');
  spec.name_ = text.substr(0, colon);
  TERN_CHECK(!spec.name_.empty(), "compressor spec '", text, "': expected name[:key=value,...]");
  if (colon == std::string::npos) return spec;
  const std::string rest = text.substr(colon + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t comma = rest.find(',', start);
    const std::string item = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t eq = item.find('=');
    TERN_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < item.size(), "compressor spec '", text,
               "': option '", item, "' is not key=value");
    const std::string key = item.substr(0, eq);
    TERN_CHECK(spec.options_.emplace(key, item.substr(eq + 1)).second, "compressor spec '", text, "': option '",
               key, "' given twice");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return spec;
}

double CompressorSpec::get_double(const std::string& key, double fallback, double lo, double hi) {
  used_.insert(key);
  const auto it = options_.find(key);
  if (it == options_.end()) return fallback;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  TERN_CHECK(errno == 0 && end != it->second.c_str() && *end == '\0' && std::isfinite(v) && v >= lo && v <= hi,
             "compressor spec '", text_, "': ", key, "=", it->second, " is not a number in [", lo, ", ", hi, "]");
  return v;
}

int64_t CompressorSpec::get_int(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  used_.insert(key);
  const auto it = options_.find(key);
  if (it == options_.end()) return fallback;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(it->second.c_str(), &end, 10);
  TERN_CHECK(errno == 0 && end != it->second.c_str() && *end == '\0' && v >= lo && v <= hi, "compressor spec '",
             text_, "': ", key, "=", it->second, " is not an integer in [", lo, ", ", hi, "]");
  return v;
}

bool CompressorSpec::get_bool(const std::string& key, bool fallback) {
  used_.insert(key);
  const auto it = options_.find(key);
  if (it == options_.end()) return fallback;
  const std::string& v = it->second;
  if (v == "1" || v == "true" || v == "on") return true;
  if (v == "0" || v == "false" || v == "off") return false;
  throw Error(detail::concat("compressor spec '", text_, "': ", key, "=", v, " is not a boolean (0|1)"));
}

void CompressorSpec::check_all_used() const {
  for (const auto& [key, value] : options_) {
    if (used_.count(key)) continue;
    std::string known;
    for (const auto& k : used_) known += (known.empty() ? "" : ", ") + k;
    throw Error(detail::concat("compressor spec '", text_, "': unknown option '", key, "' for ", name_,
                               known.empty() ? " (it takes no options)" : " (known: " + known + ")"));
  }
}

}  // namespace tern
