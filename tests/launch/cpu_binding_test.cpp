#include "launch/cpu_binding.h"

#include <gtest/gtest.h>

#include <set>

#include "runtime/io/flags.h"

namespace tern::launch {
namespace {

// n CPUs, threads_per_core hyperthreads each, numbered as Linux numbers them on x86: the first thread of
// every core, then the second of every core (cpu i and cpu i + cores are siblings).
std::vector<Cpu> smt_machine(int cores, int threads_per_core) {
  std::vector<Cpu> cpus;
  for (int t = 0; t < threads_per_core; ++t)
    for (int c = 0; c < cores; ++c) cpus.push_back({t * cores + c, c});
  return cpus;
}

void expect_disjoint_cover(const std::vector<std::vector<int>>& sets, const std::vector<Cpu>& cpus) {
  std::set<int> seen;
  for (const auto& s : sets) {
    EXPECT_FALSE(s.empty());
    for (int id : s) EXPECT_TRUE(seen.insert(id).second) << "cpu " << id << " given twice";
  }
  EXPECT_EQ(seen.size(), cpus.size()) << "every CPU goes to some rank";
}

TEST(CpuBinding, OneCorePerRankWhenCoresEqualRanks) {
  const auto cpus = smt_machine(2, 1);
  EXPECT_EQ(cpu_sets_for_ranks(cpus, 2), (std::vector<std::vector<int>>{{0}, {1}}));
  EXPECT_EQ(cpu_sets_for_ranks(cpus, 1), (std::vector<std::vector<int>>{{0, 1}}));
}

TEST(CpuBinding, HyperthreadsOfACoreStayWithOneRank) {
  // 8 cores x 2 threads, 2 ranks: cores 0-3 with their siblings 8-11, not CPUs 0-7 (which would put both
  // ranks on every core).
  const auto cpus = smt_machine(8, 2);
  const auto sets = cpu_sets_for_ranks(cpus, 2);
  EXPECT_EQ(sets, (std::vector<std::vector<int>>{{0, 1, 2, 3, 8, 9, 10, 11}, {4, 5, 6, 7, 12, 13, 14, 15}}));
  expect_disjoint_cover(sets, cpus);
}

TEST(CpuBinding, UnevenSplitsDifferByOneCore) {
  const auto cpus = smt_machine(7, 1);
  const auto sets = cpu_sets_for_ranks(cpus, 3);
  ASSERT_EQ(sets.size(), 3u);
  size_t lo = 99, hi = 0;
  for (const auto& s : sets) lo = std::min(lo, s.size()), hi = std::max(hi, s.size());
  EXPECT_LE(hi - lo, 1u);
  expect_disjoint_cover(sets, cpus);
}

TEST(CpuBinding, MoreRanksThanCoresSplitsHyperthreads) {
  // 2 cores x 2 threads, 3 ranks: single CPUs, a core's two threads adjacent.
  const auto cpus = smt_machine(2, 2);  // ids 0,1 (first threads), 2,3 (siblings of 0,1)
  const auto sets = cpu_sets_for_ranks(cpus, 3);
  ASSERT_EQ(sets.size(), 3u);
  expect_disjoint_cover(sets, cpus);
  // 4 ranks: one CPU each.
  const auto four = cpu_sets_for_ranks(cpus, 4);
  ASSERT_EQ(four.size(), 4u);
  for (const auto& s : four) EXPECT_EQ(s.size(), 1u);
  expect_disjoint_cover(four, cpus);
  // Two ranks on those 4 CPUs get a core each.
  EXPECT_EQ(cpu_sets_for_ranks(cpus, 2), (std::vector<std::vector<int>>{{0, 2}, {1, 3}}));
}

TEST(CpuBinding, FewerCpusThanRanksLeavesThemUnbound) {
  EXPECT_TRUE(cpu_sets_for_ranks(smt_machine(2, 1), 4).empty());
  EXPECT_TRUE(cpu_sets_for_ranks({}, 1).empty());
  EXPECT_TRUE(cpu_sets_for_ranks(smt_machine(2, 1), 0).empty());
}

TEST(CpuBinding, SparseAffinityMasks) {
  // A taskset of CPUs 3, 5, 6 and 9 on a machine without SMT: four cores numbered in order.
  const std::vector<Cpu> cpus = {{3, 0}, {5, 1}, {6, 2}, {9, 3}};
  EXPECT_EQ(cpu_sets_for_ranks(cpus, 2), (std::vector<std::vector<int>>{{3, 5}, {6, 9}}));
}

TEST(CpuBinding, AllowedCpusAreThisProcessesAndNumberCoresInOrder) {
  const auto cpus = allowed_cpus();
  ASSERT_FALSE(cpus.empty());
  int next_core = 0;
  for (size_t i = 0; i < cpus.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(cpus[i - 1].id, cpus[i].id);
    }
    EXPECT_LE(cpus[i].core, next_core) << "a new core takes the next number";
    if (cpus[i].core == next_core) ++next_core;
  }
}

TEST(CpuBinding, CpuListFormat) {
  EXPECT_EQ(cpu_list({}), "");
  EXPECT_EQ(cpu_list({4}), "4");
  EXPECT_EQ(cpu_list({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(cpu_list({3, 1, 2, 2}), "1-3");
}

TEST(CpuBinding, BindPolicyNames) {
  EXPECT_EQ(parse_bind_policy("auto"), BindPolicy::kAuto);
  EXPECT_EQ(parse_bind_policy("cores"), BindPolicy::kCores);
  EXPECT_EQ(parse_bind_policy("none"), BindPolicy::kNone);
  EXPECT_THROW(parse_bind_policy("core"), UsageError);
}

}  // namespace
}  // namespace tern::launch
