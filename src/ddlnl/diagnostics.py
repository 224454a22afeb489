"""Is a distillation run degenerate? Checks on what a distiller leaves in its synthetic set.

A distiller can finish without error and still have done nothing useful: DATM on 8x8 digits with
weak experts skipped 71 of its 72 iterations at the loss threshold while its matching loss rose
from 0.80 to 4.08, and its set scored 18% where random subsets scored 61%. Nothing said so. These
checks read only the synthetic set (its images and the log its method records in ``meta``) and
return one short sentence per symptom, which ``ddlnl run`` prints, writes into the cell's record
and notes under its table.

Thresholds (development setting: the digits demo, DM and DATM at 60% symmetric noise; chosen so
that the demo's DM runs raise nothing and the DATM run above raises the first two):

* skipped: more than half of the iterations skipped (``meta["skipped"]`` of the config's
  ``iterations``);
* rising objective: the median of the last fifth of the logged objective more than twice the
  median of the first fifth (at least 5 logged values);
* saturated images: more than half of the pixels beyond the valid pixel range by more than one
  full range (below -1 or above 2 in [0, 1] pixel units), or any non-finite pixel.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .synthetic import SyntheticSet

SKIP_FRACTION = 0.5
RISE_FACTOR = 2.0
MIN_LOGGED = 5
SATURATION_FRACTION = 0.5
SATURATION_MARGIN = 1.0  # pixel-range units beyond [0, 1]


def _median(values: Sequence[float]) -> float:
    vals = sorted(v for v in values if math.isfinite(v))
    if not vals:
        return float("nan")
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])


def skipped_warning(meta: dict) -> str | None:
    """``"71 of 72 iterations skipped (matching loss above threshold 1.0)"`` when more than half were."""
    skipped = meta.get("skipped")
    iterations = (meta.get("config") or {}).get("iterations")
    if not isinstance(skipped, (int, float)) or not iterations:
        return None
    if skipped > SKIP_FRACTION * iterations:
        threshold = (meta.get("config") or {}).get("threshold")
        why = f" (objective above the threshold {threshold})" if threshold is not None else ""
        return f"{int(skipped)} of {int(iterations)} iterations skipped{why}"
    return None


def rising_warning(losses: Sequence[float] | None) -> str | None:
    """``"objective rose from 0.80 to 4.08"`` when the end of the log is > RISE_FACTOR x its start."""
    if not losses or len(losses) < MIN_LOGGED:
        return None
    fifth = max(1, len(losses) // 5)
    first, last = _median(losses[:fifth]), _median(losses[-fifth:])
    if not (math.isfinite(first) and math.isfinite(last)):
        if any(not math.isfinite(v) for v in losses[-fifth:]):
            return "objective became non-finite"
        return None
    if first > 0 and last > RISE_FACTOR * first:
        return f"objective rose from {first:.3g} to {last:.3g}"
    return None


def saturation_warning(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> str | None:
    """``"63% of pixels far outside the pixel range"`` when the images left the data's range."""
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all():
        return "non-finite pixels in the synthetic images"
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    pix = x * s + m
    far = ((pix < -SATURATION_MARGIN) | (pix > 1 + SATURATION_MARGIN)).float().mean().item()
    if far > SATURATION_FRACTION:
        return f"{100 * far:.0f}% of pixels more than a full pixel range outside [0, 1]"
    return None


def degenerate_run_warnings(syn: SyntheticSet, mean: Sequence[float], std: Sequence[float], *,
                            images: torch.Tensor | None = None) -> list[str]:
    """Every symptom of a degenerate distillation run in ``syn`` (empty when none).

    Args:
        syn: the distiller's output; ``meta`` may carry ``skipped``, ``config.iterations`` and
            ``loss`` (the logged objective, one value per logged iteration).
        mean, std: the dataset's per-channel normalisation, to read images in pixel units.
        images: ``syn``'s images in the normalised space when they are stored otherwise (a ZCA-space
            set un-whitened: :func:`ddlnl.synthetic.display_images`); default ``syn.images``.
    """
    found = [skipped_warning(syn.meta), rising_warning(syn.meta.get("loss")),
             saturation_warning(syn.images if images is None else images, mean, std)]
    return [w for w in found if w]
