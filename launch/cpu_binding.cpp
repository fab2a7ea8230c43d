#include "launch/cpu_binding.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "runtime/io/flags.h"

namespace tern::launch {

std::vector<Cpu> allowed_cpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (::sched_getaffinity(0, sizeof mask, &mask) != 0) return {};
  std::vector<Cpu> cpus;
  std::map<std::string, int> core_of_siblings;  // thread_siblings_list -> core number
  for (int id = 0; id < CPU_SETSIZE; ++id) {
    if (!CPU_ISSET(id, &mask)) continue;
    std::ifstream in("/sys/devices/system/cpu/cpu" + std::to_string(id) + "/topology/thread_siblings_list");
    std::string siblings;
    if (!(in >> siblings)) siblings = "cpu" + std::to_string(id);  // unknown: a core of its own
    const auto [it, added] = core_of_siblings.emplace(siblings, static_cast<int>(core_of_siblings.size()));
    cpus.push_back({id, it->second});
  }
  return cpus;
}

std::vector<std::vector<int>> cpu_sets_for_ranks(const std::vector<Cpu>& cpus, int n) {
  if (n < 1 || cpus.size() < static_cast<size_t>(n)) return {};
  // The units handed out: whole cores (their CPUs in id order) when there are enough, else CPUs, a
  // core's CPUs next to each other so that a rank with two of them gets one core rather than halves
  // of two.
  std::vector<std::vector<int>> cores;
  for (const Cpu& c : cpus) {
    if (static_cast<size_t>(c.core) >= cores.size()) cores.resize(static_cast<size_t>(c.core) + 1);
    cores[static_cast<size_t>(c.core)].push_back(c.id);
  }
  std::erase_if(cores, [](const std::vector<int>& c) { return c.empty(); });
  std::vector<std::vector<int>> units;
  if (cores.size() >= static_cast<size_t>(n)) {
    units = cores;
  } else {
    for (const auto& core : cores)
      for (int id : core) units.push_back({id});
  }
  std::vector<std::vector<int>> sets(static_cast<size_t>(n));
  const size_t u = units.size();
  for (size_t r = 0; r < sets.size(); ++r) {
    for (size_t i = r * u / sets.size(); i < (r + 1) * u / sets.size(); ++i)
      sets[r].insert(sets[r].end(), units[i].begin(), units[i].end());
    std::sort(sets[r].begin(), sets[r].end());
  }
  return sets;
}

std::string cpu_list(const std::vector<int>& ids) {
  std::vector<int> s = ids;
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t j = i;
    while (j + 1 < s.size() && s[j + 1] == s[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(s[i]);
    if (j > i) out += '-' + std::to_string(s[j]);
    i = j + 1;
  }
  return out;
}

BindPolicy parse_bind_policy(const std::string& name) {
  if (name == "auto") return BindPolicy::kAuto;
  if (name == "cores") return BindPolicy::kCores;
  if (name == "none") return BindPolicy::kNone;
  throw UsageError("--bind-to must be auto, cores or none, got '" + name + "'");
}

}  // namespace tern::launch
