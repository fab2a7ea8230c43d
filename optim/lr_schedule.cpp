#include "optim/lr_schedule.h"

#include <charconv>
#include <cmath>
#include <map>
#include <numbers>
#include <sstream>
#include <vector>

#include "runtime/error.h"

namespace tern {

namespace {

void check_step(int64_t step) { TERN_CHECK(step >= 0, "lr schedule: step must be >= 0, got ", step); }

void check_lr(float lr, const char* what) {
  TERN_CHECK(std::isfinite(lr) && lr >= 0, "lr schedule: ", what, " must be finite and >= 0, got ", lr);
}

}  // namespace

ConstantLr::ConstantLr(float lr) : lr_(lr) { check_lr(lr, "learning rate"); }

float ConstantLr::lr_at(int64_t step) const {
  check_step(step);
  return lr_;
}

std::string ConstantLr::describe() const { return detail::concat("constant(", lr_, ")"); }

StepDecayLr::StepDecayLr(float base_lr, int64_t step_size, float gamma)
    : base_lr_(base_lr), step_size_(step_size), gamma_(gamma) {
  check_lr(base_lr, "base learning rate");
  TERN_CHECK(step_size > 0, "lr schedule step: size must be > 0, got ", step_size);
  TERN_CHECK(std::isfinite(gamma) && gamma > 0, "lr schedule step: gamma must be > 0, got ", gamma);
}

float StepDecayLr::lr_at(int64_t step) const {
  check_step(step);
  const double k = static_cast<double>(step / step_size_);
  return static_cast<float>(base_lr_ * std::pow(static_cast<double>(gamma_), k));
}

std::string StepDecayLr::describe() const {
  return detail::concat("step(", base_lr_, " x ", gamma_, " every ", step_size_, " steps)");
}

CosineLr::CosineLr(float base_lr, float min_lr, int64_t total_steps)
    : base_lr_(base_lr), min_lr_(min_lr), total_steps_(total_steps) {
  check_lr(base_lr, "base learning rate");
  check_lr(min_lr, "min_lr");
  TERN_CHECK(total_steps > 0, "lr schedule cosine: total steps must be > 0, got ", total_steps);
}

float CosineLr::lr_at(int64_t step) const {
  check_step(step);
  if (step >= total_steps_) return min_lr_;
  const double progress = static_cast<double>(step) / static_cast<double>(total_steps_);
  const double lo = min_lr_, hi = base_lr_;
  return static_cast<float>(lo + (hi - lo) * 0.5 * (1 + std::cos(std::numbers::pi * progress)));
}

std::string CosineLr::describe() const {
  return detail::concat("cosine(", base_lr_, " -> ", min_lr_, " over ", total_steps_, " steps)");
}

WarmupLr::WarmupLr(std::unique_ptr<LrSchedule> then, int64_t warmup_steps, float start_factor)
    : then_(std::move(then)), warmup_steps_(warmup_steps), start_factor_(start_factor) {
  TERN_CHECK(then_ != nullptr, "lr schedule warmup: needs a schedule to warm up into");
  TERN_CHECK(warmup_steps >= 0, "lr schedule: warmup must be >= 0, got ", warmup_steps);
  TERN_CHECK(std::isfinite(start_factor) && start_factor >= 0 && start_factor <= 1,
             "lr schedule: start_factor must be in [0, 1], got ", start_factor);
  target_ = then_->lr_at(0);
}

float WarmupLr::lr_at(int64_t step) const {
  check_step(step);
  if (step >= warmup_steps_) return then_->lr_at(step - warmup_steps_);
  const double f =
      start_factor_ + (1.0 - start_factor_) * static_cast<double>(step) / static_cast<double>(warmup_steps_);
  return static_cast<float>(target_ * f);
}

std::string WarmupLr::describe() const {
  return detail::concat("warmup(", warmup_steps_, ", from ", start_factor_, ") then ", then_->describe());
}

namespace {

constexpr const char* kAccepted =
    "accepted: 'constant', 'step:size=N[,gamma=G]', 'cosine[:min_lr=X]'; any of them may add "
    "'warmup=N[,start_factor=F]' (e.g. 'cosine:warmup=500,min_lr=1e-4')";

[[noreturn]] void bad_spec(const std::string& spec, const std::string& why) {
  throw Error("bad lr schedule '" + spec + "': " + why + "; " + kAccepted);
}

double parse_number(const std::string& spec, const std::string& key, const std::string& text) {
  double value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(value))
    bad_spec(spec, key + "='" + text + "' is not a number");
  return value;
}

int64_t parse_count(const std::string& spec, const std::string& key, const std::string& text) {
  const double value = parse_number(spec, key, text);
  // 2^53: every integer below is exact in a double.
  if (value < 0 || value != std::floor(value) || value > 9007199254740992.0)
    bad_spec(spec, key + "='" + text + "' must be a whole number >= 0");
  return static_cast<int64_t>(value);
}

}  // namespace

std::unique_ptr<LrSchedule> make_lr_schedule(const std::string& spec, float base_lr, int64_t total_steps) {
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  std::map<std::string, std::string> options;
  if (colon != std::string::npos) {
    std::stringstream items(spec.substr(colon + 1));
    std::string item;
    while (std::getline(items, item, ',')) {
      const size_t eq = item.find('=');
      if (eq == std::string::npos || eq == 0) bad_spec(spec, "'" + item + "' is not key=value");
      const std::string key = item.substr(0, eq);
      if (!options.emplace(key, item.substr(eq + 1)).second) bad_spec(spec, "'" + key + "' is given twice");
    }
    if (options.empty() || spec.back() == ',') bad_spec(spec, "empty option list");
  }

  std::vector<std::string> allowed = {"warmup", "start_factor"};
  if (kind == "step") allowed.insert(allowed.end(), {"size", "gamma"});
  if (kind == "cosine") allowed.push_back("min_lr");
  if (kind != "constant" && kind != "step" && kind != "cosine") bad_spec(spec, "unknown kind '" + kind + "'");
  for (const auto& [key, value] : options) {
    bool known = false;
    for (const std::string& a : allowed) known |= key == a;
    if (!known) bad_spec(spec, "'" + kind + "' has no option '" + key + "'");
  }
  auto number = [&](const std::string& key, double fallback) {
    const auto it = options.find(key);
    return it == options.end() ? fallback : parse_number(spec, key, it->second);
  };
  auto count = [&](const std::string& key) {
    const auto it = options.find(key);
    return it == options.end() ? int64_t{0} : parse_count(spec, key, it->second);
  };

  const int64_t warmup = count("warmup");
  const double start_factor = number("start_factor", 0.0);
  if (start_factor < 0 || start_factor > 1) bad_spec(spec, "start_factor must be in [0, 1]");
  if (options.count("start_factor") && warmup == 0) bad_spec(spec, "start_factor needs warmup=N with N > 0");

  std::unique_ptr<LrSchedule> schedule;
  if (kind == "constant") {
    schedule = std::make_unique<ConstantLr>(base_lr);
  } else if (kind == "step") {
    if (!options.count("size")) bad_spec(spec, "'step' needs size=N");
    const int64_t size = count("size");
    const double gamma = number("gamma", 0.1);
    if (size <= 0) bad_spec(spec, "size must be > 0");
    if (gamma <= 0) bad_spec(spec, "gamma must be > 0");
    schedule = std::make_unique<StepDecayLr>(base_lr, size, static_cast<float>(gamma));
  } else {  // cosine
    const double min_lr = number("min_lr", 0.0);
    if (min_lr < 0) bad_spec(spec, "min_lr must be >= 0");
    if (total_steps - warmup <= 0)
      bad_spec(spec, detail::concat("cosine needs more total steps (", total_steps, ") than warm-up steps (",
                                    warmup, ")"));
    schedule = std::make_unique<CosineLr>(base_lr, static_cast<float>(min_lr), total_steps - warmup);
  }
  if (warmup > 0)
    schedule = std::make_unique<WarmupLr>(std::move(schedule), warmup, static_cast<float>(start_factor));
  return schedule;
}

}  // namespace tern
