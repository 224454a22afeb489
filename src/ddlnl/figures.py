"""Figures of tensors and curves: synthetic-image grids (one row per class) and training curves.

Used by ``ddlnl run`` (a figure per synthetic set, the baselines' curves) and by the sweep report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .utils import atomic_output


# Share of pixels outside [0, 1] above which a clamped display would mostly show flat black or
# white (DM's digits sets: 82%); such grids are shown with a per-image percentile stretch instead.
CLAMP_LIMIT = 0.05


def display_pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   normalise: str = "auto") -> tuple[torch.Tensor, str]:
    """Images in [0, 1] for display, and a note saying how they were mapped.

    ``clamp``: de-normalised pixels clamped to [0, 1] (faithful where the images stay in range).
    ``percentile``: each image (all its channels together) stretched from its 1st to its 99th
    percentile. ``auto``: ``clamp`` unless more than ``CLAMP_LIMIT`` of the pixels lie outside [0, 1].
    """
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    pix = images.detach().cpu().float() * s + m
    outside = float(((pix < 0) | (pix > 1)).float().mean()) if pix.numel() else 0.0
    if normalise == "auto":
        normalise = "percentile" if outside > CLAMP_LIMIT else "clamp"
    if normalise == "clamp":
        note = "pixels clamped to [0, 1]" + (f" ({100 * outside:.0f}% outside)" if outside > 0.005 else "")
        return pix.clamp(0, 1), note
    if normalise != "percentile":
        raise ValueError(f"normalise={normalise!r}: use auto, clamp or percentile")
    flat = pix.flatten(1)
    lo = torch.quantile(flat, 0.01, dim=1).view(-1, 1, 1, 1)
    hi = torch.quantile(flat, 0.99, dim=1).view(-1, 1, 1, 1)
    shown = ((pix - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    return shown, f"each image stretched to its own 1st-99th percentile ({100 * outside:.0f}% of pixels outside [0, 1])"


def image_grid_png(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                   mean: Sequence[float], std: Sequence[float], path: str | Path, *,
                   title: str = "", max_per_class: int = 10, soft: bool = False,
                   normalise: str = "auto", space_note: str = "") -> Path:
    """A PNG with one row per class of synthetic images (the study's Figure 3 layout).

    Rows are the classes in index order, top to bottom; the caption under the title says so, how
    pixels were mapped for display (:func:`display_pixels`) and, for learned (soft) labels, that an
    image's row is the argmax of its label.

    Args:
        images: float ``N x C x H x W`` in normalised space (denormalised with ``mean``/``std``).
        labels: ``int64`` N class of each image (argmax for soft labels).
        classes: names, index = class.
        max_per_class: columns shown per row.
        soft: the set has learned soft labels (rows are then sorted by argmax label).
        normalise: ``auto``, ``clamp`` or ``percentile`` (see :func:`display_pixels`).
        space_note: how the images were taken to the normalised space, added to the caption
            (:func:`ddlnl.synthetic.display_images`: a ZCA-space set un-whitened).
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pix, display_note = display_pixels(images, mean, std, normalise)
    k = len(classes)
    per_class = [torch.nonzero(labels == c).flatten()[:max_per_class] for c in range(k)]
    cols = max(1, max(len(p) for p in per_class))
    width = max(0.9 * cols + 1.6, 4.2)  # wide enough for the caption even at IPC 1
    rows_note = ("one row per class in class-index order (top to bottom); "
                 + ("learned soft labels: each image is in the row of its argmax label; " if soft else "")
                 + (f"{space_note}; " if space_note else "") + display_note)
    chars = int(width * 15)  # ~15 characters per inch at 7 pt
    caption = "\n".join(textwrap.wrap(title, int(width * 11))) if title else ""
    note = "\n".join(textwrap.wrap(rows_note, chars))
    head_lines = caption.count("\n") + 1 + note.count("\n") + 1 if title else note.count("\n") + 1
    head = 0.18 * head_lines + 0.15
    fig, axes = plt.subplots(k, cols, figsize=(width, 0.9 * k + 0.4 + head), squeeze=False)
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
                name = str(classes[c])[:12]
                ax.set_ylabel(name if name == str(c) else f"{c}: {name}", rotation=0, ha="right", va="center",
                              fontsize=8)
    total_h = fig.get_figheight()
    top = 1 - head / total_h
    if title:
        fig.text(0.5, 1 - 0.08 / total_h, caption, ha="center", va="top", fontsize=10)
    fig.text(0.5, 1 - (0.1 + 0.2 * (caption.count("\n") + 1 if title else 0)) / total_h, note, ha="center",
             va="top", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0, 1, top))
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 110) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _plt().close(fig)
    return path


def _mean_curve(histories: Sequence[Sequence[dict]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and the across-runs mean of ``key`` where every run recorded it."""
    per_epoch: dict[int, list[float]] = {}
    for h in histories:
        for e in h:
            if key in e:
                per_epoch.setdefault(int(e["epoch"]), []).append(float(e[key]))
    epochs = np.array(sorted(per_epoch))
    return epochs, np.array([np.mean(per_epoch[e]) for e in epochs])


def curves_figure(curves: dict[str, dict[str, Sequence[Sequence[dict]]]], path: str | Path) -> Path | None:
    """Training curves of the full-noisy baselines, one panel per data setting: clean test accuracy
    (solid; on the curve subsample), fit of the noisy training labels (dashed; converged baseline)
    and noisy validation accuracy (dotted; early-stop baseline, what it selects on), the mean over
    runs. ``curves``: panel title -> {"baseline" | "baseline_early_stop": histories}. None when no
    curve has more than one point."""
    plt = _plt()
    panels = {t: c for t, c in curves.items() if any(len(h) > 1 for hs in c.values() for h in hs)}
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows + 0.5), squeeze=False)
    lines = (("baseline", "test_acc", "-", "C0", "converged: clean test"),
             ("baseline", "noisy_train_acc", "--", "C0", "converged: noisy training labels fitted"),
             ("baseline_early_stop", "test_acc", "-", "C1", "early stop: clean test"),
             ("baseline_early_stop", "noisy_val_acc", ":", "C1", "early stop: noisy validation (selects)"))
    for ax, (title, by_name) in zip(axes.flat, panels.items()):
        for name, key, style, col, label in lines:
            epochs, ys = _mean_curve(by_name.get(name, []), key)
            if len(epochs) > 1:
                ax.plot(epochs, 100 * ys, linestyle=style, color=col, label=label, linewidth=1.3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        fig.delaxes(ax)
    handles: dict[str, Any] = {}
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.55 / fig.get_figheight() + 0.02, 1, 1))
    return _save(fig, Path(path))
