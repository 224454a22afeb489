"""Seconds per outer iteration of every distiller, and of evaluation, on one device, at the study's
CIFAR-10 configuration (3 x 32 x 32, ConvNet-3 width 128 instance norm, IPC 10).

    python benchmarks/bench_device.py [--device auto] [--rows dm,dm-bf16,datm20,datm80,dance,rcig,epoch,eval]
                                      [--iters 4] [--out benchmarks/results/device_<name>.md]

Made for a lent GPU machine (``benchmarks/device_check.sh`` runs it there), where no CPU table can
say what CUDA costs; on a CPU, ``--quick`` (width 16, 2 iterations) checks that it runs. The rows
are ddlnl's own loops only: the study's code is compared in ``bench_vs_reference.py``.

What runs: each row in its own subprocess (so a row's peak memory is its own), on a fixture of
random tensors of CIFAR-10's shape, 300 images per class (time and memory do not depend on pixel
values; DM and DANCE draw 256 real images per class, DATM's and RCIG's real batches are smaller).
The first iteration is a warm-up (CUDA kernels, caches) and is not counted; a row's seconds are
the median of the others. On CUDA every iteration mark synchronises the device first.

- ``dm`` / ``dm-bf16``: ``methods.dm.distill`` (batch_real 256, DSA), float32 / bfloat16 autocast;
- ``datm20`` / ``datm80``: ``methods.datm.distill`` with the TESLA gradient (batch_syn 100, learned
  soft labels, syn_steps 20 / 80), on 2 experts of 3 epochs trained on 500 of the images;
- ``dance``: ``methods.dance.distill`` (2 pre-trained models of 1 epoch);
- ``rcig``: ``methods.rcig.distill`` at the published config (pool of 30, 20 inner and 20
  Hessian-inverse steps, flips, width doubling), with the inner/Hessian lrs given (0.0001 both),
  so that the lr search is not timed;
- ``epoch``: one epoch of an FTD expert (GSAM rho 0.01, alpha 0.3, adaptive; batch 256, DSA) on
  the 3,000 images;
- ``eval``: 5 evaluation runs of an IPC 10 set (100 images) for ``--eval-epochs`` epochs, one after
  another vs trained together (``train.evaluate(together=...)``); seconds are per epoch of all 5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_reference import Clock, _short_experts, timed_iter  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROWS = ("dm", "dm-bf16", "datm20", "datm80", "dance", "rcig", "epoch", "eval")


class SyncClock(Clock):
    """Clock whose marks wait for the device's queued work first."""

    def mark(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        super().mark()

    def end(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        super().end()


def fixture(per_class: int, seed: int = 0):
    import torch

    from ddlnl.data import LabeledTensors

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(per_class)
    return LabeledTensors(torch.randn(len(labels), 3, 32, 32, generator=g), labels)


def child(a) -> None:
    import torch

    from ddlnl.utils import resolve_device

    device = resolve_device(a.device)
    train = fixture(300)
    clock = SyncClock()
    width = a.width
    if a.row in ("dm", "dm-bf16"):
        from ddlnl.methods import dm

        dm.progress_bar = timed_iter(clock)
        cfg = dm.DMConfig(iterations=a.iters, width=width, batch_real=256,
                          precision="bf16" if a.row == "dm-bf16" else "fp32")
        dm.distill(train, 10, cfg, seed=0, num_classes=10, device=device)
    elif a.row.startswith("datm"):
        from ddlnl.methods import datm

        datm.progress_bar = timed_iter(clock)
        _short_experts(datm)
        cfg = datm.DATMConfig(
            iterations=a.iters, syn_steps=20 if a.row == "datm20" else 80, batch_syn=100, expert_epochs=2,
            min_start_epoch=0, current_max_start_epoch=2, max_start_epoch=2, num_experts=2, expert_train_epochs=3,
            width=width, zca=False, init="real", cache_experts=False, gradient="tesla")
        datm.distill(train, 10, cfg, seed=0, num_classes=10, device=device)
    elif a.row == "dance":
        from ddlnl.methods import dance

        dance.progress_bar = timed_iter(clock)
        _short_experts(dance)
        cfg = dance.DANCEConfig(iterations=a.iters, width=width, num_pretrained=2, pretrain_epochs=1,
                                cache_experts=False)
        dance.distill(train, 10, cfg, seed=0, num_classes=10, device=device)
    elif a.row == "rcig":
        from ddlnl.methods.rcig import loop as rcig_loop
        from ddlnl.methods import rcig

        rcig_loop.progress_bar = timed_iter(clock)
        cfg = rcig.RCIGConfig(iterations=a.iters, width=width, batch_real=1024 if not a.quick else 64,
                              inner_lr=1e-4, hinv_lr=1e-4)
        rcig.distill(train, 10, cfg, seed=0, num_classes=10, device=device)
    elif a.row == "epoch":
        from ddlnl import experts

        cfg = experts.ExpertConfig(num_experts=1, epochs=a.iters, width=width, sam_rho=0.01, sam_alpha=0.3,
                                   sam_adaptive=True)
        clock.mark()
        experts.train_expert(train, cfg, index=0, seed=0, num_classes=10, device=device)
        clock.end()
        result = clock.result()
        result["times"] = [t / a.iters for t in result["times"]]  # per epoch
        print("RESULT " + json.dumps(result), flush=True)
        return
    elif a.row == "eval":
        from ddlnl.train import TrainConfig, evaluate

        syn = train.subset(torch.cat([torch.arange(c * 300, c * 300 + 10) for c in range(10)]))
        test = fixture(20, seed=1)
        cfg = TrainConfig(epochs=a.eval_epochs, width=width)
        times = {}
        for together in (False, True):  # warm-up of both paths, not timed
            evaluate(syn, test, cfg, num_classes=10, n_runs=5, seed=0, device=device, together=together)
        for together in (False, True, False, True):
            clock.mark()
            evaluate(syn, test, cfg, num_classes=10, n_runs=5, seed=0, device=device, together=together)
            clock.mark()
            times.setdefault(together, []).append((clock.marks[-1] - clock.marks[-2]) / a.eval_epochs)
        clock.end()
        result = clock.result()
        result["times"] = times[False]
        result["together"] = times[True]
        print("RESULT " + json.dumps(result), flush=True)
        return
    print("RESULT " + json.dumps(clock.result()), flush=True)


def run_row(a, row: str) -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", row, "--device", a.device, "--width",
           str(a.width), "--iters", str(a.iters), "--eval-epochs", str(a.eval_epochs)] + (["--quick"] if a.quick else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        print(f"{row}: FAILED (exit {proc.returncode}):\n{tail}", flush=True)
        return {"row": row, "error": tail.splitlines()[-1] if tail else f"exit {proc.returncode}"}
    out = json.loads(lines[-1][len("RESULT "):])
    times = out["times"]
    counted = times[1:] if len(times) > 1 and row not in ("epoch", "eval") else times
    out.update(row=row, per_iter=statistics.median(counted), wall=time.perf_counter() - t0)
    if row == "eval":
        out["per_iter_together"] = statistics.median(out["together"])
    print(f"{row}: {out['per_iter']:.3f} s/it (all {', '.join(f'{t:.3f}' for t in times)}), "
          f"peak {out['peak_bytes'] / 2**20:.0f} MiB", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--iters", type=int, default=4, help="iterations per row; the first is a warm-up")
    ap.add_argument("--eval-epochs", type=int, default=20)
    ap.add_argument("--width", type=int, default=128, help="ConvNet width (the study's: 128)")
    ap.add_argument("--quick", action="store_true", help="width 16, 2 iterations: a check that every row runs")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.width, a.iters, a.eval_epochs = 16, 2, 2
    if a.child:
        a.row = a.child
        child(a)
        return
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"error: unknown rows {', '.join(unknown)}: use some of {', '.join(ROWS)}")
    import torch

    from ddlnl.report import write_result
    from ddlnl.utils import resolve_device

    device = resolve_device(a.device)
    name = torch.cuda.get_device_name(device).split()[-1].lower() if device.type == "cuda" else "cpu"
    results = [run_row(a, r) for r in rows]
    lines = ["| row | s / iteration | peak memory (MiB) | iterations timed | row wall (s) |", "|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | failed: {r['error']} | - | - | - |")
            continue
        peak = r["peak_bytes"] / 2 ** 20
        if r["row"] == "eval":
            lines.append(f"| eval, 5 runs one after another (per epoch) | {r['per_iter']:.3f} | {peak:.0f} | 2 | {r['wall']:.0f} |")
            lines.append(f"| eval, 5 runs together (per epoch) | {r['per_iter_together']:.3f} "
                         f"(**{r['per_iter'] / r['per_iter_together']:.2f}x**) | {peak:.0f} | 2 | - |")
            continue
        n = len(r["times"]) - (1 if r["row"] != "epoch" and len(r["times"]) > 1 else 0)
        lines.append(f"| {r['row']} | {r['per_iter']:.3f} | {peak:.0f} | {n} | {r['wall']:.0f} |")
    notes = (f"Device: {device}; width {a.width}, IPC 10, {a.iters} iterations per row (the first a warm-up); "
             "peak memory: torch.cuda.max_memory_allocated on CUDA, the largest resident set on a CPU. "
             "Written by benchmarks/bench_device.py (its docstring says what each row runs).")
    body = "\n".join(lines)
    print(body)
    if not a.quick or a.out:
        out = a.out or RESULTS / f"device_{name}.md"
        write_result(out, f"Per-iteration cost on {name}", body, notes)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
