"""FTD ablation: DATM with sharpness-aware ("flat trajectory") experts vs plain-SGD experts.

Runs (or resumes) ``configs/grids/fashion-mnist-ftd.yaml`` in ``runs/fashion-mnist-cpu`` (where
``fashion-mnist-methods.yaml`` already left the baseline, random and plain-DATM records), then, for
every noise setting and expert variant, reads the cached expert trajectories and measures:

* **distance to plain**: how far each FTD expert's last epoch lies from the plain expert with the
  same seed (same initial weights, same batches and augmentation draws), as a percentage of the
  plain expert's path length (sum of its per-epoch steps);
* **expert test accuracy**: the experts' last-epoch accuracy on the clean test set (read only);
* **sharpness**: the mean rise of the noisy-training loss when every parameter tensor ``w`` of the
  last-epoch weights is moved by ``0.2 * ||w||`` in a random direction (5 draws, 2,000 training
  images); flatter minima rise less;

beside DATM's clean-test accuracy with each kind of expert (mean ± std over 3 evaluation runs).

    .venv/bin/python benchmarks/bench_ftd.py             # run missing cells, then write the table
    .venv/bin/python benchmarks/bench_ftd.py --no-run    # only the table, from existing records
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from ddlnl.errors import DataError
from ddlnl.experts import get_experts
from ddlnl.jobs import job_experts
from ddlnl.report import fmt_acc, markdown_table, write_result
from ddlnl.results import load_records
from ddlnl.sweep import Cell, cell_job, load_grid, run_local, save_grid
from ddlnl.utils import generator

HERE = Path(__file__).parent
RESULTS = HERE / "results"


@torch.no_grad()
def sharpness(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, scale: float = 0.2,
              draws: int = 5, seed: int = 0) -> float:
    """Mean rise of the cross-entropy under random relative perturbations of every parameter tensor."""
    def loss() -> float:
        return float(torch.nn.functional.cross_entropy(model(images), labels))

    base = loss()
    saved = [p.detach().clone() for p in model.parameters()]
    g = generator(seed)
    rises = []
    for _ in range(draws):
        for p, w in zip(model.parameters(), saved):
            u = torch.randn(w.shape, generator=g)
            p.copy_(w + scale * w.norm() * u / u.norm())
        rises.append(loss() - base)
    for p, w in zip(model.parameters(), saved):
        p.copy_(w)
    return float(np.mean(rises))


def expert_stats(grid, noise: str, method: str, plain) -> dict:
    cell = Cell(grid.datasets[0].name, noise, grid.seeds[0], method, grid.ipcs[0])
    resolved = cell_job(grid, cell)
    prepared, ecfg, kwargs = job_experts(resolved, "datm")
    try:
        tr = get_experts(prepared.noisy_train, ecfg, allow_training=False, **kwargs)  # the sweep's cache
    except DataError:  # its cells have not run yet: a row of gaps
        return {"rho": ecfg.sam_rho, "alpha": ecfg.sam_alpha, "acc": [], "sharp": [], "dist": [], "trajectories": None}
    train = prepared.noisy_train
    idx = torch.randperm(len(train), generator=generator(0))[:2000]
    out = {"rho": ecfg.sam_rho, "alpha": ecfg.sam_alpha, "experts": tr.num_experts, "epochs": tr.num_epochs,
           "acc": [], "sharp": [], "dist": [], "trajectories": tr}
    for e in range(tr.num_experts):
        model = tr.load_into(tr.build_model(), e, -1).eval()
        out["acc"].append(float((model(prepared.dataset.test.images).argmax(1) == prepared.dataset.test.labels)
                                .float().mean()))
        out["sharp"].append(sharpness(model, train.images[idx], train.labels[idx], seed=e))
        if plain is not None and plain["trajectories"] is not None:
            ref = plain["trajectories"].trajectory(e)
            path = float((ref[1:] - ref[:-1]).norm(dim=1).sum())
            out["dist"].append(100 * float((tr.trajectory(e)[-1] - ref[-1]).norm()) / path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default=str(HERE.parent / "configs/grids/fashion-mnist-ftd.yaml"))
    ap.add_argument("--root", default="runs/fashion-mnist-cpu")
    ap.add_argument("--no-run", action="store_true", help="only write the table from existing records")
    args = ap.parse_args()
    grid, root = load_grid(args.grid), Path(args.root)
    if not args.no_run:
        save_grid(root, grid)  # so `ddlnl report` / `ddlnl results` of the root include these cells
        print(run_local(grid, root, show_progress=False), flush=True)
    os.environ["DDLNL_CACHE"] = str(root / "artifacts" / "cache")
    records = {(r["cell"]["noise"], r["cell"]["method"], r["cell"]["ipc"]): r for r in load_records(root, grid)}
    base = {noise: records.get((noise, "baseline", 0)) for noise in grid.noises}
    methods = [m for m in grid.methods if grid.base_method(m) == "datm"]
    ipcs = sorted(grid.ipcs)

    rows = []
    for noise in grid.noises:
        plain = None
        for m in methods:
            st = expert_stats(grid, noise, m, plain)
            if m == "datm":
                plain = st
            rows.append([noise, m, f"{st['rho']:g}" + (f" / {st['alpha']:g}" if st["rho"] else ""),
                         f"{np.mean(st['dist']):.2f}" if st["dist"] else "-",
                         f"{100 * np.mean(st['acc']):.2f}" if st["acc"] else "-",
                         f"{np.mean(st['sharp']):.4f}" if st["sharp"] else "-",
                         *[fmt_acc(r["mean"], r["std"]) if (r := records.get((noise, m, ipc))) else "-" for ipc in ipcs],
                         f"{100 * base[noise]['mean']:.2f}" if base[noise] else "-"])
    head = ["noise", "DATM experts", "rho / alpha", "end distance to plain (% of path)", "expert test acc. (%)",
            "sharpness (loss rise)", *[f"DATM IPC {i} (%)" for i in ipcs], "converged baseline (%)"]
    table = markdown_table(head, rows)
    print(table)
    notes = (f"Grid `{grid.name}` (configs/grids/fashion-mnist-ftd.yaml): Fashion-MNIST, stratified "
             f"{grid.train_subset}-image subset, DATM's CPU preset (2 experts x 8 epochs, width 32, SGD lr 0.01; "
             "100 iterations of 10 TESLA steps), evaluation on the common protocol (width 32, 300 epochs, "
             f"{grid.n_runs} runs). FTD experts: GSAM steps with adaptive (ASAM) scaling, the study's "
             "rho 0.01 and alpha 0.3 (`buffer_FTD.py`), and rho 0.5 for contrast. Expert test accuracy and "
             "sharpness are read from the cached trajectories (mean over the experts); they select nothing.")
    write_result(RESULTS / "ftd_ablation.md", "FTD ablation: DATM with flat vs plain expert trajectories",
                 table, notes)
    print(f"written {RESULTS / 'ftd_ablation.md'}")


if __name__ == "__main__":
    main()
