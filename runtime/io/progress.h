// ProgressBar: one line per epoch that redraws itself in place on a terminal (rate, loss, ETA),
// and stays quiet on a pipe or file, where the caller prints plain lines instead.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace tern {

class ProgressBar {
 public:
  // total: units of work (samples). Draws only when enabled and `out` is a terminal.
  ProgressBar(std::string label, int64_t total, FILE* out = stdout, bool enabled = true);
  static bool is_terminal(FILE* f);
  bool active() const { return active_; }

  // Redraws at most ~10 times a second; `extra` is appended (e.g. "loss 0.4312").
  void update(int64_t done, const std::string& extra = "");
  // Replaces the bar with "label  summary" and a newline (terminal only).
  void finish(const std::string& summary = "");

 private:
  void draw(int64_t done, const std::string& extra);
  std::string label_;
  int64_t total_;
  FILE* out_;
  bool active_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1m05s", "12.3s"
std::string format_duration(double seconds);

}  // namespace tern
