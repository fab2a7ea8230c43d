// tern::Error is what every library function throws when it cannot do what was asked.
// Messages say what failed and what was expected, so a user can act on them without a debugger.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tern {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

}  // namespace tern

// TERN_CHECK(cond, parts...) throws tern::Error built from the streamed parts when cond is false.
#define TERN_CHECK(cond, ...)                                     \
  do {                                                            \
    if (!(cond)) throw ::tern::Error(::tern::detail::concat(__VA_ARGS__)); \
  } while (0)
