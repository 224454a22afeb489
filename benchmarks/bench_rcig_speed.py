"""RCIG before and after the memory-sized Jacobian budget, side by side in one process.

"landed": ``src/ddlnl/methods/rcig.py`` as committed at ``--landed REV`` (default ``bea0991``,
the RCIG on main before this change), loaded from git into a temporary folder as a sibling
module of the package, so both versions share everything else. "now": the working tree's module.
Both distil the same random Fashion-MNIST subset with the published RCIG config (width 128,
flips, 20 inner and 20 Hessian-inverse steps, the lr search) except for ``--steps`` outer steps,
``--pool`` networks and ``--batch-real`` real images per step; A B A B alternate. The landed
module materialises the support Jacobian only up to 512 MiB, which the published IPC 10 case
(2 N K x P, 2.4 GB at width 128 with flips) exceeds; now the budget is a quarter of the free
memory. Writes benchmarks/results/rcig_speed.md.

    .venv/bin/python benchmarks/bench_rcig_speed.py [--ipc 10] [--steps 2] [--pairs 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import ddlnl.methods.rcig as rcig_now
from ddlnl.data import load_dataset
from ddlnl.report import markdown_table, write_result

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]


def load_landed(rev: str, folder: Path):
    """The module at ``rev`` as ``ddlnl.methods.rcig_landed`` (its relative imports resolve in ddlnl)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/ddlnl/methods/rcig.py"],
                            check=True, capture_output=True, text=True).stdout
    path = folder / "rcig_landed.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("ddlnl.methods.rcig_landed", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--landed", default="bea0991")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--batch-real", type=int, default=256)
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fixed-lr", type=float, default=1e-4,
                    help="inner and Hessian-inverse Adam lr fixed at this value (no lr search), so that "
                         "only the outer steps are timed; their cost does not depend on the value (default "
                         "%(default)g, as the committed table)")
    ap.add_argument("--lr-search", action="store_true",
                    help="time the published lr search too (on a 2-core CPU one distill then takes over 45 minutes)")
    args = ap.parse_args()
    if args.lr_search:
        args.fixed_lr = None
    torch.set_num_threads(args.threads)
    ds = load_dataset("fashion-mnist")
    train = ds.train.subset(torch.arange(args.subset))
    overrides = dict(iterations=args.steps, pool_size=args.pool, batch_real=args.batch_real)
    if args.fixed_lr is not None:
        overrides.update(inner_lr=args.fixed_lr, hinv_lr=args.fixed_lr)
    with tempfile.TemporaryDirectory() as tmp:
        landed = load_landed(args.landed, Path(tmp))
        modules = {"landed": landed, "now": rcig_now}
        # Fields added since the landed module, at the values that reproduce it (e.g. constant
        # width: the per-block doubling of RCIG's reference came later and costs ~5x a step).
        landed_fields = {f.name for f in dataclasses.fields(landed.RCIGConfig)}
        same_as_landed = {"now": {k: v for k, v in rcig_now.RCIGConfig.KEY_NEUTRAL.items() if k not in landed_fields}}
        times = {k: [] for k in modules}
        out = {}
        rows = []
        for _ in range(args.pairs):
            for name, mod in modules.items():
                cfg = mod.RCIGConfig(**overrides, **same_as_landed.get(name, {}))
                load = os.getloadavg()[0]
                t = time.perf_counter()
                out[name] = mod.distill(train, args.ipc, cfg, seed=0, num_classes=ds.num_classes)
                times[name].append(time.perf_counter() - t)
                print(name, f"{times[name][-1]:.1f}s", f"load {load:.1f}", flush=True)
        ratios = [a / b for a, b in zip(times["landed"], times["now"])]
        same = torch.allclose(out["landed"].images, out["now"].images, rtol=1e-3, atol=1e-4)
        diff = float((out["landed"].images - out["now"].images).abs().max())
        rows.append([args.ipc, " / ".join(f"{t:.1f}" for t in times["landed"]),
                     " / ".join(f"{t:.1f}" for t in times["now"]),
                     f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})",
                     f"{diff:.2e}", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f}"])
    header = ["IPC", "landed (s)", "now (s)", "ratio landed/now", "max |image diff| after the run",
              "peak RSS of the process (GiB)"]
    table = markdown_table(header, rows)
    print(table)
    search = ("lr search included" if args.fixed_lr is None else
              f"no lr search (inner and Hessian-inverse lr fixed at {args.fixed_lr:g})")
    notes = (f"distill() wall time, {search}: {args.steps} outer steps, {args.pool} pool networks, "
             f"{args.batch_real} real images per step, a {args.subset}-image Fashion-MNIST subset, "
             f"{args.threads} thread(s); otherwise RCIGConfig's published defaults, with the fields added since "
             f"the landed module at the values that reproduce it ({same_as_landed['now']}). Landed = "
             f"rcig.py at {args.landed}. Images agree within rtol 1e-3: {same}. The machine is shared: "
             "see the load average above; the pairs alternate so both versions see the same load.")
    write_result(RESULTS / "rcig_speed.md", "RCIG: landed vs memory-sized Jacobian budget", table, notes)


if __name__ == "__main__":
    main()
