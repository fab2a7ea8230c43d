// How ternrun pins its ranks to CPUs (--bind-to): each rank gets its own contiguous share of the cores
// ternrun may run on, as mpirun binds ranks to cores, so two busy ranks never end up on one core.
#pragma once

#include <string>
#include <vector>

namespace tern::launch {

// A CPU this process may run on, and the physical core it belongs to (hyperthreads share one).
struct Cpu {
  int id = 0;
  int core = 0;  // cores are numbered in order of their lowest CPU
};

// The CPUs in this process's affinity mask (taskset, cgroups), each with its core as sysfs gives it
// (thread_siblings_list); a CPU whose topology cannot be read is a core of its own.
std::vector<Cpu> allowed_cpus();

// Splits cpus among n ranks into contiguous, disjoint, non-empty sets as even as they can be: whole
// cores when there are at least n of them, else single CPUs. Empty when there are fewer CPUs than ranks
// (the ranks then share them all, unbound). cpus must be ordered by id with cores numbered as
// allowed_cpus numbers them.
std::vector<std::vector<int>> cpu_sets_for_ranks(const std::vector<Cpu>& cpus, int n);

// "0-3,8,10-11" (the kernel's cpulist format); "" for none.
std::string cpu_list(const std::vector<int>& ids);

// --bind-to: auto (ternrun's default) binds when every rank can have a CPU of its own and leaves the
// ranks unbound otherwise (what mpirun does when oversubscribed); cores requires it; none never binds.
enum class BindPolicy { kAuto, kCores, kNone };
// Throws tern::UsageError for anything but "auto", "cores" or "none".
BindPolicy parse_bind_policy(const std::string& name);

}  // namespace tern::launch
