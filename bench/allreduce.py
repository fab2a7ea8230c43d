#!/usr/bin/env python3
"""Runs bench/allreduce (tern_allreduce_bench) on every backend and prints them side by side.

For each op (allreduce, allgather) and world size (2, 4): Tern's local backend (threads), Tern's
tcp backend under ternrun -- as it runs on one host (its shared-memory path, "tcp") and kept on TCP
sockets with TERN_SHM=0 ("tcp-sock") -- and Open MPI twice under mpirun, as it runs by default on
one host (shared memory) and forced onto TCP (--mca btl tcp,self); busbw per size and the ratios
sock/mpi-tcp (TCP against TCP), tcp/mpi-tcp and tcp/mpi-def (shared memory against Open MPI's
default). All in one run, so the ratios compare like with like on a noisy machine; with --repeat N
(default 3) every backend runs N times, the rounds interleaved (round 1 of every backend, then
round 2, ...), and each busbw cell is the median time of its N runs, so one disturbed run moves no
cell. Within a round the pairs that are compared run back to back (tcp next to mpi-default,
tcp-sock next to mpi-tcp), which goes first alternating from round to round, and a ratio is the
median over the rounds of that round's ratio: a slow stretch of the machine, which lasts longer
than a pair of runs, then slows both sides of a ratio instead of whichever backend it fell on.
With 6 rounds or more, each ratio's median also gets a 95 % interval, from the order statistics
of the rounds' ratios (no assumption on their distribution): a cell whose interval lies wholly
above a goal meets it with that confidence, and one whose interval straddles 1.0 is a tie.
The "spread" column is the largest max/min time ratio of a cell's runs in that row. Both launchers
bind as they do by default: mpirun each rank to its own core when every rank has one (2 ranks here)
and none when the ranks outnumber the cores (4 ranks on 2 cores); ternrun alike (--bind-to auto).
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

# Open MPI's default binding (to cores up to one rank per core, else none), against ternrun's default.
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def run(cmd, json_path, timeout, extra_env=None):
    # Open MPI as it runs by default: on one host its shared memory copies large messages once,
    # straight from the sender's memory (CMA, process_vm_readv), where the host allows it.
    env = dict(os.environ, **(extra_env or {}))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        return None, f"exit {proc.returncode}: {tail}"
    with open(json_path) as f:
        return [json.loads(line) for line in f if line.strip()], None


def round_ratios(runs_of, a_, b_, size):
    """Each round's b_ time / a_ time (a_'s busbw over b_'s), for the rounds that have both."""
    times = {label: {r["run"]: r["time_us"] for r in runs_of.get(label, {}).get(size, [])} for label in (a_, b_)}
    return [times[b_][rn] / times[a_][rn] for rn in times[a_] if rn in times[b_] and times[a_][rn] > 0]


def paired_ratio(runs_of, a_, b_, size):
    """Median over the rounds of b_'s time / a_'s time in that round."""
    each = round_ratios(runs_of, a_, b_, size)
    return statistics.median(each) if each else None


def median_interval(values, confidence=0.95):
    """A distribution-free interval for the median: the j-th smallest and j-th largest value, j the
    largest with P(Binomial(n, 1/2) <= j - 1) <= (1 - confidence) / 2 (so it covers the median with
    at least that probability whatever the distribution). None with too few values (n < 6 at 95 %)."""
    n = len(values)
    tail, j = 0.0, 0
    while True:
        tail += math.comb(n, j) / 2 ** n  # P(B <= j)
        if tail > (1 - confidence) / 2:
            break
        j += 1
    if j == 0:
        return None
    ordered = sorted(values)
    return ordered[j - 1], ordered[n - j]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build", help="build directory")
    p.add_argument("--ranks", default="2,4")
    p.add_argument("--ops", default="allreduce,allgather")
    p.add_argument("--min", default="4K")
    p.add_argument("--max", default="64M")
    # Timed operations per run at 1 MB, fewer above (iters * 1 MB / size, at least 5): at 400 a
    # 16 MB cell rests on 25 operations; at 100 it rested on 5-6 and moved 10-20 % between runs.
    p.add_argument("--iters", default="400", help="timed operations per run at 1 MB (fewer above, at least 5)")
    p.add_argument("--json", help="write every row of every backend here (JSON lines)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--repeat", type=int, default=3, help="runs per backend, interleaved; cells are medians")
    a = p.parse_args()

    bench = os.path.join(a.build, "bench", "tern_allreduce_bench")
    ternrun = os.path.join(a.build, "launch", "ternrun")
    for f in (bench, ternrun):
        if not os.path.exists(f):
            sys.exit(f"allreduce.py: {f} not found; build first (make build)")
    have_mpi = shutil.which("mpirun") is not None
    tmp = tempfile.mkdtemp(prefix="tern_allreduce_")
    all_rows = []
    for op in a.ops.split(","):
        for n in [int(x) for x in a.ranks.split(",")]:
            common = ["--op", op, "--min", a.min, "--max", a.max, "--iters", a.iters]
            # tcp: the backend as it runs on one host (its shared-memory path); tcp-sock: the same
            # backend kept on TCP sockets (TERN_SHM=0), the like-for-like peer of Open MPI over TCP.
            runs = [("local", [bench, "--comm", "local", "--ranks", str(n)]),
                    ("tcp", [ternrun, "-n", str(n), bench, "--comm", "tcp"]),
                    ("tcp-sock", [ternrun, "-n", str(n), bench, "--comm", "tcp"])]
            if have_mpi:
                # Open MPI itself (blocking MPI_Allreduce/MPI_Allgather), by default and over TCP.
                runs += [("mpi-default", MPIRUN + ["-np", str(n), bench, "--comm", "openmpi"]),
                         ("mpi-tcp", MPIRUN + ["--mca", "btl", "tcp,self", "-np", str(n), bench, "--comm", "openmpi"])]
            # The compared pairs back to back, which of a pair goes first alternating by round.
            commands = dict(runs)
            pairs = [["tcp", "mpi-default"], ["tcp-sock", "mpi-tcp"], ["local"]]
            runs_of = {}  # label -> size -> the rows of its repeats
            for rnd in range(max(1, a.repeat)):
                for label in [label for pair in pairs for label in (pair if rnd % 2 == 0 else pair[::-1])]:
                    if label not in commands:
                        continue
                    cmd = commands[label]
                    path = os.path.join(tmp, f"{op}-{n}-{label}-{rnd}.jsonl")
                    rows, err = run(cmd + common + ["--label", label, "--json", path], path, a.timeout,
                                    {"TERN_SHM": "0"} if label == "tcp-sock" else None)
                    if err:
                        print(f"# {label} {op} n={n} run {rnd + 1} failed: {err}", file=sys.stderr)
                        continue
                    for r in rows:
                        runs_of.setdefault(label, {}).setdefault(r["bytes"], []).append(dict(r, run=rnd + 1))
                    all_rows += [dict(r, run=rnd + 1) for r in rows]
            results, spread = {}, {}
            for label, by_size in runs_of.items():
                results[label] = {}
                for size, rs in by_size.items():
                    times = [r["time_us"] for r in rs]
                    med = statistics.median(times)
                    # busbw scales inversely with time at a fixed size: the median run's figures
                    results[label][size] = dict(rs[0], time_us=med, busbw_gbs=rs[0]["busbw_gbs"] * rs[0]["time_us"] / med,
                                                wrong=sum(r["wrong"] for r in rs))
                    spread[size] = max(spread.get(size, 1.0), max(times) / max(min(times), 1e-9))
            labels = [l for l, _ in runs if l in results]
            print(f"\n{op}, {n} ranks: busbw GB/s (time us), median of {max(1, a.repeat)} interleaved runs; "
                  "ratios: median of the rounds' ratios; #wrong summed over backends and runs")
            head = f"{'size(B)':>10}" + "".join(f"{l + ' busbw':>18}" for l in labels)
            ratios = [(a_, b_) for a_, b_ in (("tcp-sock", "mpi-tcp"), ("tcp", "mpi-tcp"), ("tcp", "mpi-default"))
                      if a_ in results and b_ in results]
            short = {"tcp-sock": "sock", "tcp": "tcp", "mpi-tcp": "mpi-tcp", "mpi-default": "mpi-def"}
            for a_, b_ in ratios:
                head += f"{short[a_] + '/' + short[b_]:>13}"
            print(head + f"{'#wrong':>8}{'spread':>8}")
            sizes = sorted(set().union(*[set(results[l]) for l in labels])) if labels else []
            for size in sizes:
                line = f"{size:>10}"
                wrong = 0
                for l in labels:
                    r = results[l].get(size)
                    line += f"{r['busbw_gbs']:>9.3f} ({r['time_us']:>6.0f})" if r else f"{'-':>18}"
                    wrong += r["wrong"] if r else 0
                for a_, b_ in ratios:
                    ratio = paired_ratio(runs_of, a_, b_, size)
                    line += f"{ratio:>12.2f}x" if ratio is not None else f"{'-':>13}"
                print(line + f"{wrong:>8}{spread.get(size, 1.0):>7.1f}x")
            # How sure each ratio is: its median's 95 % interval over the rounds (6 rounds or more).
            if ratios and max(1, a.repeat) >= 6:
                print(f"{'':>10}95 % intervals of the ratios' medians (order statistics of the rounds' ratios):")
                for size in sizes:
                    cells = []
                    for a_, b_ in ratios:
                        ci = median_interval(round_ratios(runs_of, a_, b_, size))
                        cells.append(f"{short[a_] + '/' + short[b_]} {ci[0]:.2f}-{ci[1]:.2f}x" if ci else "-")
                    print(f"{size:>10}  " + "   ".join(cells))
    if a.json:
        with open(a.json, "w") as f:
            for r in all_rows:
                f.write(json.dumps(r) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
