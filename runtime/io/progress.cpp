#include "runtime/io/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <cmath>

namespace tern {

bool ProgressBar::is_terminal(FILE* f) {
  // ternrun pipes the ranks' output to add prefixes, and says so when it runs on a terminal.
  if (const char* tty = std::getenv("TERN_PROGRESS_TTY"); tty != nullptr && std::string(tty) == "1") return true;
  // mpirun hands its ranks a pseudo-terminal even when its own output goes to a file, so under
  // mpirun a terminal says nothing about where the lines end up: print plain lines there.
  if (std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr) return false;
  return isatty(fileno(f)) == 1;
}

ProgressBar::ProgressBar(std::string label, int64_t total, FILE* out, bool enabled)
    : label_(std::move(label)), total_(std::max<int64_t>(total, 1)), out_(out), active_(enabled && is_terminal(out)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

std::string format_duration(double seconds) {
  char buf[32];
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  } else {
    const int s = static_cast<int>(seconds);
    std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  }
  return buf;
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  if (!active_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100) && done < total_) return;
  last_draw_ = now;
  draw(done, extra);
}

void ProgressBar::finish(const std::string& summary) {
  if (!active_) return;
  // The bar's last state gives way to the caller's summary (which carries its own rates).
  std::fprintf(out_, "\r\033[K%s  %s\n", label_.c_str(), summary.c_str());
  std::fflush(out_);
}

void ProgressBar::draw(int64_t done, const std::string& extra) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total_), 0.0, 1.0);
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : NAN;
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(frac * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(out_, "\r\033[K%s [%s] %3d%% %7.0f samples/s  %s  ETA %s", label_.c_str(), bar.c_str(),
               static_cast<int>(frac * 100), rate, extra.c_str(),
               done >= total_ ? format_duration(elapsed).c_str() : format_duration(eta).c_str());
  std::fflush(out_);
}

}  // namespace tern
