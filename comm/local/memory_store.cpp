// make_memory_store: the Store of threads in one process.
#include <condition_variable>
#include <map>
#include <mutex>

#include "comm/communicator.h"
#include "comm/local/local.h"

namespace tern {
namespace {

class MemoryStore : public Store {
 public:
  void set(const std::string& key, const std::string& value) override {
    {
      std::lock_guard lock(mu_);
      values_[key] = value;
    }
    changed_.notify_all();
  }

  std::string get(const std::string& key, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    const bool found =
        changed_.wait_for(lock, std::min<std::chrono::milliseconds>(timeout, std::chrono::hours(24 * 365)),
                          [&] { return values_.contains(key); });
    if (!found) {
      throw CommError(detail::concat("store: get('", key, "') timed out after ", timeout.count(),
                                     " ms (no rank set the key)"));
    }
    return values_.at(key);
  }

  int64_t add(const std::string& key, int64_t delta) override {
    int64_t value = 0;
    {
      std::lock_guard lock(mu_);
      auto it = values_.find(key);
      if (it != values_.end()) value = parse(key, it->second);
      value += delta;
      values_[key] = std::to_string(value);
    }
    changed_.notify_all();
    return value;
  }

 private:
  static int64_t parse(const std::string& key, const std::string& text) {
    size_t used = 0;
    int64_t value = 0;
    try {
      value = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size()) {
      throw Error(detail::concat("store: add('", key, "') on a value that is not an integer: '", text, "'"));
    }
    return value;
  }

  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::string> values_;
};

}  // namespace

std::shared_ptr<Store> make_memory_store() { return std::make_shared<MemoryStore>(); }

}  // namespace tern
