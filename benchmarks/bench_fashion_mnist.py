"""Fashion-MNIST under label noise: full-noisy baselines, random real subsets and distillers.

Runs (or resumes) the grid ``configs/grids/fashion-mnist-cpu.yaml`` through the sweep runner, then
writes from its result records:

* ``results/fashion_mnist_baselines.md``: the full-noisy baseline per noise setting, converged
  (final epoch, and how much of its noisy training labels it fits) and early-stopped on a noisy
  validation split;
* ``results/fashion_mnist_methods.md`` + ``.png``: every method and random at every IPC against both
  baselines; accuracy vs IPC per noise setting with the converged baseline dashed;
* ``ddlnl report`` of the same root into ``results/fashion_mnist_report/`` (the study's figures).

Scale (a 2-core CPU cannot run the study's 60k-image, width-128 schedule for every cell): a
5,000-image stratified training subset (500 per class), the full 10,000-image clean test set,
width-32 ConvNet-3s for baselines and evaluation, the methods' CPU presets. Measured here: 100
epochs of a width-32 net on 10k images take ~10 min per baseline run; 5k images halve that.

    .venv/bin/python benchmarks/bench_fashion_mnist.py                  # run/resume, then tables
    .venv/bin/python benchmarks/bench_fashion_mnist.py --grid configs/grids/fashion-mnist-methods.yaml

A rerun of a grid at other code or settings goes to its own files (``--name``), and ``--compare``
adds a before/after table per cell against an earlier run's committed tables (read from their
markdown, so the earlier records need not exist any more):

    .venv/bin/python benchmarks/bench_fashion_mnist.py --grid configs/grids/fashion-mnist-methods.yaml \
        --root runs/fm-methods-rerun --name fashion_mnist_rerun --compare fashion_mnist
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from ddlnl.report import fmt_acc, fmt_delta, kept_section, markdown_table, write_report, write_result
from ddlnl.results import load_records
from ddlnl.sweep import grids_of_root, load_grid, run_local, save_grid

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def acc(a) -> str:
    return fmt_acc(a["mean"], a["std"]) if a else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", action="append", default=None,
                    help="grid YAML(s) (default configs/grids/fashion-mnist-cpu.yaml)")
    ap.add_argument("--root", default="runs/fashion-mnist-cpu")
    ap.add_argument("--no-run", action="store_true", help="only write tables from existing records")
    ap.add_argument("--name", default="fashion_mnist",
                    help="prefix of the result files under benchmarks/results/ (default fashion_mnist)")
    ap.add_argument("--compare", default=None, metavar="PREFIX",
                    help="an earlier run's prefix: write PREFIX-vs-NAME cell by cell into NAME_changes.md")
    args = ap.parse_args()
    grids = [load_grid(g) for g in (args.grid or [HERE.parent / "configs/grids/fashion-mnist-cpu.yaml"])]
    root = Path(args.root)
    if not args.no_run:
        for grid in grids:
            save_grid(root, grid)
            print(run_local(grid, root, show_progress=False), flush=True)
    all_grids = grids_of_root(root) or grids
    records = load_records(root, all_grids)
    scale = describe(grids)
    write_baselines(records, scale, args.name)
    write_methods(records, scale, args.name)
    if args.compare:
        write_changes(records, args.compare, args.name)
    report_dir = RESULTS / f"{args.name}_report"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    for p in write_report(root, report_dir, grid=all_grids):
        print(p)


def _settings(grid) -> tuple:
    """What a grid sets for every cell it shares with another grid (not its noises, methods or IPCs)."""
    return (grid.train_subset, tuple(grid.overrides), repr(grid.method_overrides), grid.n_runs, grid.baseline_runs)


def describe(grids) -> str:
    """The scale paragraph of the tables: the grids they come from and the settings those share. Grids
    that set their shared cells differently are refused (one paragraph cannot describe both)."""
    grids = list(grids)
    differ = [g.name for g in grids if _settings(g) != _settings(grids[0])]
    if differ:
        raise SystemExit(f"grids {differ} set the data or evaluation differently from {grids[0].name}; "
                         "render them with separate --name runs")
    grid = grids[0]
    names = ", ".join(f"`{g.name}`" for g in grids)
    return (f"Grid{'s' if len(grids) > 1 else ''} {names} (configs/grids/): Fashion-MNIST, "
            f"stratified {grid.train_subset}-image training subset, "
            f"full 10k clean test set; overrides {list(grid.overrides)}; method overrides {grid.method_overrides}; "
            f"{grid.n_runs} evaluation runs per synthetic set, {grid.baseline_runs or grid.n_runs} per baseline; "
            "converged baseline = final epoch of 100 epochs at lr 0.05 (cosine, no augmentation); early stop = the "
            "same schedule on 90% of the noisy labels, the epoch with the best accuracy on the other (noisy) 10%, "
            "checked every 5 epochs; synthetic sets: 300 epochs, lr 0.01 divided by 10 at half, DSA. "
            "Nothing is selected by test accuracy.")


def _by_cell(records):
    out = {}
    for r in records:
        c = r["cell"]
        out[(c["noise"], c["method"], c["ipc"])] = r
    return out


def _noises(records):
    from ddlnl.report import _noise_order

    return sorted({r["cell"]["noise"] for r in records}, key=_noise_order)


def write_baselines(records, scale, name: str = "fashion_mnist") -> None:
    by = _by_cell(records)
    rows = []
    early = any(m == "baseline_early_stop" for _, m, _ in by)
    for noise in _noises(records):
        b, e = by.get((noise, "baseline", 0)), by.get((noise, "baseline_early_stop", 0))
        rec = b or e
        if not rec:
            continue
        fit = [h[-1].get("noisy_train_acc") for h in (b or {}).get("histories", []) if h]
        peak = [max(p["test_acc"] for p in h) for h in (b or {}).get("histories", []) if h]
        rows.append([noise, f"{rec['noise']['realized_rate']:.3f}", acc(b),
                     f"{100 * np.mean(fit):.1f}" if fit and fit[0] is not None else "-",
                     f"{100 * np.mean(peak):.2f}" if peak else "-", *([acc(e)] if early else [])])
    table = markdown_table(["noise", "realized rate", "full noisy set, converged (final epoch)",
                            "fit of its noisy train labels (%)", "(peak test acc. on the curve, for reading only)",
                            *(["early stop (noisy validation)"] if early else [])], rows)
    print(table)
    write_result(RESULTS / f"{name}_baselines.md", "Full-noisy baselines on Fashion-MNIST", table,
                 scale + " The peak of the recorded test curve is shown only to make the memorisation visible; "
                 "it is not a result (choosing it would be selecting by test accuracy).")


def write_methods(records, scale, name: str = "fashion_mnist") -> None:
    by = _by_cell(records)
    methods = sorted({r["cell"]["method"] for r in records if not r["cell"]["method"].startswith("baseline")},
                     key=lambda m: (m != "random", m))
    ipcs = sorted({r["cell"]["ipc"] for r in records if r["cell"]["ipc"]})
    rows = []
    early = any(m == "baseline_early_stop" for _, m, _ in by)
    for noise in _noises(records):
        b, e = by.get((noise, "baseline", 0)), by.get((noise, "baseline_early_stop", 0))
        for ipc in ipcs:
            r = by.get((noise, "random", ipc))
            for m in methods:
                c = by.get((noise, m, ipc))
                if not c:
                    continue
                rows.append([noise, m, ipc, acc(c),
                             fmt_delta(c["mean"] - b["mean"]) if b else "-",
                             *([fmt_delta(c["mean"] - e["mean"]) if e else "-"] if early else []),
                             fmt_delta(c["mean"] - r["mean"]) if (r and m != "random") else "-",
                             f"{c['seconds'].get('distill', 0):.0f}"])
    if not rows:
        return
    table = markdown_table(["noise", "method", "IPC", "accuracy (%)", "Δ converged",
                            *(["Δ early stop"] if early else []), "Δ random", "distill s"], rows)
    print(table)
    write_result(RESULTS / f"{name}_methods.md", "Fashion-MNIST: distilled vs random subsets vs the full noisy set",
                 table + f"\n\nFigures: `{name}_report/accuracy_vs_ipc.png` (dashed: converged full-noisy "
                 f"baseline of the same noise), synthetic images in `{name}_report/grids/`.", scale)


def _mean_std(text: str) -> tuple[float, float] | None:
    """``"70.44 ± 1.05"`` -> ``(70.44, 1.05)``; anything else (``-``, ``not run``) -> None."""
    parts = text.split("±")
    return (float(parts[0]), float(parts[1])) if len(parts) == 2 else None


def read_accuracies(path: Path) -> dict[tuple[str, str, int], tuple[float, float]]:
    """``(noise, method, ipc) -> (mean %, std %)`` from a committed methods or baselines table
    (the markdown this script writes); baselines are ``("baseline", 0)`` and
    ``("baseline_early_stop", 0)``."""
    out: dict[tuple[str, str, int], tuple[float, float]] = {}
    header: list[str] | None = None
    for line in path.read_text().splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None or cells[0] == "noise":
            header = cells
            continue
        row = dict(zip(header, cells))
        if "method" in row:
            v = _mean_std(row.get("accuracy (%)", ""))
            if v:
                out[(row["noise"], row["method"], int(row["IPC"]))] = v
            continue
        for column, method in (("full noisy set, converged (final epoch)", "baseline"),
                               ("early stop (noisy validation)", "baseline_early_stop")):
            v = _mean_std(row.get(column, ""))
            if v:
                out[(row["noise"], method, 0)] = v
    return out


CHANGES_HEADING = "What changed, and what it changes"


def write_changes(records, before: str, after: str) -> None:
    """Every cell of this run beside the same cell of the earlier run ``before`` (its committed
    ``*_methods.md`` and ``*_baselines.md``): accuracy before, after and the change. A hand-written
    ``## What changed, and what it changes`` section at the end of the existing file is kept."""
    old: dict[tuple[str, str, int], tuple[float, float]] = {}
    for kind in ("methods", "baselines"):
        path = RESULTS / f"{before}_{kind}.md"
        if path.exists():
            old.update(read_accuracies(path))
    rows = []
    for (noise, method, ipc), r in sorted(_by_cell(records).items(),
                                          key=lambda kv: (kv[0][0], kv[0][2], kv[0][1] != "random", kv[0][1])):
        was = old.get((noise, method, ipc))
        rows.append([noise, method, ipc or "-", f"{was[0]:.2f} ± {was[1]:.2f}" if was else "-", acc(r),
                     f"{100 * r['mean'] - was[0]:+.2f}" if was else "-"])
    table = markdown_table(["noise", "method", "IPC", f"before ({before})", f"after ({after})", "Δ"], rows)
    print(table)
    target = RESULTS / f"{after}_changes.md"
    reading = kept_section(target, CHANGES_HEADING)  # written by hand; a re-render keeps it
    write_result(target, f"Fashion-MNIST: `{after}` against `{before}`, cell by cell", table,
                 f"Before: the committed `{before}_methods.md` / `{before}_baselines.md` (their own machine and "
                 f"date in their headers); after: this run's records. Δ = after - before, in points."
                 + ("\n\n" + reading if reading else ""))


if __name__ == "__main__":
    main()
