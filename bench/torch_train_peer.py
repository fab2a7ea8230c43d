#!/usr/bin/python3
"""PyTorch peer for bench/train_throughput: times the same models and training step as Tern.

Builds the MLP or CNN of Tern's zoo layer for layer, runs forward, cross-entropy, backward and an
SGD step (momentum 0.9, weight decay 5e-4) on a fixed random batch, and prints one JSON line with
samples/s. Run by the C++ benchmark so both are measured in the same run on the same machine.
"""
import argparse
import ctypes.util
import json
import os
import sys
import time


def build(name, torch):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    raise SystemExit(f"torch_train_peer: unknown model {name!r} (mlp|cnn)")


def blas_in_use():
    """The shared BLAS that torch's GEMM resolves to (Debian's torch uses the system libblas.so.3)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "blas" in line and ".so" in line:
                    return os.path.realpath(line.split()[-1])
    except OSError:
        pass
    return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed duration")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    try:
        import torch
    except ImportError:
        print(json.dumps({"error": "python3-torch is not installed (scripts/install-deps.sh --bench)"}))
        return 1
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build(a.model, torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(a.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (a.batch_size,))

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    steps = 0
    t0 = time.perf_counter()
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= a.seconds and steps >= 5:
            break
    print(json.dumps({"model": a.model, "samples_per_s": steps * a.batch_size / elapsed, "steps": steps,
                      "torch": torch.__version__, "blas": blas_in_use(),
                      "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
