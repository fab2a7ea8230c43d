#!/usr/bin/env python3
"""Data-parallel training throughput of the CNN: Tern (tcp under ternrun, mpi under mpirun) vs
PyTorch DDP (gloo), 1, 2 and 4 ranks, per-rank batch 64, one compute thread per rank, measured in
one run. Prints samples/s, scaling efficiency (samples/s at N ranks / (N x at 1 rank)), the share
of Tern's gradient communication hidden behind backward, and Tern / PyTorch.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]


def tern(cmd, metrics, timeout):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if p.returncode != 0:
        return None, p.stdout.strip().splitlines()[-1:] if p.stdout else "failed"
    with open(metrics) as f:
        final = [json.loads(l) for l in f if '"final"' in l][-1]
    return final, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--samples", type=int, default=16384, help="training samples (one epoch)")
    ap.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args()
    train = os.path.join(a.build, "examples", "tern-train")
    ternrun = os.path.join(a.build, "launch", "ternrun")
    peer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_peer.py")
    tmp = tempfile.mkdtemp(prefix="tern_dp_")
    common = ["--model", "cnn", "--epochs", "1", "--limit-train", str(a.samples), "--batch-size", "64",
              "--eval-batch-size", "1000", "--threads", "1"]
    rows = {}
    for n in [int(x) for x in a.ranks.split(",")]:
        row = {}
        m = os.path.join(tmp, f"tcp{n}.jsonl")
        row["tcp"], _ = tern([ternrun, "-n", str(n), train] + common + ["--metrics", m], m, a.timeout)
        if shutil.which("mpirun"):
            m = os.path.join(tmp, f"mpi{n}.jsonl")
            row["mpi"], _ = tern(MPIRUN + ["-np", str(n), train, "--comm", "mpi"] + common + ["--metrics", m], m,
                                 a.timeout)
        steps = a.samples // (64 * n)
        p = subprocess.run(["/usr/bin/python3", peer, "--ranks", str(n), "--samples", str(a.samples),
                            "--steps", str(max(steps - 5, 5)), "--port", str(29500 + os.getpid() % 400 + n)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=a.timeout)
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        row["torch"] = json.loads(lines[-1]) if p.returncode == 0 and lines else None
        rows[n] = row
    base = rows.get(1, {})
    print(f"CNN, per-rank batch 64, 1 thread per rank, {a.samples} samples; samples/s (scaling efficiency)")
    print(f"{'ranks':>5} {'tern tcp':>18} {'tern mpi':>18} {'torch DDP gloo':>18} {'tcp/torch':>10} {'mpi/torch':>10}"
          f" {'hidden (tcp)':>13}")
    for n, row in rows.items():
        def cell(k):
            r = row.get(k)
            if not r:
                return f"{'n/a':>18}", None
            sps = r["samples_per_s"]
            b = base.get(k)
            eff = sps / (n * b["samples_per_s"]) if b else float("nan")
            return f"{sps:>9.0f} ({eff:>5.0%})", sps
        tcp, tcp_s = cell("tcp")
        mpi, mpi_s = cell("mpi")
        torch, torch_s = cell("torch")
        ratio = lambda x: f"{x / torch_s:>9.2f}x" if x and torch_s else f"{'n/a':>10}"
        hidden = row["tcp"].get("comm_hidden_fraction") if row.get("tcp") else None
        print(f"{n:>5} {tcp} {mpi} {torch} {ratio(tcp_s)} {ratio(mpi_s)} {(f'{hidden:.0%}' if hidden is not None else '-'):>13}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
