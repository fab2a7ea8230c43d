#!/usr/bin/env python3
"""Gradient compression on a slow link: the CNN on 2 ranks (ternrun, tcp backend without its
shared-memory path) inside a network namespace whose loopback is shaped with tc's token bucket
(--rate, e.g. 100mbit or 1gbit), and on the unshaped loopback for contrast. For each compressor
(dense, fp16, PowerSGD, DGC, and auto, which measures the link and picks per bucket): training
samples/s, seconds per step spent in gradient sync, and for auto its predicted sync time per step
(steady state) vs the one measured in the last epoch. Needs root (ip netns, tc); the namespace is removed afterwards.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

SPECS = ["none", "fp16", "powersgd:rank=2", "dgc:ratio=0.001,warmup_epochs=0", "auto"]


def sh(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run(a, ns, spec, tmp):
    metrics = os.path.join(tmp, "m.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    train = os.path.join(a.build, "examples", "tern-train")
    ternrun = os.path.join(a.build, "launch", "ternrun")
    cmd = ([] if ns is None else ["ip", "netns", "exec", ns]) + [
        "env", "TERN_SHM=0", "TERN_PROGRESS_TTY=0", ternrun, "-n", str(a.ranks), train, "--model", "cnn",
        "--epochs", str(a.epochs), "--limit-train", str(a.samples), "--eval-batch-size", "1000", "--compress", spec,
        "--metrics", metrics]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=a.timeout)
    if p.returncode != 0:
        sys.exit(f"run failed ({spec}):\n{p.stdout[-3000:]}")
    final = [json.loads(l) for l in open(metrics) if '"final"' in l][-1]
    chosen = sorted({l.split(": ", 2)[-1] for l in p.stdout.splitlines() if "compression: bucket" in l})
    steps = a.epochs * (a.samples // (64 * a.ranks))
    return final, steps, chosen


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rate", default="100mbit", help="tc tbf rate of the slow link")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--samples", type=int, default=4096, help="training samples per epoch")
    ap.add_argument("--epochs", type=int, default=2, help="epochs (auto's DGC warms up for one)")
    ap.add_argument("--timeout", type=float, default=1200)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("compress_link.py needs root (ip netns, tc)")
    ns = "tern_bench_slow"
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    sh(["ip", "netns", "add", ns])
    tmp = tempfile.mkdtemp(prefix="tern_link_")
    try:
        # Ethernet's MTU: loopback's 64 KB packets are larger than the token bucket's burst, and tbf
        # drops such packets every time (the connection then times out).
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "mtu", "1500", "up"])
        sh(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", a.rate, "burst",
            "64kb", "latency", "100ms"])
        for label, where in ((f"shaped loopback, {a.rate}", ns), ("unshaped loopback", None)):
            print(f"# cnn, {a.ranks} ranks (ternrun, tcp, TERN_SHM=0), {a.samples} samples, {label}")
            print(f"{'compressor':<36} {'samples/s':>10} {'sync s/step':>12} {'ratio':>7}  auto: predicted / measured, choice")
            for spec in SPECS:
                final, steps, chosen = run(a, where, spec, tmp)
                per_step = final.get("comm_seconds", 0) / max(1, steps)
                extra = ""
                if "auto_predicted_step_comm_seconds" in final:
                    extra = (f"  {1e3 * final['auto_predicted_step_comm_seconds']:.1f} ms / "
                             f"{1e3 * final['auto_measured_step_comm_seconds']:.1f} ms, " + "; ".join(chosen))
                print(f"{spec:<36} {final['samples_per_s']:>10.0f} {per_step:>12.4f} "
                      f"{final.get('compression_ratio', 1.0):>6.1f}x{extra}", flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
