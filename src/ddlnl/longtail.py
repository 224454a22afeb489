"""Long-tailed (imbalanced) noisy data, per-class IPC budgets, and per-class accuracy.

Long-tailed construction: the exponential profile of Cao et al. (NeurIPS 2019, "Learning
imbalanced datasets with label-distribution-aware margin loss", LDAM) and Cui et al. (CVPR 2019,
"Class-balanced loss based on effective number of samples"): class ``c`` of ``C`` keeps

    n_c = floor(n_max * r^(-c / (C - 1))),   r = n_max / n_min (the imbalance ratio),

so class 0 is the head (``n_max``) and class ``C - 1`` the tail (``n_max / r``). The kept images
are a seeded random choice within each class.

Order with label noise: **imbalance the clean set first, then apply the noise** (what a user's
long-tailed data with annotation errors looks like; ``ddlnl run --imbalance R``). Consequence:
under symmetric noise a tail class receives flips from every head class, so the samples
*labelled* as a tail class can be mostly wrong (at ``r = 100``, rate 0.4 and ``n_max = 500`` a
tail class keeps 3 of its 5 images and receives about 60 flips).

Per-class IPC budgets (:func:`ipc_budget`), each summing exactly to the requested total, each
class at least 1 image and at most its given count:

* ``uniform``: ``total / C`` per class (the usual IPC);
* ``proportional``: proportional to the given (noisy) class counts;
* ``clean``: proportional to the *estimated clean count* of each given class,
  ``n_k - E[wrong labels in class k]`` (:meth:`ddlnl.estimate.NoiseEstimate.expected_wrong_per_class`):
  the study's Corollary I applied per class (a class's useful IPC grows with its clean samples,
  not with its label count).

Per-class accuracy: :func:`per_class_accuracy` and :func:`group_accuracy` (head, middle and tail
thirds of the classes ordered by training count, largest first; ties by class index).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["BUDGET_RULES", "thirds_text", "longtail_counts", "longtail_indices", "ipc_budget", "per_class_accuracy",
           "class_thirds", "group_accuracy"]

BUDGET_RULES = ("uniform", "proportional", "clean")


def longtail_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """``floor(n_max * ratio^(-c / (C - 1)))`` for ``c = 0..C-1`` (class 0 the head).

    Raises:
        ConfigError: ``ratio < 1``, fewer than 2 classes, or a tail class with no image.
    """
    if num_classes < 2 or ratio < 1 or n_max < 1:
        raise ConfigError(f"long tail: need >= 2 classes, n_max >= 1 and ratio >= 1 (got {num_classes}, {n_max}, {ratio})")
    # The small epsilon keeps exact products (e.g. 1000 * 100^-1 = 10) from flooring to 9.
    counts = [int(math.floor(n_max * ratio ** (-c / (num_classes - 1)) + 1e-9)) for c in range(num_classes)]
    if counts[-1] < 1:
        raise ConfigError(f"long tail: ratio {ratio:g} leaves the tail class no image with {n_max} in the head: "
                          f"use a ratio <= {n_max}")
    return counts


def longtail_indices(labels: torch.Tensor, ratio: float, *, seed: int, n_max: int | None = None) -> torch.Tensor:
    """Sorted indices of a long-tailed subset of a labelled set (labels ``N`` int64, clean).

    ``n_max`` defaults to the smallest class's count (so every class can supply its share); class
    ``c`` keeps :func:`longtail_counts` ``[c]`` images chosen at random (``seed``).
    """
    from .utils import generator

    k = int(labels.max()) + 1
    have = torch.bincount(labels, minlength=k)
    n_max = int(have.min()) if n_max is None else int(n_max)
    counts = longtail_counts(n_max, k, ratio)
    if any(int(h) < n for h, n in zip(have, counts)):
        raise ConfigError(f"long tail: n_max={n_max} exceeds some class's {int(have.min())} images: lower n_max")
    g = generator(seed)
    keep = []
    for c, n in enumerate(counts):
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(idx.numel(), generator=g)[:n]])
    return torch.sort(torch.cat(keep)).values


def _largest_remainder(weights: np.ndarray, total: int, low: np.ndarray, high: np.ndarray) -> list[int]:
    """Integers in ``[low, high]`` summing to ``total``, proportional to ``weights`` as far as the
    bounds allow (largest-remainder rounding; capped classes' surplus goes to the others)."""
    k = len(weights)
    out = low.astype(np.int64).copy()
    free = np.ones(k, dtype=bool)
    left = total - int(out.sum())
    while left > 0:
        w = np.where(free, np.maximum(weights, 0.0), 0.0)
        if w.sum() <= 0:
            w = free.astype(np.float64)
        share = w / w.sum() * left
        add = np.minimum(np.floor(share).astype(np.int64), high - out)
        if add.sum() == 0:  # hand out single images to the largest remainders (ties: lower class)
            order = [c for c in np.argsort(-(share - np.floor(share)), kind="stable") if free[c]]
            for c in order[:left]:
                out[c] += 1
            left -= min(left, len(order))
        else:
            out += add
            left -= int(add.sum())
        free = out < high
    return out.tolist()


def ipc_budget(rule: str, total: int, given_counts: Sequence[int], *,
               clean_counts: Sequence[float] | None = None) -> list[int]:
    """Images per class for a total budget of ``total`` synthetic images.

    Args:
        rule: ``uniform``, ``proportional`` (to ``given_counts``) or ``clean`` (to ``clean_counts``).
        total: synthetic images in all (>= the number of classes).
        given_counts: images per given (noisy) class; also each class's upper bound.
        clean_counts: ``clean`` only: estimated clean images per given class.
    Returns:
        ``K`` ints, each in ``[1, given_counts[k]]``, summing to ``total``.
    """
    counts = np.asarray(given_counts, dtype=np.int64)
    k = len(counts)
    if rule not in BUDGET_RULES:
        raise ConfigError(f"budget rule {rule!r}: use one of {', '.join(BUDGET_RULES)}")
    if total < k or total > int(counts.sum()) or counts.min() < 1:
        raise ConfigError(f"budget: total {total} must be between the {k} classes and the {int(counts.sum())} images "
                          "(every class needs at least one image)")
    if rule == "uniform":
        weights = np.ones(k)
    elif rule == "proportional":
        weights = counts.astype(np.float64)
    else:
        if clean_counts is None or len(clean_counts) != k:
            raise ConfigError("budget rule clean needs the estimated clean count of every class")
        weights = np.clip(np.asarray(clean_counts, dtype=np.float64), 0.0, None)
    # Ideal shares with every class at >= 1, then integer rounding inside the bounds.
    return _largest_remainder(weights, total, np.ones(k, dtype=np.int64), counts)


def per_class_accuracy(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                       num_classes: int) -> list[float]:
    """Accuracy on the samples of each true class (``nan`` for a class with no sample)."""
    p = np.asarray(pred).reshape(-1)
    t = np.asarray(target).reshape(-1)
    out = []
    for c in range(num_classes):
        m = t == c
        out.append(float((p[m] == c).mean()) if m.any() else float("nan"))
    return out


def class_thirds(train_counts: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """Head, middle and tail classes: the classes ordered by training count (largest first,
    ties by class index), split into three near-equal parts (``numpy.array_split``; with 10
    classes: 4, 3, 3)."""
    order = sorted(range(len(train_counts)), key=lambda c: (-int(train_counts[c]), c))
    parts = np.array_split(np.asarray(order), 3)
    return tuple(sorted(int(c) for c in part) for part in parts)  # type: ignore[return-value]


def group_accuracy(per_class: Sequence[float], train_counts: Sequence[int]) -> dict[str, float]:
    """Mean per-class accuracy of the head, middle and tail thirds (:func:`class_thirds`)."""
    acc = np.asarray(per_class, dtype=np.float64)
    head, middle, tail = class_thirds(train_counts)
    return {name: float(np.nanmean(acc[g])) if len(g) else float("nan")
            for name, g in (("head", head), ("middle", middle), ("tail", tail))}


def thirds_text(record: dict, train_counts: Sequence[int] | None = None) -> str:
    """``"head/middle/tail"`` accuracies (%) of a result record's ``per_class`` (mean over its runs),
    or ``"-"`` for a record written before per-class accuracy was kept. Without ``train_counts``
    the classes are taken in index order (class 0 the head: :func:`longtail_indices`' order)."""
    runs = record.get("per_class") or []
    if not runs:
        return "-"
    per = np.nanmean(np.asarray(runs, dtype=np.float64), axis=0)
    counts = train_counts if train_counts is not None else list(range(len(per), 0, -1))
    g = group_accuracy(per, counts)
    return "/".join(f"{100 * g[k]:.1f}" for k in ("head", "middle", "tail"))
