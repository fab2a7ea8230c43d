// Store: a small key-value store every rank can reach, for rendezvous (who listens where) before
// any connection exists. ternrun serves one over TCP; tests use an in-memory one.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace tern {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::string& value) = 0;
  // Waits until key exists, then returns its value; CommError naming the key on timeout.
  virtual std::string get(const std::string& key, std::chrono::milliseconds timeout) = 0;
  // Atomically adds delta to the integer at key (absent = 0) and returns the new value.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
};

}  // namespace tern
