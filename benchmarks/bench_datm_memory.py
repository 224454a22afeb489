"""Peak memory and time per outer iteration of DATM's matching gradient: TESLA vs unrolled.

Fashion-MNIST-sized inputs (1 x 28 x 28, 10 classes), IPC 10 (100 synthetic images, all of them in
every student step as in DATM's CIFAR-10 configs), ConvNet-3 with instance norm, per-sample DSA,
learnable soft labels; ``syn_steps`` in 10/20/40/80. Every (mode, syn_steps) runs in a FRESH
subprocess so that its peak is its own: on CPU the peak resident set size (``getrusage`` max RSS;
torch's CPU allocations are invisible to ``tracemalloc``), on CUDA ``max_memory_allocated``.
The "above baseline" column subtracts the peak of the same process after a 1-step warm-up (torch,
the model, the data): that is the memory the student steps cost.

Unrolled MTT keeps the whole double-backward graph (measured here: 4.0 GiB at 20 steps, W64), so a
configuration whose memory, extrapolated linearly from the smaller ones, would exceed 70% of the
available memory is skipped and reported as such.

Target: TESLA's peak at 80 steps <= 1.25x its peak at 10 steps.

    .venv/bin/python benchmarks/bench_datm_memory.py              # full: W64, 10/20/40/80 steps
    .venv/bin/python benchmarks/bench_datm_memory.py --quick      # seconds; prints, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def child(args: argparse.Namespace) -> None:
    """Measure one configuration; print one JSON line."""
    import torch

    from ddlnl.augment import DSA
    from ddlnl.experts import ParamLayout
    from ddlnl.methods.datm import GRADIENTS, Student, plan_steps
    from ddlnl.train import TrainConfig, build_model

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    num_classes, n = 10, 10 * args.ipc
    model = build_model(TrainConfig(width=args.width), channels=1, num_classes=num_classes,
                        image_size=(args.size, args.size), seed=0, device=device)
    layout = ParamLayout.of(model)
    start = layout.flatten(model)
    target = start + 0.01 * torch.randn(start.shape, generator=g).to(device)
    images = torch.randn(n, 1, args.size, args.size, generator=g).to(device)
    logits = torch.randn(n, num_classes, generator=g).to(device)
    lr = torch.tensor(0.01, device=device)
    dsa = DSA()
    student = Student(model, layout, dsa)
    match = GRADIENTS[args.mode]

    def iteration(steps: int) -> float:
        plan = plan_steps(n, steps, args.batch_syn, dsa, g)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        res = match(student, images, logits, lr, start, target, plan)
        float(res.grad_images.sum())  # wait for the device
        return time.perf_counter() - t

    def peak_mib() -> float:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    iteration(1)  # warm-up: allocator, kernels, one step's graph
    baseline = peak_mib()
    seconds = [iteration(args.steps) for _ in range(args.iters)]
    print(json.dumps({"mode": args.mode, "steps": args.steps, "peak_mib": peak_mib(), "baseline_mib": baseline,
                      "seconds": sum(seconds) / len(seconds), "params": layout.numel}))


def available_mib() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def predicted_peak(done: list[dict], steps: int) -> float | None:
    """Peak at ``steps`` extrapolated linearly from measured configurations of the same mode."""
    if not done:
        return None
    if len(done) == 1:
        r = done[0]
        return r["baseline_mib"] + (r["peak_mib"] - r["baseline_mib"]) * steps / r["steps"]
    a, b = done[-2], done[-1]
    slope = (b["peak_mib"] - a["peak_mib"]) / (b["steps"] - a["steps"])
    return b["peak_mib"] + slope * (steps - b["steps"])


def run_one(args: argparse.Namespace, mode: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--steps", str(steps), "--width", str(args.width),
           "--ipc", str(args.ipc), "--size", str(args.size), "--batch-syn", str(args.batch_syn),
           "--iters", str(args.iters), "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"mode": mode, "steps": steps, "error": out.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds); prints, writes only with --out")
    p.add_argument("--steps", default="10,20,40,80", help="comma-separated syn_steps")
    p.add_argument("--modes", default="tesla,unrolled")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--size", type=int, default=28, help="image side")
    p.add_argument("--batch-syn", type=int, default=0, help="images per student step (0: all)")
    p.add_argument("--iters", type=int, default=2, help="timed outer iterations per configuration")
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory-fraction", type=float, default=0.7,
                   help="skip a configuration predicted to need more than this share of available memory")
    p.add_argument("--out", default=None, help="markdown file (default benchmarks/results/datm_memory.md; "
                                              "none with --quick)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="tesla", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.steps = int(args.steps)
        child(args)
        return
    if args.quick:
        args.steps, args.width, args.ipc, args.size, args.iters = "2,4,8", 8, 2, 16, 1
    steps_list = [int(s) for s in args.steps.split(",")]
    modes = [m for m in args.modes.split(",") if m]

    from ddlnl.report import markdown_table, write_result

    rows, results = [], {}
    load = os.getloadavg()[0]
    for mode in modes:
        done: list[dict] = []
        for steps in steps_list:
            guess = predicted_peak(done, steps)
            limit = args.memory_fraction * available_mib()
            if args.device == "cpu" and guess is not None and guess > limit:
                rows.append([mode, steps, "-", "-", "-", f"skipped: predicted {guess / 1024:.1f} GiB > "
                                                        f"{limit / 1024:.1f} GiB ({args.memory_fraction:.0%} of available)"])
                continue
            print(f"{mode} syn_steps={steps} ...", file=sys.stderr, flush=True)
            r = run_one(args, mode, steps)
            if "error" in r:
                rows.append([mode, steps, "-", "-", "-", f"failed: {r['error'][0]}"])
                continue
            done.append(r)
            results[(mode, steps)] = r
            rows.append([mode, steps, f"{r['peak_mib']:,.0f}", f"{r['peak_mib'] - r['baseline_mib']:,.0f}",
                         f"{r['seconds']:.2f}", ""])
    table = markdown_table(["gradient", "syn_steps", "peak memory (MiB)", "above 1-step baseline (MiB)",
                            "s / outer iteration", "note"], rows)
    lo, hi = min(steps_list), max(steps_list)
    verdict = ""
    if ("tesla", lo) in results and ("tesla", hi) in results:
        ratio = results[("tesla", hi)]["peak_mib"] / results[("tesla", lo)]["peak_mib"]
        verdict = (f"TESLA peak at {hi} steps / at {lo} steps: {ratio:.2f}x (target <= 1.25x): "
                   f"{'met' if ratio <= 1.25 else 'NOT met'}.")
    params = next(iter(results.values()))["params"] if results else "?"
    memory_kind = "torch.cuda.max_memory_allocated" if args.device != "cpu" else "peak RSS of a fresh process (getrusage)"
    notes = (f"ConvNet-3 width {args.width}, instance norm ({params} parameters), input 1x{args.size}x{args.size}, "
             f"10 classes, IPC {args.ipc} ({10 * args.ipc} synthetic images, batch_syn "
             f"{args.batch_syn or 'all'}), per-sample DSA, soft labels learned; device {args.device}; memory = "
             f"{memory_kind}; time = mean of {args.iters} outer iterations after a 1-step warm-up. "
             f"Load average at start: {load:.2f} (the machine may be shared; times scale with it).\n\n{verdict}")
    print(table + "\n\n" + notes)
    out = args.out or (None if args.quick else RESULTS / "datm_memory.md")
    if out:
        write_result(out, "DATM matching gradient: TESLA vs unrolled, memory and time", table, notes)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
