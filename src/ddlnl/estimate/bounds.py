"""The study's corollaries: the IPC above which a distilled set stops helping, and the noise-rate
lower bound that tried IPCs imply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import UserError


# ---------------------------------------------------------------------------------------------
# The study's corollaries
# ---------------------------------------------------------------------------------------------


def _check_sizes(train_size: int, num_classes: int) -> None:
    if int(train_size) < 1 or int(num_classes) < 2:
        raise UserError(f"need |S| >= 1 training samples and C >= 2 classes, got |S|={train_size}, "
                        f"C={num_classes}")


def ipc_upper_bound(train_size: int, num_classes: int, noise_rate: float) -> float:
    """The study's IPC bound: ``IPC <= |S| (1 - tau) / C``.

    Assumptions: only the ``|S| (1 - tau)`` correctly labelled samples carry information about
    the clean classes, and a distilled image summarises at least one of them; so a synthetic set
    with more than ``|S| (1 - tau)`` images in total (``C`` classes x IPC) must spend the excess on
    the noise. Balanced classes are assumed (the bound is per class on average).

    Args:
        train_size: ``|S|``, the number of (noisy) training samples distilled.
        num_classes: ``C``.
        noise_rate: ``tau`` in ``[0, 1]``, fraction of wrong labels.

    Returns:
        The largest IPC (a float; floor it for a count) that the bound allows.

    Example: ``ipc_upper_bound(60000, 10, 0.6) == 2400.0``.
    """
    _check_sizes(train_size, num_classes)
    if not 0.0 <= float(noise_rate) <= 1.0:
        raise UserError(f"noise rate must lie in [0, 1], got {noise_rate}")
    return float(train_size) * (1.0 - float(noise_rate)) / float(num_classes)


@dataclass(frozen=True)
class RateBound:
    """The noise-rate lower bound read from accuracy-vs-IPC results.

    Attributes:
        ipc: the smallest IPC whose accuracy reaches the full-noisy baseline.
        accuracy: its accuracy.
        baseline_accuracy: the full-noisy baseline it was compared with.
        lower_bound: ``max(0, 1 - C * ipc / |S|)``.
    """

    ipc: int
    accuracy: float
    baseline_accuracy: float
    lower_bound: float


def noise_rate_lower_bound(results: Sequence[tuple[int, float]], baseline_accuracy: float,
                           train_size: int, num_classes: int) -> RateBound | None:
    """The study's noise-rate bound: ``tau >= 1 - C * IPC / |S|`` at the smallest IPC that
    reaches the full-noisy baseline.

    Assumptions: the full noisy set is worth its ``|S| (1 - tau)`` clean samples (mislabelled
    samples add nothing), and ``C * IPC`` distilled images are worth at least as many clean real
    images. If ``C * IPC`` synthetic images already match the full noisy set, then
    ``|S| (1 - tau) <= C * IPC``, i.e. ``tau >= 1 - C * IPC / |S|``. Only the *smallest* such IPC
    gives the tightest bound. The bound is clipped at 0 (a vacuous bound says nothing).

    Args:
        results: ``(ipc, accuracy)`` pairs (e.g. one method's cells of a run; any order; accuracy
            as a fraction, like the baseline).
        baseline_accuracy: accuracy of the same architecture trained on the full noisy set.
        train_size: ``|S|``.
        num_classes: ``C``.

    Returns:
        :class:`RateBound`, or ``None`` when no IPC reaches the baseline (then the corollary gives
        no bound).

    Example: ``noise_rate_lower_bound([(10, 0.7), (50, 0.86)], 0.85, 5000, 10).lower_bound == 0.9``.
    """
    _check_sizes(train_size, num_classes)
    reached = sorted((int(ipc), float(acc)) for ipc, acc in results if float(acc) >= float(baseline_accuracy))
    if not reached:
        return None
    ipc, acc = reached[0]
    bound = max(0.0, 1.0 - float(num_classes) * ipc / float(train_size))
    return RateBound(ipc=ipc, accuracy=acc, baseline_accuracy=float(baseline_accuracy), lower_bound=bound)
