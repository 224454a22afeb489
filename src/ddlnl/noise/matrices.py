"""Transition matrices ``T[i, j] = P(noisy = j | true = i)`` of the class-conditional kinds:
symmetric (exclusive or inclusive), pairflip, asymmetric (the published maps)."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from ..errors import UserError

from .spec import ASYMMETRIC_MAPS, _ASYMMETRIC_NUM_CLASSES, _ROW_SUM_TOL, _check_num_classes, _check_rate


# One-line warnings (logging's last-resort handler prints just the message to stderr).
_log = logging.getLogger("ddlnl.noise")
# --------------------------------------------------------------------------------------------
# Transition matrices
# --------------------------------------------------------------------------------------------


def symmetric_matrix(num_classes: int, rate: float, inclusive: bool = False) -> np.ndarray:
    """Symmetric (uniform) noise, ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1.

    Exclusive (default, the reference code's definition): a label is flipped with probability
    ``rate`` to one of the *other* ``K - 1`` classes, so ``T[i, i] = 1 - rate`` and
    ``T[i, j] = rate / (K - 1)``. Valid for ``0 <= rate < (K - 1) / K``: at ``(K - 1) / K`` the
    matrix is uniform and beyond it the clean class is no longer the most likely label, so the
    clean labels are not identifiable.

    Inclusive: a label is resampled uniformly from all ``K`` classes with probability ``rate``,
    so ``T[i, i] = 1 - rate + rate / K`` and ``T[i, j] = rate / K``; the expected fraction of
    changed labels is ``rate * (K - 1) / K``. Valid for ``0 <= rate < 1``.

    Returns:
        float64 array ``K x K``.

    Raises:
        UserError: a rate outside the valid range (the message names the limit).
    """
    k = _check_num_classes(num_classes)
    rate = float(rate)
    if inclusive:
        _check_rate(rate, 1.0, "symmetric-inclusive noise")
        matrix = np.full((k, k), rate / k, dtype=np.float64)
        np.fill_diagonal(matrix, 1.0 - rate + rate / k)
    else:
        limit = (k - 1) / k
        _check_rate(
            rate,
            limit,
            f"symmetric noise with K={k}",
            "at (K-1)/K the clean class is no longer the most likely label: not identifiable",
        )
        matrix = np.full((k, k), rate / (k - 1), dtype=np.float64)
        np.fill_diagonal(matrix, 1.0 - rate)
    return matrix


def pairflip_matrix(num_classes: int, rate: float) -> np.ndarray:
    """Pair-flip noise (Han et al. 2018, Co-teaching): ``i -> (i + 1) mod K`` with prob ``rate``.

    ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1: ``T[i, i] = 1 - rate`` and
    ``T[i, (i + 1) mod K] = rate``. Valid for ``0 <= rate < 0.5``; at 0.5 the flipped class is
    as likely as the clean one.

    Returns:
        float64 array ``K x K``.
    """
    k = _check_num_classes(num_classes)
    rate = float(rate)
    _check_rate(rate, 0.5, "pairflip noise", "from 0.5 on the flipped class dominates")
    return _map_matrix(k, {i: (i + 1) % k for i in range(k)}, rate)


def asymmetric_map(dataset_name: str, num_classes: int) -> dict[int, int]:
    """The class-conditional flip map ``{source: target}`` for a dataset.

    See :data:`ASYMMETRIC_MAPS` for the sources. For ``cifar100`` each fine class maps to the
    next fine class (ascending fine id, cyclic) within its *true* superclass, using
    ``ddlnl.data.CIFAR100_FINE_TO_COARSE`` (the real 20 coarse groups).

    Raises:
        UserError: no map for this dataset, or ``num_classes`` differs from the map's.
    """
    name = str(dataset_name).lower()
    if name not in _ASYMMETRIC_NUM_CLASSES:
        known = ", ".join(sorted(_ASYMMETRIC_NUM_CLASSES))
        raise UserError(
            f"no asymmetric map for {dataset_name}; use symmetric or pairflip, or a dataset "
            f"with a map ({known})"
        )
    expected = _ASYMMETRIC_NUM_CLASSES[name]
    if num_classes != expected:
        raise UserError(
            f"the asymmetric map for {name} is for {expected} classes, got {num_classes}"
        )
    if name == "cifar100":
        from ..data import CIFAR100_FINE_TO_COARSE  # lazy: data.py owns the official table

        return _next_within_group(CIFAR100_FINE_TO_COARSE)
    return dict(ASYMMETRIC_MAPS[name])


def _next_within_group(fine_to_coarse: Sequence[int]) -> dict[int, int]:
    """Map each fine id to the next fine id (ascending, cyclic) sharing its coarse group."""
    groups: dict[int, list[int]] = {}
    for fine, coarse in enumerate(fine_to_coarse):
        groups.setdefault(int(coarse), []).append(fine)
    mapping: dict[int, int] = {}
    for members in groups.values():
        if len(members) > 1:
            for position, fine in enumerate(members):
                mapping[fine] = members[(position + 1) % len(members)]
    return mapping


def asymmetric_matrix(dataset_name: str, num_classes: int, rate: float) -> np.ndarray:
    """Asymmetric (class-conditional) noise for a dataset, ``T[i, j] = P(noisy = j | true = i)``.

    Each source class of :func:`asymmetric_map` goes to its target with probability ``rate``;
    other classes keep their label (for CIFAR-10 half the classes are mapped, so the overall
    rate is about ``rate / 2``). Rows sum to 1. Any rate in ``[0, 1)`` is accepted, because the
    study's configurations use rates up to 0.8; from 0.5 on the flipped class is at least as
    likely as the clean one in every mapped row, so the clean label is no longer the majority
    label of those classes (not identifiable from the labels alone), and a one-line warning says so.

    Returns:
        float64 array ``K x K``.

    Raises:
        UserError: no map for the dataset, or a rate outside ``[0, 1)``.
    """
    k = _check_num_classes(num_classes)
    rate = float(rate)
    _check_rate(rate, 1.0, "asymmetric noise")
    mapping = asymmetric_map(dataset_name, k)
    if rate >= 0.5:
        _log.warning(
            f"warning: asymmetric noise {rate:g} >= 0.5 on {dataset_name}: the clean label is no longer "
            f"the majority label of the {sum(1 for a, b in mapping.items() if a != b)} mapped classes"
        )
    return _map_matrix(k, mapping, rate)


def _map_matrix(num_classes: int, mapping: dict[int, int], rate: float) -> np.ndarray:
    """Identity, except each ``source`` row sends ``rate`` of its mass to ``mapping[source]``."""
    matrix = np.eye(num_classes, dtype=np.float64)
    for source, target in mapping.items():
        if source != target:
            matrix[source, source] = 1.0 - rate
            matrix[source, target] = rate
    return matrix


def _validate_transition(matrix: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """``matrix`` as float64 after checking it is a row-stochastic ``K x K`` matrix."""
    t = np.asarray(matrix, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise UserError(f"transition matrix must be square K x K, got shape {t.shape}")
    if num_classes is not None and t.shape[0] != num_classes:
        raise UserError(
            f"transition matrix is {t.shape[0]} x {t.shape[0]}, expected K={num_classes}"
        )
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise UserError("transition matrix entries must be finite and non-negative")
    sums = t.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > _ROW_SUM_TOL:
        raise UserError(
            f"transition matrix rows must sum to 1 (T[i, j] = P(noisy=j | true=i)); "
            f"row {worst} sums to {sums[worst]:.8g}"
        )
    return t
