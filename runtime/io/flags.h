// Flags: the command-line parser every Tern program uses, so `--help`, defaults and usage errors
// read the same everywhere. Flags are declared with a default and a help line, then parsed.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace tern {

// A bad command line: programs print the message and the usage line, and exit with code 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

class Flags {
 public:
  // `synopsis` follows the program's name on the usage line ("-n N [flags] PROGRAM [ARGS...]").
  Flags(std::string program, std::string summary, std::string synopsis = "[flags]");

  // Declare before parse(). Names are given without dashes ("batch-size").
  void add_string(const std::string& name, const std::string& def, const std::string& help);
  void add_int(const std::string& name, int64_t def, const std::string& help);
  void add_float(const std::string& name, double def, const std::string& help);
  void add_bool(const std::string& name, bool def, const std::string& help);

  // Accepts --name value, --name=value, and for bools --name / --no-name / --name=true|false.
  // Returns false when --help was given (the caller prints usage() and exits 0).
  // Throws UsageError for unknown flags, missing or malformed values, and stray arguments.
  bool parse(int argc, const char* const* argv);

  std::string get_string(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  double get_float(const std::string& name) const;
  bool get_bool(const std::string& name) const;
  // True when the user gave the flag (not just its default).
  bool was_set(const std::string& name) const;

  // The whole help: usage line, summary, every flag with its default.
  std::string usage() const;
  // What a usage error prints after its message: the usage line and where the flags are listed,
  // so the message is not lost above a screen of help.
  std::string short_usage() const;
  const std::string& program() const { return program_; }
  // "name=value ..." for every flag, for logs and checkpoint config echoes.
  std::string echo() const;

 private:
  enum class Kind { string, integer, real, boolean };
  struct Flag {
    Kind kind;
    std::string value;
    std::string def;
    std::string help;
    bool set = false;
  };
  const Flag& find(const std::string& name, Kind kind) const;
  void assign(const std::string& name, Flag& f, const std::string& value);

  std::string program_, summary_, synopsis_;
  std::vector<std::string> order_;
  std::map<std::string, Flag> flags_;
};

// The main() of a Tern program: parses the command line into flags, then runs body and returns
// its exit code. --help prints the usage (0); a UsageError, from parsing or from body, prints
// "PROGRAM: message" and the short usage (2); any other exception prints "PROGRAM: error: message"
// (1).
int run_program(Flags& flags, int argc, const char* const* argv, const std::function<int()>& body);

}  // namespace tern
