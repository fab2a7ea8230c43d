#include "runtime/io/flags.h"

#include <charconv>
#include <cstdio>
#include <exception>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace tern {

namespace {
bool parse_int(const std::string& s, int64_t* out) {
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}
bool parse_real(const std::string& s, double* out) {
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(*out);
}
}  // namespace

Flags::Flags(std::string program, std::string summary, std::string synopsis)
    : program_(std::move(program)), summary_(std::move(summary)), synopsis_(std::move(synopsis)) {}

void Flags::add_string(const std::string& name, const std::string& def, const std::string& help) {
  order_.push_back(name);
  flags_[name] = Flag{Kind::string, def, def, help};
}

void Flags::add_int(const std::string& name, int64_t def, const std::string& help) {
  order_.push_back(name);
  flags_[name] = Flag{Kind::integer, std::to_string(def), std::to_string(def), help};
}

void Flags::add_float(const std::string& name, double def, const std::string& help) {
  std::ostringstream s;
  s << def;
  order_.push_back(name);
  flags_[name] = Flag{Kind::real, s.str(), s.str(), help};
}

void Flags::add_bool(const std::string& name, bool def, const std::string& help) {
  order_.push_back(name);
  flags_[name] = Flag{Kind::boolean, def ? "true" : "false", def ? "true" : "false", help};
}

void Flags::assign(const std::string& name, Flag& f, const std::string& value) {
  int64_t i;
  double d;
  switch (f.kind) {
    case Kind::integer:
      if (!parse_int(value, &i)) throw UsageError("--" + name + " expects an integer, got '" + value + "'");
      break;
    case Kind::real:
      if (!parse_real(value, &d)) throw UsageError("--" + name + " expects a number, got '" + value + "'");
      break;
    case Kind::boolean:
      if (value != "true" && value != "false" && value != "1" && value != "0")
        throw UsageError("--" + name + " expects true or false, got '" + value + "'");
      break;
    case Kind::string: break;
  }
  f.value = (f.kind == Kind::boolean) ? ((value == "true" || value == "1") ? "true" : "false") : value;
  f.set = true;
}

bool Flags::parse(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    if (arg.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end() && !has_value && name.rfind("no-", 0) == 0) {
      auto neg = flags_.find(name.substr(3));
      if (neg != flags_.end() && neg->second.kind == Kind::boolean) {
        assign(neg->first, neg->second, "false");
        continue;
      }
    }
    if (it == flags_.end()) throw UsageError("unknown flag --" + name);
    Flag& f = it->second;
    if (!has_value) {
      if (f.kind == Kind::boolean) {
        value = "true";
      } else {
        if (i + 1 >= argc) throw UsageError("--" + name + " needs a value");
        value = argv[++i];
      }
    }
    assign(name, f, value);
  }
  return true;
}

const Flags::Flag& Flags::find(const std::string& name, Kind kind) const {
  auto it = flags_.find(name);
  // Asking for an undeclared flag is a programming error in the caller, not a user error.
  TERN_CHECK(it != flags_.end(), "Flags: no flag --", name, " was declared");
  TERN_CHECK(it->second.kind == kind, "Flags: --", name, " read with the wrong type");
  return it->second;
}

std::string Flags::get_string(const std::string& name) const { return find(name, Kind::string).value; }

int64_t Flags::get_int(const std::string& name) const {
  int64_t v = 0;
  parse_int(find(name, Kind::integer).value, &v);
  return v;
}

double Flags::get_float(const std::string& name) const {
  double v = 0;
  parse_real(find(name, Kind::real).value, &v);
  return v;
}

bool Flags::get_bool(const std::string& name) const { return find(name, Kind::boolean).value == "true"; }

bool Flags::was_set(const std::string& name) const {
  auto it = flags_.find(name);
  return it != flags_.end() && it->second.set;
}

std::string Flags::usage() const {
  std::ostringstream out;
  out << "usage: " << program_ << " " << synopsis_ << "\n" << summary_ << "\n\nflags:\n";
  for (const auto& name : order_) {
    const Flag& f = flags_.at(name);
    std::string lhs = "  --" + name;
    if (f.kind != Kind::boolean) lhs += f.kind == Kind::string ? " STR" : f.kind == Kind::integer ? " N" : " X";
    out << std::left << std::setw(26) << lhs << ' ' << f.help;
    out << " (default: " << (f.def.empty() ? "none" : f.def) << ")\n";
  }
  out << "  --help                     print this and exit\n";
  return out.str();
}

std::string Flags::short_usage() const {
  return "usage: " + program_ + " " + synopsis_ + "\n" + program_ + " --help lists the flags.\n";
}

std::string Flags::echo() const {
  std::ostringstream out;
  for (size_t i = 0; i < order_.size(); ++i)
    out << (i ? " " : "") << order_[i] << "=" << flags_.at(order_[i]).value;
  return out.str();
}

int run_program(Flags& flags, int argc, const char* const* argv, const std::function<int()>& body) {
  try {
    if (!flags.parse(argc, argv)) {
      std::fputs(flags.usage().c_str(), stdout);
      return 0;
    }
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n%s", flags.program().c_str(), e.what(), flags.short_usage().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", flags.program().c_str(), e.what());
    return 1;
  }
}

}  // namespace tern
