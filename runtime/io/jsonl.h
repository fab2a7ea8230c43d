// JsonlWriter: appends one JSON object per line (metrics, events) to a file, flushed per line,
// so a crashed run keeps every line it finished. Values are numbers, strings or booleans.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace tern {

class JsonObject {
 public:
  JsonObject& add(const std::string& key, double v);
  JsonObject& add(const std::string& key, int64_t v);
  JsonObject& add(const std::string& key, int v) { return add(key, static_cast<int64_t>(v)); }
  JsonObject& add(const std::string& key, const std::string& v);
  JsonObject& add(const std::string& key, const char* v) { return add(key, std::string(v)); }
  JsonObject& add(const std::string& key, bool v);
  std::string str() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // key, encoded value
};

std::string json_escape(const std::string& s);

class JsonlWriter {
 public:
  JsonlWriter() = default;
  // Truncates an existing file; throws tern::Error if it cannot be opened.
  explicit JsonlWriter(const std::string& path) { open(path); }
  void open(const std::string& path);
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;
  bool is_open() const { return f_ != nullptr; }
  void write(const JsonObject& obj);  // no-op when not open

 private:
  FILE* f_ = nullptr;
  std::string path_;
};

}  // namespace tern
