"""Rebuild the synthetic sets behind a report's image grids, and draw the grids again.

The committed grids under ``results/fashion_mnist_report/grids/`` were drawn by ``ddlnl report``
from the sets of a sweep root under ``runs/``, which is not committed (27 sets of 100 28x28
images, ~8.5 MB). This script distils those sets again, exactly as the sweep's cells do (the
cell's resolved configuration, synthetic-set key and seed: ``ddlnl.sweep.cell_job``,
``ddlnl.cells.synthetic_key`` and ``derive_seed(seed, "distill", method, ipc)``), into
``ROOT/artifacts/synthetic/`` (``ddlnl.sweep.synthetic_path``) where the
sweep keeps them (so a later ``ddlnl sweep`` of the same grid reuses them), and draws one grid per
(dataset, method, noise) at the largest IPC <= ``--max-ipc``, as the report does. Distillation
only: nothing is evaluated, no record is written. A set already in ROOT under the same key is
reused.

With the current code the sets (and so the pixels) need not equal those of the committed run:
any change to a method since then changes its set. Cost on this 2-core CPU: DM ~1.5 min, DATM
~3.5 min, RCIG ~4 min, DANCE ~3 min per IPC-10 set at the grids' CPU presets (the distill times
in ``results/fashion_mnist_methods.md``), about 70 min for all 27.

    .venv/bin/python benchmarks/rebuild_report_grids.py                          # all three grids
    .venv/bin/python benchmarks/rebuild_report_grids.py --only method=dm --only noise=symmetric:0.4
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ddlnl.pipeline import distill_cached, fit_to_images, prepare_data
from ddlnl.report import grid_name, set_grid_png
from ddlnl.cells import synthetic_key
from ddlnl.sweep import cell_job, expand, load_grid, select_cells, synthetic_path
from ddlnl.utils import CACHE_ENV, derive_seed, resolve_device

HERE = Path(__file__).resolve().parent
GRIDS = [HERE.parent / "configs" / "grids" / f"fashion-mnist-{n}.yaml" for n in ("cpu", "methods", "ftd")]


def shown_cells(grid, max_ipc: int, only: list[str] | None):
    """The cells a report draws: per (dataset, method, noise), the largest IPC <= ``max_ipc``."""
    best = {}
    for cell in select_cells(expand(grid), only):
        if cell.is_baseline or not cell.ipc or cell.ipc > max_ipc:
            continue
        key = (cell.dataset, cell.method, cell.noise)
        if key not in best or cell.ipc > best[key].ipc:
            best[key] = cell
    return [best[k] for k in sorted(best)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", action="append", help="grid YAML (repeatable; default the three Fashion-MNIST grids)")
    ap.add_argument("--root", default="runs/sweeps/fashion-mnist-grids", help="where the sets are kept")
    ap.add_argument("--out", default=str(HERE / "results" / "fashion_mnist_report" / "grids"))
    ap.add_argument("--only", action="append", help="cell filter FIELD=VALUE, as `ddlnl sweep --only`")
    ap.add_argument("--max-ipc", type=int, default=10)
    args = ap.parse_args()
    root, out = Path(args.root), Path(args.out)
    os.environ.setdefault(CACHE_ENV, str(root / "artifacts" / "cache"))  # experts, as the sweep keeps them
    device = resolve_device("auto")
    for path in args.grid or GRIDS:
        grid = load_grid(path)
        for cell in shown_cells(grid, args.max_ipc, args.only):
            resolved = cell_job(grid, cell)
            prepared = prepare_data(resolved.job)
            resolved = fit_to_images(resolved, prepared.dataset.image_size)
            base = grid.base_method(cell.method)
            key = synthetic_key(resolved, base, cell.ipc)
            t0 = time.perf_counter()
            syn = distill_cached(prepared, base, cell.ipc, resolved.methods[base],
                                 seed=derive_seed(cell.seed, "distill", base, cell.ipc), key=key,
                                 path=synthetic_path(root, cell, key), device=device, echo=print)
            png = set_grid_png(syn, out / grid_name(cell.dataset, cell.method, cell.noise, cell.ipc),
                               f"{cell.method}, IPC {cell.ipc}, {cell.dataset}, {cell.noise}",
                               prepared.dataset.train.images)
            print(f"{png}  ({time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
