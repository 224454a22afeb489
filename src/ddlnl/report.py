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
    return (f"{cpu}, {os.cpu_count()} cores{mem}{gpu}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


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
