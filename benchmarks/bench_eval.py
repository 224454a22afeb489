"""Evaluation of a synthetic set: n runs one after another vs trained together (``evaluate(together=...)``).

A random IPC 1/10/50 subset of Fashion-MNIST (28x28, clean labels) stands in for a synthetic set:
the cost of evaluation depends on the set's shape, not on how it was made. The evaluation config is
the CPU preset's (ConvNet-3, width 64, instance norm, SGD momentum, batch 256, DSA) with fewer
epochs (``--epochs``; a step costs the same in every epoch, so the ratio does not depend on it).
For every (IPC, n) the two paths alternate A B A B in one process; seconds are wall time of
``evaluate`` (training plus the test accuracy of every run on ``--test`` images). Both paths use
the same seeds, so their accuracies must agree run by run (tests/test_train_together.py pins that
the parameters agree); the table shows both. Writes benchmarks/results/eval.md.

    .venv/bin/python benchmarks/bench_eval.py [--ipcs 1,10,50] [--runs 1,3,5,10] [--epochs 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from ddlnl.data import load_dataset
from ddlnl.pipeline import TRAIN_PRESETS
from ddlnl.report import fmt_acc, markdown_table, write_result
from ddlnl.train import TrainConfig, evaluate
from ddlnl.utils import derive_seed, generator

RESULTS = Path(__file__).parent / "results"


def random_set(ds, ipc: int, seed: int):
    """``ipc`` random training images per class (clean labels)."""
    g = generator(derive_seed(seed, "bench-eval", ipc))
    idx = []
    for c in range(ds.num_classes):
        members = torch.nonzero(ds.train.labels == c).flatten()
        idx.append(members[torch.randperm(members.numel(), generator=g)[:ipc]])
    return ds.train.subset(torch.cat(idx))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipcs", default="1,10,50")
    ap.add_argument("--runs", default="1,3,5,10")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--test", type=int, default=1000, help="test images each run is scored on")
    ap.add_argument("--repeats", type=int, default=2, help="A B pairs per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "eval.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("fashion-mnist")
    test = ds.test.subset(torch.arange(args.test))
    cfg = TrainConfig(**TRAIN_PRESETS["cpu"], epochs=args.epochs).for_dataset(ds.name)
    rows = []
    header = ["IPC", "n runs", "sequential (s)", "together (s)", "ratio seq/together",
              "acc sequential", "acc together", "max |acc diff| per run", "load (1 min)"]
    for ipc in [int(v) for v in args.ipcs.split(",")]:
        data = random_set(ds, ipc, seed=0)
        for n in [int(v) for v in args.runs.split(",")]:
            times = {False: [], True: []}
            res = {}
            loads = []
            for _ in range(args.repeats):
                for together in (False, True):
                    loads.append(os.getloadavg()[0])
                    t = time.perf_counter()
                    res[together] = evaluate(data, test, cfg, num_classes=ds.num_classes, n_runs=n, seed=0,
                                             together=together)
                    times[together].append(time.perf_counter() - t)
            ratios = [a / b for a, b in zip(times[False], times[True])]
            diff = max(abs(a - b) for a, b in zip(res[False].accs, res[True].accs))
            rows.append([ipc, n, " / ".join(f"{t:.1f}" for t in times[False]),
                         " / ".join(f"{t:.1f}" for t in times[True]),
                         f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})",
                         fmt_acc(res[False].mean, res[False].std), fmt_acc(res[True].mean, res[True].std),
                         f"{100 * diff:.2f}", f"{min(loads):.1f}-{max(loads):.1f}"])
            print(rows[-1], flush=True)
            write(args, cfg, header, rows)
    print(markdown_table(header, rows))


def write(args, cfg, header, rows) -> None:
    notes = (f"Config: ConvNet-{cfg.depth} width {cfg.width} {cfg.norm} norm, {cfg.epochs} epochs (the preset "
             f"trains 300), batch {cfg.batch_size}, lr {cfg.lr} {cfg.schedule} schedule, augment {cfg.augment}; "
             f"{args.threads} thread(s); each run scored on {args.test} test images. Seconds: each A B pair's "
             "wall time, in order; ratio: median of the per-pair ratios (each pair's own). The machine is "
             "shared with other jobs: the load column is the 1-minute load average seen at each start, and a "
             "ratio taken minutes apart under another load means little. Accuracies after so few epochs are "
             "low; what matters is that both paths give the same accuracy per run.")
    write_result(args.out, "Evaluation: n runs sequential vs together", markdown_table(header, rows), notes)


if __name__ == "__main__":
    main()
