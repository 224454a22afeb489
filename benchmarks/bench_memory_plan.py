"""The dry-run memory plan (ddlnl.plan) against measured peaks, on small CPU cells.

Each cell runs in a FRESH subprocess on random tensors of the stated shape (so no dataset files
are needed): DM, DATM (with its experts, trained in memory), DANCE (with its pre-trained models),
RCIG for a few iterations, and one evaluation training run. The measured value is the peak
resident set size (``getrusage`` max RSS; torch's CPU allocations are invisible to tracemalloc)
minus the peak of the same process just before it builds the data (Python, torch and ddlnl
imported): what the cell itself costs. The estimate is :func:`ddlnl.plan.method_plan` (or the
training-run part of :func:`ddlnl.plan.plan_cell`) for the same configuration. The plan is for
deciding what fits: it is meant to be an upper bound, or within 25% of the measured peak.

The runtime part of the plan (:data:`ddlnl.plan.RUNTIME_BYTES`: what a process holds once it has
trained anything) is measured by a separate calibration cell (``--calibrate``), not by the rows.

    .venv/bin/python benchmarks/bench_memory_plan.py              # ~5-8 min on 2 loaded cores
    .venv/bin/python benchmarks/bench_memory_plan.py --quick      # prints, writes nothing
    .venv/bin/python benchmarks/bench_memory_plan.py --calibrate  # the runtime bytes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# name: (method, channels, side, classes, training images, ipc, overrides)
CELLS: dict[str, tuple] = {
    "dm-fmnist": ("dm", 1, 28, 10, 4000, 10, {"iterations": 3, "batch_real": 128, "width": 64}),
    "dm-cifar": ("dm", 3, 32, 10, 4000, 10, {"iterations": 2, "batch_real": 256, "width": 128}),
    "datm-fmnist": ("datm", 1, 28, 10, 2000, 10, {"iterations": 2, "syn_steps": 5, "expert_epochs": 1,
                                                  "num_experts": 1, "expert_train_epochs": 2, "min_start_epoch": 0,
                                                  "current_max_start_epoch": 1, "max_start_epoch": 1,
                                                  "width": 64, "cache_experts": False, "batch_syn": 0}),
    "dance-fmnist": ("dance", 1, 28, 10, 2000, 10, {"iterations": 2, "batch_real": 64, "num_pretrained": 1,
                                                    "pretrain_epochs": 1, "width": 64, "cache_experts": False}),
    "rcig-fmnist": ("rcig", 1, 28, 10, 2000, 10, {"iterations": 2, "batch_real": 256, "width": 32, "pool_size": 2,
                                                  "inner_steps": 3, "hinv_steps": 3, "inner_lr": 1e-4,
                                                  "hinv_lr": 1e-4, "use_flip": False}),
    "train-cifar": ("train", 3, 32, 10, 2000, 50, {"epochs": 1, "batch_size": 256, "width": 128}),
}
# The development cell that measured ddlnl.plan.RUNTIME_BYTES (what a process holds once it has
# trained anything): a width-8 net, batch 8, whose own tensors are < 8 MiB. Rerun with
# --calibrate; it is not one of the reported cells above.
CALIBRATION = {"runtime": ("train", 3, 32, 10, 2000, 10, {"epochs": 1, "batch_size": 8, "width": 8})}


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child(name: str) -> None:
    import torch

    torch.set_num_threads(1)
    from ddlnl.data import LabeledTensors
    from ddlnl.methods import METHODS, method_config
    from ddlnl.plan import _train_peak, method_plan, net_stats
    from ddlnl.train import TrainConfig, build_model, train

    method, c, side, k, n, ipc, over = {**CELLS, **CALIBRATION}[name]
    before = rss_bytes()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, c, side, side, generator=g)
    labels = torch.arange(n) % k
    if method == "train":
        cfg = TrainConfig(**over)
        s = ipc * k
        data = LabeledTensors(images[:s].clone(), labels[:s].clone())
        del images, labels
        model = build_model(cfg, channels=c, num_classes=k, image_size=(side, side), seed=0, device="cpu")
        train(model, data, cfg, seed=0)
        stats = net_stats({"depth": cfg.depth, "width": cfg.width, "norm": cfg.norm}, c, (side, side), k)
        parts = _train_peak(stats, min(cfg.batch_size, s), s, c * side * side)
    else:
        cfg = method_config(method, overrides=over)
        METHODS[method].distill(LabeledTensors(images, labels), ipc, cfg, seed=0, num_classes=k, device="cpu")
        parts, _, _, _ = method_plan(method, cfg, ipc=ipc, num_classes=k, n_train=n, channels=c,
                                     image_size=(side, side))
    print(json.dumps({"name": name, "measured": rss_bytes() - before, "estimate": sum(parts.values()),
                      "parts": parts}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two cells; prints, writes nothing")
    p.add_argument("--calibrate", action="store_true", help="only the calibration cell (prints the runtime bytes)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child)
        return
    if args.calibrate:
        out = subprocess.run([sys.executable, __file__, "--child", "runtime"], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        own = r["estimate"] - r["parts"]["runtime"]
        print(f"runtime: {(r['measured'] - own) / 2 ** 20:.0f} MiB (measured {r['measured'] / 2 ** 20:.0f} MiB minus "
              f"the cell's own tensors {own / 2 ** 20:.1f} MiB)")
        return
    from ddlnl.plan import RUNTIME_BYTES, fmt_bytes
    from ddlnl.report import markdown_table, write_result

    names = ["dm-fmnist", "train-cifar"] if args.quick else list(CELLS)
    load = os.getloadavg()[0]
    rows = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True)
        if out.returncode != 0:
            rows.append([name, "-", "-", "-", f"failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}"])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        method, c, side, k, n, ipc, over = CELLS[name]
        shape = f"{n} x {c}x{side}x{side}, {k} classes, IPC {ipc}; " + ", ".join(f"{a}={b}" for a, b in over.items())
        rows.append([name, fmt_bytes(r["estimate"]), fmt_bytes(r["measured"]), f"{r['estimate'] / r['measured']:.2f}",
                     shape])
    table = markdown_table(["cell", "estimate", "measured peak RSS above imports", "estimate / measured",
                            "configuration"], rows)
    notes = ("Each cell in a fresh subprocess, 1 thread, random tensors of the stated shape; measured = getrusage "
             "max RSS at the end minus max RSS before the data were built (interpreter, torch, ddlnl). Estimate = "
             "ddlnl.plan (the model in its module docstring), including its runtime part "
             f"({RUNTIME_BYTES / 2 ** 20:.0f} MiB, measured by the calibration cell `--calibrate`: a width-8 net, batch 8, "
             "not one of these rows). Changes of the model made after a previous run of this benchmark: the "
             "backward buffers (2 x the largest layer per image), the runtime part, DM one class at a time "
             "(methods/dm.py), RCIG's activations x3 instead of x2 (a previous run measured 0.71x), DATM's matching activations "
             "x4 instead of x3 (0.76-0.91x in previous runs). "
             "RSS peaks vary from run to run on this machine (train-cifar: 670-850 MiB over four runs, RCIG 1.1-1.2 GiB, DATM 610-736 MiB). "
             f"Load average at start: {load:.2f} (the machine may be shared; memory does not depend on it).")
    print(table + "\n\n" + notes)
    if not args.quick:
        path = write_result(RESULTS / "memory_plan.md", "Dry-run memory plan: estimate vs measured peak (CPU)",
                            table, notes)
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
