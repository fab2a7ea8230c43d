#include "runtime/io/jsonl.h"

#include <cerrno>
#include <cmath>
#include <cstring>

#include "runtime/error.h"

namespace tern {

std::string json_escape(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

JsonObject& JsonObject::add(const std::string& key, double v) {
  char buf[32];
  if (std::isfinite(v)) {
    std::snprintf(buf, sizeof buf, "%.9g", v);
  } else {
    std::snprintf(buf, sizeof buf, "null");  // JSON has no NaN/inf
  }
  fields_.emplace_back(key, buf);
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, int64_t v) {
  fields_.emplace_back(key, std::to_string(v));
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, const std::string& v) {
  fields_.emplace_back(key, json_escape(v));
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, bool v) {
  fields_.emplace_back(key, v ? "true" : "false");
  return *this;
}

std::string JsonObject::str() const {
  std::string out = "{";
  for (size_t i = 0; i < fields_.size(); ++i)
    out += (i ? ", " : "") + json_escape(fields_[i].first) + ": " + fields_[i].second;
  return out + "}";
}

void JsonlWriter::open(const std::string& path) {
  if (f_) std::fclose(f_);
  path_ = path;
  f_ = std::fopen(path.c_str(), "w");
  TERN_CHECK(f_ != nullptr, "cannot open metrics file '", path, "': ", std::strerror(errno));
}

JsonlWriter::~JsonlWriter() {
  if (f_) std::fclose(f_);
}

void JsonlWriter::write(const JsonObject& obj) {
  if (!f_) return;
  const std::string line = obj.str() + "\n";
  const bool ok = std::fwrite(line.data(), 1, line.size(), f_) == line.size() && std::fflush(f_) == 0;
  TERN_CHECK(ok, "writing metrics file '", path_, "' failed: ", std::strerror(errno));
}

}  // namespace tern
