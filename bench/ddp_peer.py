#!/usr/bin/python3
"""PyTorch DDP peer for bench/dp_throughput.py: the CNN of Tern's zoo on N processes (gloo).

Each rank trains on its shard of Fashion-MNIST (read from the IDX files) with per-rank batch B,
SGD momentum 0.9, one thread, for a fixed number of steps after a warm-up, and rank 0 prints one
JSON line with the global samples/s.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np


def load_images(path, limit):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[4:8], "big")
    x = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, 28, 28)[:limit]
    return ((x.astype(np.float32) / 255.0) - 0.2860) / 0.3530


def load_labels(path, limit):
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=8)[:limit].astype(np.int64)


def worker(rank, world, a):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{a.port}")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1) if world > 1 else model
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.from_numpy(load_images(os.path.join(a.data_dir, "train-images-idx3-ubyte.gz"), a.samples))
    y = torch.from_numpy(load_labels(os.path.join(a.data_dir, "train-labels-idx1-ubyte.gz"), a.samples))
    per_rank = x.shape[0] // world
    x, y = x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]
    steps = per_rank // a.batch_size
    loss_fn = nn.CrossEntropyLoss()

    def step(i):
        s = (i % steps) * a.batch_size
        opt.zero_grad()
        loss_fn(ddp(x[s:s + a.batch_size]), y[s:s + a.batch_size]).backward()
        opt.step()

    for i in range(a.warmup):
        step(i)
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    for i in range(a.steps):
        step(i)
    if world > 1:
        dist.barrier()
    elapsed = time.perf_counter() - t0
    if rank == 0:
        print(json.dumps({"ranks": world, "samples_per_s": a.steps * a.batch_size * world / elapsed}))
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--samples", type=int, default=16384)
    p.add_argument("--port", type=int, default=29517)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import torch.multiprocessing as mp
    mp.start_processes(worker, args=(a.ranks, a), nprocs=a.ranks, start_method="fork")
    return 0


if __name__ == "__main__":
    sys.exit(main())
