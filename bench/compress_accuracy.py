#!/usr/bin/env python3
"""Accuracy and wire traffic of every gradient compressor: tern-train on Fashion-MNIST with N
data-parallel ranks, one run per compressor plus the uncompressed baseline, same seed, epochs and
hyperparameters (a different flag is shown in the table). Prints test accuracy, its difference to
the baseline, the compression ratio (dense bytes / bytes this rank sent) over the whole run and in
the last epoch (after DGC's warm-up), and seconds per epoch. --check P exits 1 when a compressor
ends more than P points below the baseline.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

# label, --compress spec, extra tern-train flags, whether --check applies (the others are
# settings shown for what they cost: they miss the bar, see README)
MLP_RUNS = [
    ("none", "none", [], True),
    ("fp16", "fp16", [], True),
    ("bf16", "bf16", [], True),
    ("topk 5%", "topk:ratio=0.05", [], True),
    ("topk 1%", "topk:ratio=0.01", [], False),
    ("randomk 25%", "randomk:ratio=0.25,unbiased=1", [], True),
    ("randomk 10% EF", "randomk:ratio=0.1", [], False),
    ("dgc 0.1%", "dgc:ratio=0.001,warmup_epochs=1", ["--lr", "0.1"], True),
    ("qsgd 16", "qsgd:levels=16", [], True),
    ("qsgd 16 two-phase", "qsgd:levels=16,twophase=1", [], True),
    ("terngrad", "terngrad", [], True),
    ("terngrad two-phase", "terngrad:twophase=1", [], False),
    ("signsgd", "signsgd", [], True),
    ("signsgd two-phase", "signsgd:twophase=1", [], False),
    ("onebit", "onebit", [], True),
    ("powersgd r2", "powersgd:rank=2", [], True),
]
CNN_RUNS = [
    ("none", "none", [], True),
    ("dgc 0.1%", "dgc:ratio=0.001", ["--lr", "0.1"], True),
    ("dgc 0.1% warm-up 1", "dgc:ratio=0.001,warmup_epochs=1", ["--lr", "0.1"], True),
    ("powersgd r2", "powersgd:rank=2", [], True),
]


def run(train, a, spec, extra, tmp):
    metrics = os.path.join(tmp, "m.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    cmd = [train, "--model", a.model, "--epochs", str(a.epochs), "--comm", a.comm, "--ranks", str(a.ranks),
           "--threads", str(a.threads), "--seed", str(a.seed), "--compress", spec, "--metrics", metrics] + extra
    if a.limit_train:
        cmd += ["--limit-train", str(a.limit_train)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=a.timeout,
                       env=dict(os.environ, TERN_PROGRESS_TTY="0"))
    if p.returncode != 0:
        sys.exit(f"tern-train failed for {spec}:\n{p.stdout[-2000:]}")
    with open(metrics) as f:
        lines = [json.loads(l) for l in f]
    epochs = [l for l in lines if l.get("event") == "epoch"]
    final = [l for l in lines if l.get("event") == "final"][-1]
    last = epochs[-1]
    return {
        "accuracy": final["test_accuracy"],
        "ratio": final.get("compression_ratio", 1.0),
        "ratio_last_epoch": last.get("compression_ratio", 1.0),
        "bytes_sent": final.get("bytes_sent", 0),
        "bytes_dense": final.get("bytes_dense", 0),
        "seconds_per_epoch": sum(e["seconds"] for e in epochs) / len(epochs),
        "compress_seconds": final.get("compress_seconds", 0.0),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", default="mlp", help="mlp (every compressor) or cnn (none, dgc, powersgd)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--comm", default="local")
    ap.add_argument("--threads", type=int, default=2, help="compute threads, shared by the ranks")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--limit-train", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated labels to run (default: all)")
    ap.add_argument("--checked-only", action="store_true", help="run only the settings --check applies to")
    ap.add_argument("--check", type=float, default=None, help="fail when a compressor is more than P points below none")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    train = os.path.join(a.build, "examples", "tern-train")
    runs = MLP_RUNS if a.model == "mlp" else CNN_RUNS
    if a.only:
        keep = set(a.only.split(","))
        runs = [r for r in runs if r[0] in keep or r[0] == "none"]
    if a.checked_only:
        runs = [r for r in runs if r[3]]
    tmp = tempfile.mkdtemp(prefix="tern_compress_acc_")
    print(f"# {a.model}, Fashion-MNIST, {a.ranks} ranks ({a.comm}), {a.epochs} epochs, seed {a.seed}", flush=True)
    print(f"{'compressor':<20} {'spec':<36} {'flags':<10} {'test acc':>8} {'vs none':>8} {'ratio':>7} "
          f"{'last ep':>8} {'s/epoch':>8}", flush=True)
    base = None
    failed = []
    for label, spec, extra, checked in runs:
        r = run(train, a, spec, extra, tmp)
        if base is None:
            base = r["accuracy"]
        delta = 100 * (r["accuracy"] - base)
        r.update(label=label, spec=spec, flags=" ".join(extra), delta_points=delta, checked=checked)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{label:<20} {spec:<36} {' '.join(extra):<10} {100 * r['accuracy']:>7.2f}% {delta:>+8.2f} "
                  f"{r['ratio']:>6.1f}x {r['ratio_last_epoch']:>7.1f}x {r['seconds_per_epoch']:>8.1f}", flush=True)
        if a.check is not None and checked and delta < -a.check:
            failed.append(f"{label}: {delta:+.2f} points")
    if failed:
        sys.exit(f"more than {a.check} points below the uncompressed run: " + "; ".join(failed))


if __name__ == "__main__":
    main()
