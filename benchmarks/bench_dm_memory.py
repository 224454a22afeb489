"""Peak memory of one DM iteration at paper settings: all classes in one forward pass (the old
path) vs one class at a time (``ddlnl.methods.dm.distill``).

Paper settings (DM ``main_DM.py``): 256 real images per class, ConvNet width 128 with instance
norm, DSA; depth 3 on 3 x 32 x 32 (CIFAR-10: 10 classes, CIFAR-100: 100) and depth 4 on 3 x 64 x 64
(Tiny-ImageNet: 200 classes, the study's ConvNetD4); IPC 10 and 50. Images are random fixture
tensors of those shapes (memory does not depend on pixel values), 256 per class, so the data
tensor itself is small and the "above baseline" column is what the iteration costs.

Every (path, shape, classes, IPC) runs in a FRESH subprocess with one thread, so its peak is its
own: peak resident set size (``getrusage`` max RSS; torch's CPU allocations are invisible to
``tracemalloc``). The baseline is the peak after the data, the synthetic set and the optimiser exist
(``distill`` with 0 iterations); the iteration's cost is the peak after one iteration minus it.

The old path at 100 or 200 classes would need tens to hundreds of GiB (more than this machine), so
both paths are measured on a few classes and the old one is extrapolated linearly in the number of
classes (its cost is one forward pass over ``classes x 256`` images); the new one is measured to be
flat in the number of classes, so its value at the full class count is the measured one.

    .venv/bin/python benchmarks/bench_dm_memory.py            # ~10-15 min on a shared 2-core machine
    .venv/bin/python benchmarks/bench_dm_memory.py --quick    # seconds; prints, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# name: (channels, side, depth, classes in the dataset)
SHAPES = {"CIFAR-10": (3, 32, 3, 10), "CIFAR-100": (3, 32, 3, 100), "Tiny-ImageNet": (3, 64, 4, 200)}


def child(args: argparse.Namespace) -> None:
    """One iteration of one path; print one JSON line."""
    import torch

    torch.set_num_threads(1)
    from ddlnl.augment import DSA
    from ddlnl.data import LabeledTensors
    from ddlnl.methods import dm
    from ddlnl.methods.common import class_indices
    from ddlnl.train import TrainConfig, build_model
    from ddlnl.utils import generator

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    g = generator(0)
    k, n_per = args.classes, max(args.batch_real, args.ipc)
    images = torch.randn(k * n_per, args.channels, args.side, args.side, generator=g)
    train = LabeledTensors(images, torch.arange(k).repeat_interleave(n_per))
    cfg = dm.DMConfig(iterations=0, batch_real=args.batch_real, width=args.width, depth=args.depth)
    syn = dm.distill(train, args.ipc, cfg, seed=0, num_classes=k)  # builds what an iteration needs
    baseline = peak_mib()
    t = time.perf_counter()
    if args.path == "per-class":
        dm.distill(train, args.ipc, replace(cfg, iterations=1), seed=0, num_classes=k)
    else:  # the old path: every class's real and synthetic batch through one forward pass
        x = syn.images.clone().requires_grad_(True)
        net = build_model(TrainConfig(width=args.width, depth=args.depth), channels=args.channels,
                          num_classes=k, image_size=(args.side, args.side), seed=0)
        for p in net.parameters():
            p.requires_grad_(False)
        dsa, real, fake = DSA(cfg.dsa_strategy), [], []
        for c, idx in enumerate(class_indices(train.labels, k)):
            draw = dsa.sample(1, g, siamese=True)
            pick = idx[torch.randperm(idx.numel(), generator=g)[:args.batch_real]]
            real.append(dsa.apply(images[pick], draw))
            fake.append(dsa.apply(x[c * args.ipc:(c + 1) * args.ipc], draw))
        dm.matching_loss(net, real, fake).backward()
    seconds = time.perf_counter() - t
    print(json.dumps({"peak_mib": peak_mib(), "baseline_mib": baseline, "seconds": seconds}))


def run_one(args: argparse.Namespace, path: str, shape: str, classes: int, ipc: int) -> dict:
    channels, side, depth, _ = SHAPES[shape]
    cmd = [sys.executable, __file__, "--child", "--path", path, "--channels", str(channels), "--side", str(side),
           "--depth", str(depth), "--classes", str(classes), "--ipc", str(ipc), "--width", str(args.width),
           "--batch-real", str(args.batch_real)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes; prints, writes nothing")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--ipcs", default="10,50")
    p.add_argument("--out", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("path", "channels", "side", "depth", "classes", "ipc"):
        p.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        for name in ("channels", "side", "depth", "classes", "ipc"):
            setattr(args, name, int(getattr(args, name)))
        child(args)
        return
    # Classes measured per image shape: the 32x32 shape serves CIFAR-10 (measured at its 10
    # classes) and CIFAR-100 (extrapolated); 64x64 old-path runs are kept to <= 4 classes
    # (one forward over 4 x 256 images at width 128 is already ~4 GiB).
    measured = {32: [2, 10], 64: [1, 4]}
    if args.quick:
        args.width, args.batch_real, args.ipcs, measured = 8, 16, "2", {32: [2, 4], 64: [1, 2]}
    ipcs = [int(i) for i in args.ipcs.split(",")]

    from ddlnl.report import markdown_table, write_result

    load = os.getloadavg()[0]
    costs: dict[tuple[str, int, int, int], float] = {}  # (path, side, classes, ipc) -> MiB above baseline
    raw_rows = []
    for side, classes_list in measured.items():
        shape = "CIFAR-10" if side == 32 else "Tiny-ImageNet"
        for ipc in ipcs:
            for classes in classes_list:
                for path in ("all-classes", "per-class"):
                    print(f"{path} {side}x{side} classes={classes} ipc={ipc} ...", file=sys.stderr, flush=True)
                    r = run_one(args, path, shape, classes, ipc)
                    if "error" in r:
                        raw_rows.append([f"{side}x{side}", classes, ipc, path, "-", "-", f"failed: {r['error']}"])
                        continue
                    cost = r["peak_mib"] - r["baseline_mib"]
                    costs[(path, side, classes, ipc)] = cost
                    raw_rows.append([f"{side}x{side}", classes, ipc, path, f"{cost:,.0f}", f"{r['seconds']:.1f}", ""])
    raw = markdown_table(["input", "classes", "IPC", "path", "iteration peak above baseline (MiB)",
                          "s / iteration", "note"], raw_rows)

    def fit(path: str, side: int, ipc: int) -> tuple[float, float] | None:
        """Least-squares line cost = a + b * classes over the measured class counts."""
        pts = [(c, costs[(path, side, c, ipc)]) for c in measured[side] if (path, side, c, ipc) in costs]
        if len(pts) < 2:
            return None
        n = len(pts)
        mx, my = sum(c for c, _ in pts) / n, sum(v for _, v in pts) / n
        b = sum((c - mx) * (v - my) for c, v in pts) / sum((c - mx) ** 2 for c, _ in pts)
        return my - b * mx, b

    rows = []
    for shape, (_, side, depth, classes) in SHAPES.items():
        for ipc in ipcs:
            old, new = fit("all-classes", side, ipc), fit("per-class", side, ipc)
            if old is None or new is None:
                continue
            top = max(measured[side])
            old_at = old[0] + old[1] * classes
            new_at = costs[("per-class", side, top, ipc)]
            how = "measured" if classes == top else f"old: linear fit over {measured[side]} classes"
            rows.append([shape, f"3x{side}x{side}, depth {depth}", classes, ipc, f"{old_at / 1024:,.2f}",
                         f"{new_at / 1024:,.2f}", f"{old[1]:,.0f}", f"{new[1]:,.1f}", how])
    table = markdown_table(["dataset shape", "input, ConvNet", "classes", "IPC", "all classes in one pass (GiB)",
                            "one class at a time (GiB)", "old: MiB per extra class", "new: MiB per extra class",
                            "how"], rows)
    notes = (f"One DM iteration, width {args.width}, instance norm, {args.batch_real} real images per class, DSA "
             f"(siamese per class); peak RSS of a fresh 1-thread process above its baseline (data, synthetic "
             f"set, optimiser). New path at the full class count = its value measured at the largest measured "
             f"class count (its slope per class is in the table: the synthetic images' own gradient only). "
             f"Load average at start: {load:.2f}.\n\nMeasured points:\n\n{raw}")
    print(table + "\n\n" + notes)
    out = args.out or (None if args.quick else RESULTS / "dm_memory.md")
    if out:
        write_result(out, "DM: peak memory per iteration, all classes in one pass vs one class at a time", table,
                     notes)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
