#include "runtime/io/byte_sizes.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "runtime/error.h"

namespace tern {

size_t parse_bytes(std::string_view text) {
  const std::string original(text);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  size_t digits_end = 0;
  bool seen_point = false, seen_digit = false;
  while (digits_end < text.size()) {
    const char c = text[digits_end];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      seen_digit = true;
    } else if (c == '.' && !seen_point) {
      seen_point = true;
    } else {
      break;
    }
    ++digits_end;
  }
  TERN_CHECK(seen_digit, "memory size '", original,
             "' is not a byte count; expected a number with an optional unit, like 300000, 256KB or 1.5MB");
  std::string unit(text.substr(digits_end));
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.front()))) unit.erase(0, 1);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "b") {
    scale = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    scale = 1024.0;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    scale = 1024.0 * 1024.0;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    scale = 1024.0 * 1024.0 * 1024.0;
  }
  TERN_CHECK(scale > 0, "memory size '", original, "' has unknown unit '", unit,
             "'; expected B, KB (= 1024 B), MB or GB");
  const double bytes = std::strtod(std::string(text.substr(0, digits_end)).c_str(), nullptr) * scale;
  TERN_CHECK(bytes < 1.8e19, "memory size '", original, "' is too large");
  TERN_CHECK(bytes == std::floor(bytes), "memory size '", original, "' is ", bytes,
             " bytes; expected a whole number of bytes");
  return static_cast<size_t>(bytes);
}

std::string format_bytes(size_t bytes) {
  char text[32];
  if (bytes < 1024) {
    std::snprintf(text, sizeof text, "%zu B", bytes);
  } else if (bytes < 1024 * 1024) {
    std::snprintf(text, sizeof text, "%.1f KB", static_cast<double>(bytes) / 1024.0);
  } else {
    std::snprintf(text, sizeof text, "%.2f MB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  }
  return text;
}

}  // namespace tern
