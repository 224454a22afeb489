"""Tables and figures people read: result tables and synthetic-image grids."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .utils import atomic_output


def image_grid_png(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                   mean: Sequence[float], std: Sequence[float], path: str | Path, *,
                   title: str = "", max_per_class: int = 10) -> Path:
    """A PNG with one row per class of synthetic images (the study's Figure 3 layout).

    Args:
        images: float ``N x C x H x W`` in normalised space (denormalised with ``mean``/``std``).
        labels: ``int64`` N class of each image (argmax for soft labels).
        classes: names, index = class.
        max_per_class: columns shown per row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    pix = (images.detach().cpu().float() * s + m).clamp(0, 1)
    k = len(classes)
    per_class = [torch.nonzero(labels == c).flatten()[:max_per_class] for c in range(k)]
    cols = max(1, max(len(p) for p in per_class))
    fig, axes = plt.subplots(k, cols, figsize=(0.9 * cols + 1.6, 0.9 * k + 0.4), squeeze=False)
    for c in range(k):
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(per_class[c]):
                img = pix[per_class[c][j]].permute(1, 2, 0).numpy()
                if img.shape[2] == 1:
                    ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(img, interpolation="nearest")
            if j == 0:
                ax.set_ylabel(str(classes[c])[:14], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_acc(mean: float, std: float) -> str:
    if mean is None or np.isnan(mean):
        return "-"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def fmt_delta(value: float | None) -> str:
    if value is None or np.isnan(value):
        return "-"
    return f"{100 * value:+.2f}"


def machine_summary() -> str:
    """One line describing this machine: CPU model, cores, memory, torch version, GPU if any."""
    import os
    import platform

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    try:  # timings mean little without knowing what else ran: say so in every result
        load = ", load average (1/5/15 min) " + "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = ""
    return (f"{cpu}, {os.cpu_count()} cores{mem}{gpu}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}{load}")


def write_result(path: str | Path, title: str, body: str, notes: str = "") -> Path:
    """Write a benchmark result as markdown with the machine and date stated."""
    import datetime

    from .utils import atomic_write_text

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"# {title}\n\nMachine: {machine_summary()}  \nRun: {stamp}\n\n{body}\n"
    if notes:
        text += f"\n{notes}\n"
    atomic_write_text(path, text)
    return Path(path)


def _aggregate(records: Sequence[dict]) -> dict[tuple, dict]:
    """(dataset, noise, method, ipc) -> mean/std over every run of every seed."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        c = r["cell"]
        groups.setdefault((c["dataset"], c["noise"], c["method"], c["ipc"]), []).extend(r.get("accs", []))
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for k, v in groups.items() if v}


def _noise_order(noise: str) -> tuple:
    kind, _, rest = noise.partition(":")
    try:
        return (kind, float(rest))
    except ValueError:
        return (kind, 0.0, rest)


def write_report(root: str | Path, out: str | Path | None = None, grid=None) -> list[Path]:
    """The study's figures and a table from a sweep's result records only.

    Writes into ``out`` (default ``ROOT/report``): ``accuracy_vs_ipc.png`` (one panel per dataset and
    method, one line per noise setting, the converged full-noisy baseline of the same setting as a
    dashed line of the same colour; missing cells are gaps, never zeros), ``table.md`` (accuracy
    per IPC beside both baselines) and ``grids/*.png`` (synthetic images, one row per class, at the
    largest IPC <= 10 of each dataset, method and noise).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .results import load_records

    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    records = load_records(root, grid)
    if not records:
        from .errors import UserError

        raise UserError(f"{root} has no finished records yet: run `ddlnl sweep` first")
    agg = _aggregate(records)
    datasets = sorted({k[0] for k in agg})
    methods = sorted({k[2] for k in agg if not k[2].startswith("baseline")}, key=lambda m: (m != "random", m))
    noises = sorted({k[1] for k in agg}, key=_noise_order)
    ipcs = sorted({k[3] for k in agg if k[3]})
    written: list[Path] = []

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # One panel per (dataset, method), wrapped at 4 per row; a dataset's panels share the y axis.
    ncols = max(1, min(4, len(methods)))
    rows_per_ds = -(-max(1, len(methods)) // ncols)
    fig, grid_axes = plt.subplots(len(datasets) * rows_per_ds, ncols,
                                  figsize=(4.0 * ncols, 3.4 * len(datasets) * rows_per_ds), squeeze=False)
    axes = []
    for i in range(len(datasets)):
        panels = [grid_axes[i * rows_per_ds + j // ncols][j % ncols] for j in range(rows_per_ds * ncols)]
        for ax in panels[len(methods):]:
            fig.delaxes(ax)
        panels = panels[:max(1, len(methods))]
        for ax in panels[1:]:
            ax.sharey(panels[0])
        axes.append(panels)
    early_drawn = False
    for i, ds in enumerate(datasets):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            for k, noise in enumerate(noises):
                col = colours[k % len(colours)]
                ys = [100 * agg[(ds, noise, m, ipc)]["mean"] if (ds, noise, m, ipc) in agg else np.nan for ipc in ipcs]
                es = [100 * agg[(ds, noise, m, ipc)]["std"] if (ds, noise, m, ipc) in agg else np.nan for ipc in ipcs]
                if np.all(np.isnan(ys)):
                    continue  # no results for this noise here: no baselines either (less clutter)
                ax.errorbar(ipcs, ys, yerr=es, marker="o", color=col, capsize=2, label=noise)
                base = agg.get((ds, noise, "baseline", 0))
                if base:
                    ax.axhline(100 * base["mean"], color=col, linestyle="--", linewidth=1)
                early = agg.get((ds, noise, "baseline_early_stop", 0))
                if early:
                    ax.axhline(100 * early["mean"], color=col, linestyle=":", linewidth=1)
                    early_drawn = True
            ax.set_xscale("log")
            ax.set_xticks(ipcs, [str(v) for v in ipcs])
            ax.minorticks_off()
            ax.set_title(f"{ds}: {m}", fontsize=10)
            ax.set_xlabel("images per class")
            ax.grid(alpha=0.3)
        axes[i][0].set_ylabel("clean test accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes:
        for ax in row:
            h, lab = ax.get_legend_handles_labels()
            if len(h) > len(handles):
                handles, labels = h, lab
    if handles:
        title = "noise (dashed: full noisy set, converged" + ("; dotted: early stop)" if early_drawn else ")")
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, title=title,
                   title_fontsize=8)
    fig.tight_layout(rect=(0, (0.12 / (len(datasets) * rows_per_ds)) if handles else 0, 1, 1))
    path = out / "accuracy_vs_ipc.png"
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    written.append(path)

    header = ["dataset", "noise", "method", *[f"IPC {i}" for i in ipcs], "full noisy (converged)", "early stop"]
    rows = []
    for ds in datasets:
        for noise in noises:
            base = agg.get((ds, noise, "baseline", 0))
            early = agg.get((ds, noise, "baseline_early_stop", 0))
            for m in methods:
                if not any((ds, noise, m, ipc) in agg for ipc in ipcs):
                    continue
                cells = [fmt_acc(agg[(ds, noise, m, ipc)]["mean"], agg[(ds, noise, m, ipc)]["std"])
                         if (ds, noise, m, ipc) in agg else "-" for ipc in ipcs]
                rows.append([ds, noise, m, *cells, fmt_acc(base["mean"], base["std"]) if base else "-",
                             fmt_acc(early["mean"], early["std"]) if early else "-"])
    table = ("Clean-test accuracy (%) at the end of training, mean ± std over all evaluation runs and seeds; "
             "'-' = no record.\n\n" + markdown_table(header, rows) + "\n")
    from .utils import atomic_write_text

    atomic_write_text(out / "table.md", table)
    written.append(out / "table.md")

    from .synthetic import load_synthetic

    best: dict[tuple, dict] = {}
    for r in records:
        c = r["cell"]
        if c["method"].startswith("baseline") or not c["ipc"] or c["ipc"] > 10:
            continue
        k = (c["dataset"], c["method"], c["noise"])
        if k not in best or c["ipc"] > best[k]["cell"]["ipc"]:
            best[k] = r
    for (ds, m, noise), r in sorted(best.items()):
        syn_rel = r.get("artifacts", {}).get("synthetic")
        if not syn_rel or not (root / syn_rel).exists():
            continue
        syn = load_synthetic(root / syn_rel)
        classes = syn.meta.get("classes") or [str(c) for c in range(syn.num_classes)]
        p = out / "grids" / f"{ds}-{m}-{noise.replace(':', '-')}-ipc{r['cell']['ipc']}.png"
        image_grid_png(syn.images, syn.hard_labels, classes, syn.meta.get("mean", [0.0]), syn.meta.get("std", [1.0]),
                       p, title=f"{m}, IPC {r['cell']['ipc']}, {ds}, {noise}")
        written.append(p)
    return written
