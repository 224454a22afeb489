"""Fashion-MNIST under label noise: full-noisy baselines, random real subsets and distillers.

For each noise setting this runs ``ddlnl run`` (the library's ``run_job``) on a stratified subset
of the training set and collects the results into two tables:

* ``fashion_mnist_baselines.md`` -- the full-noisy baseline, converged (final epoch, with how much
  of its noisy training labels it fits) and early-stopped on a noisy validation split;
* ``fashion_mnist_<methods>.md`` -- each method and random at every IPC against both baselines,
  plus ``fashion_mnist_<methods>.png``: accuracy vs IPC per noise setting, baselines dashed.

Scale (stated in the output): a 2-core CPU cannot train the study's 60k-image, width-128 schedule
for every cell, so the defaults use a 5,000-image stratified training subset (500 per class),
the full 10,000-image clean test set, a width-32 ConvNet-3 for evaluation and baselines, and the
methods' CPU presets. Run directories go under ``runs/bench/`` (not committed); re-running resumes.

    .venv/bin/python benchmarks/bench_fashion_mnist.py --methods dm --ipc 1,10,50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ddlnl.pipeline import JobConfig, resolve_job, run_baselines_only, run_job
from ddlnl.report import markdown_table, write_result
from ddlnl.utils import resolve_device

RESULTS = Path(__file__).parent / "results"


def acc(rec) -> str:
    return f"{100 * rec['mean']:.2f} ± {100 * rec['std']:.2f}" if rec else "-"


def noisy_fit(rec) -> str:
    """Mean over runs of the final accuracy on the noisy training labels (how far it memorised)."""
    vals = [h[-1].get("noisy_train_acc") for h in rec["histories"] if h and "noisy_train_acc" in h[-1]]
    return f"{100 * np.mean(vals):.1f}" if vals else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noises", default="symmetric:0.2,symmetric:0.4,symmetric:0.6,symmetric:0.8,asymmetric:0.4")
    ap.add_argument("--baseline-only-noises", default="asymmetric:0.2",
                    help="settings for which only the baselines run (the issue's baseline table)")
    ap.add_argument("--methods", default="dm")
    ap.add_argument("--ipc", default="1,10,50")
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--n-runs", type=int, default=3)
    ap.add_argument("--baseline-runs", type=int, default=1)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--baseline-epochs", type=int, default=100)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--tag", default=None, help="name of the result files (default: the methods)")
    args = ap.parse_args()

    device = resolve_device("auto")
    methods = tuple(m for m in args.methods.split(",") if m)
    ipcs = tuple(int(i) for i in args.ipc.split(","))
    common = [f"train.width={args.width}", f"baseline.width={args.width}",
              f"baseline.epochs={args.baseline_epochs}", "baseline_protocol.record_every=5",
              *[f"{m}.width={args.width}" for m in methods if m in ("dm",)], *args.overrides]
    results = {}
    for noise in [n for n in args.noises.split(",") if n] + [n for n in args.baseline_only_noises.split(",") if n]:
        only_baseline = noise in args.baseline_only_noises.split(",")
        job = JobConfig(dataset="fashion-mnist", noise=noise, methods=() if only_baseline else methods,
                        ipcs=ipcs, n_runs=args.n_runs, baseline_runs=args.baseline_runs,
                        train_subset=args.subset, preset="cpu")
        resolved = resolve_job(job, common, device)
        out = Path(args.out) / f"fashion-mnist-{noise.replace(':', '-')}-n{args.subset}"
        print(f"== {noise} -> {out}", flush=True)
        if only_baseline:
            recs = run_baselines_only(resolved, out, device=device, show_progress=False)
            results[noise] = {"baseline": recs.get("baseline"), "baseline_early_stop": recs.get("baseline_early_stop"),
                              "cells": [], "noise": json.loads((out / "noise.json").read_text()) if (out / "noise.json").exists() else None}
        else:
            results[noise] = run_job(resolved, out, device=device, show_progress=False)
    write_tables(results, methods, ipcs, args)


def write_tables(results, methods, ipcs, args) -> None:
    scale = (f"Fashion-MNIST, stratified {args.subset}-image training subset, full 10k clean test set; "
             f"ConvNet-3 width {args.width} (instance norm) for baselines and evaluation; "
             f"converged baseline: {args.baseline_epochs} epochs, lr 0.05 cosine, no augmentation; "
             f"early stop: same schedule on 90% of the noisy labels, epoch chosen by accuracy on the other 10% "
             f"(noisy) every 5 epochs; synthetic sets: 300 epochs, lr 0.01 step decay, DSA; "
             f"{args.n_runs} evaluation runs per synthetic set, {args.baseline_runs} per baseline (mean ± std over runs). Overrides: {args.overrides or 'none'}.")
    rows = []
    for noise, res in results.items():
        realized = res.get("noise", {}) or {}
        b, e = res.get("baseline"), res.get("baseline_early_stop")
        rows.append([noise, f"{realized.get('realized_rate', float('nan')):.3f}", acc(b), noisy_fit(b) if b else "-", acc(e)])
    base_table = markdown_table(["noise", "realized rate", "full noisy set, converged (final epoch)",
                                 "fit of noisy train labels (%)", "early stop (noisy val)"], rows)
    print(base_table)
    write_result(RESULTS / "fashion_mnist_baselines.md", "Full-noisy baselines on Fashion-MNIST", base_table, scale)
    if not methods:
        return
    tag = args.tag or "_".join(methods)
    rows = []
    for noise, res in results.items():
        if not res.get("cells"):
            continue
        b, e = res.get("baseline"), res.get("baseline_early_stop")
        by = {(c["method"], c["ipc"]): c for c in res["cells"]}
        for ipc in ipcs:
            r = by.get(("random", ipc))
            for m in ("random", *methods):
                c = by.get((m, ipc))
                if not c:
                    continue
                rows.append([noise, m, ipc, acc(c),
                             f"{100 * (c['mean'] - b['mean']):+.2f}" if b else "-",
                             f"{100 * (c['mean'] - e['mean']):+.2f}" if e else "-",
                             f"{100 * (c['mean'] - r['mean']):+.2f}" if (r and m != "random") else "-",
                             f"{c.get('distill_seconds', 0):.0f}"])
    table = markdown_table(["noise", "method", "IPC", "accuracy (%)", "Δ converged", "Δ early stop", "Δ random",
                            "distill s"], rows)
    print(table)
    figure = RESULTS / f"fashion_mnist_{tag}.png"
    plot_vs_ipc(results, methods, ipcs, figure)
    write_result(RESULTS / f"fashion_mnist_{tag}.md", f"Fashion-MNIST: {', '.join(methods)} vs random vs full noisy set",
                 table + f"\n\n![accuracy vs IPC]({figure.name})", scale)


def plot_vs_ipc(results, methods, ipcs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ddlnl.utils import atomic_output

    panels = ["random", *methods]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes[0], panels):
        for k, (noise, res) in enumerate((n, r) for n, r in results.items() if r.get("cells")):
            by = {(c["method"], c["ipc"]): c for c in res["cells"]}
            xs = [i for i in ipcs if (m, i) in by]
            ys = [100 * by[(m, i)]["mean"] for i in xs]
            es = [100 * by[(m, i)]["std"] for i in xs]
            col = colours[k % len(colours)]
            ax.errorbar(xs, ys, yerr=es, marker="o", color=col, label=noise, capsize=2)
            if res.get("baseline"):
                ax.axhline(100 * res["baseline"]["mean"], color=col, linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xticks(list(ipcs), [str(i) for i in ipcs])
        ax.set_title(m)
        ax.set_xlabel("images per class")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("clean test accuracy (%)\n(dashed: full noisy set, converged)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
