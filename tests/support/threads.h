// run_on_threads: runs body(rank) for ranks 0..n-1 on n threads, joins them all, then rethrows
// the first rank's exception (by rank order), for tests that build a world rank by rank.
#pragma once

#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace tern::testing {

inline void run_on_threads(int n, const std::function<void(int)>& body) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace tern::testing
