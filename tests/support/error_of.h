// The message of an error a call throws, for tests that check what an error says.
#pragma once

#include <string>

#include "runtime/error.h"

namespace tern::testing {

// The message of the tern::Error that f throws ("" if it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace tern::testing
