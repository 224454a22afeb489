"""Noisy labels as a value: the realized rate and transition matrix beside the requested spec
(:class:`NoisyLabels`), saved and read back checked."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

from .sampling import _as_labels, _check_range
from .spec import NoiseSpec, _check_num_classes


# --------------------------------------------------------------------------------------------
# Realized statistics
# --------------------------------------------------------------------------------------------


def realized_transition(
    clean: np.ndarray | torch.Tensor, noisy: np.ndarray | torch.Tensor, num_classes: int
) -> np.ndarray:
    """Empirical transition matrix ``T[i, j] = #(true=i, noisy=j) / #(true=i)``.

    Row ``i`` is the empirical distribution of the noisy label among samples whose clean label
    is ``i`` (rows sum to 1). A class with no samples has an all-zero row: there is no evidence
    about it, and an identity row would look like a measured "no noise".

    Returns:
        float64 array ``K x K``.
    """
    k = _check_num_classes(num_classes)
    c, y = _as_labels(clean, "clean labels"), _as_labels(noisy, "noisy labels")
    _check_same_length(c, y)
    _check_range(c, k, "clean labels")
    _check_range(y, k, "noisy labels")
    counts = np.bincount(c * k + y, minlength=k * k).reshape(k, k).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def realized_noise_rate(
    clean: np.ndarray | torch.Tensor, noisy: np.ndarray | torch.Tensor
) -> float:
    """Fraction of samples whose noisy label differs from the clean one (0.0 for no samples)."""
    c, y = _as_labels(clean, "clean labels"), _as_labels(noisy, "noisy labels")
    _check_same_length(c, y)
    return float(np.mean(c != y)) if c.size else 0.0


def _check_same_length(clean: np.ndarray, noisy: np.ndarray) -> None:
    if clean.shape != noisy.shape:
        raise DataError(
            f"{clean.shape[0]} clean but {noisy.shape[0]} noisy labels: they must match"
        )


# --------------------------------------------------------------------------------------------
# Result value
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoisyLabels:
    """Noisy training labels with the clean ones and what describes how they were made.

    Attributes:
        noisy: ``int64`` tensor ``N``, the labels to train on.
        clean: ``int64`` tensor ``N``, the original training labels (same order).
        spec: the requested noise.
        seed: the seed the labels were drawn with.
        transition_true: the ``K x K`` matrix the labels were drawn from,
            ``T[i, j] = P(noisy = j | true = i)`` (rows sum to 1), or ``None`` where there is
            none (instance, natural, file).
        realized_rate: fraction of ``noisy != clean``.
        realized_T: empirical ``K x K`` matrix, same orientation: row ``i`` is the distribution
            of the noisy label among samples with clean label ``i``; rows of classes with no
            samples are all zero.
        dataset: name of the dataset the labels belong to (checked when a file is reloaded).
    """

    noisy: torch.Tensor
    clean: torch.Tensor
    spec: NoiseSpec
    seed: int
    transition_true: np.ndarray | None
    realized_rate: float
    realized_T: np.ndarray
    dataset: str | None = None

    @property
    def num_classes(self) -> int:
        """``K``, the side of ``realized_T``."""
        return int(self.realized_T.shape[0])

    @property
    def is_noisy(self) -> torch.Tensor:
        """Boolean tensor ``N``: True where the noisy label differs from the clean one."""
        return self.noisy != self.clean

    @property
    def expected_rate(self) -> float | None:
        """Expected noise rate ``sum_i freq_i * (1 - T[i, i])`` under ``transition_true`` and
        the clean class frequencies; ``None`` when there is no generating matrix."""
        if self.transition_true is None:
            return None
        if len(self.clean) == 0:
            return 0.0
        freq = np.bincount(self.clean.numpy(), minlength=self.num_classes) / len(self.clean)
        return float(np.sum(freq * (1.0 - np.diag(self.transition_true))))

    def flips(self, top: int = 5) -> list[tuple[int, int, int]]:
        """The ``top`` most frequent flips as ``(true, noisy, count)``, largest count first
        (ties: smaller true class, then smaller noisy class, first); zero counts are omitted."""
        k = self.num_classes
        counts = np.bincount(
            self.clean.numpy() * k + self.noisy.numpy(), minlength=k * k
        ).reshape(k, k)
        np.fill_diagonal(counts, 0)
        order = np.argsort(-counts, axis=None, kind="stable")[: max(int(top), 0)]
        return [
            (int(i), int(j), int(counts[i, j]))
            for i, j in zip(*np.unravel_index(order, counts.shape))
            if counts[i, j] > 0
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: spec, seed, dataset, sizes, rates and ``realized_T`` as lists."""
        return {
            "spec": self.spec.to_dict(),
            "label": self.spec.label(),
            "seed": self.seed,
            "dataset": self.dataset,
            "train_size": int(len(self.clean)),
            "num_classes": self.num_classes,
            "realized_rate": self.realized_rate,
            "expected_rate": self.expected_rate,
            "realized_T": self.realized_T.tolist(),
            "transition_true": (
                None if self.transition_true is None else self.transition_true.tolist()
            ),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``noisy``, ``clean`` and the JSON summary to an ``.npz``, atomically.

        The file is written to a temporary file in the same directory, then moved into place
        with ``os.replace``, so a reader never sees a partial file. Returns the path.
        """
        from ..utils import atomic_output

        target = Path(path)
        with atomic_output(target) as tmp, open(tmp, "wb") as stream:
            np.savez(
                stream,
                noisy=self.noisy.numpy().astype(np.int64),
                clean=self.clean.numpy().astype(np.int64),
                summary=np.array(json.dumps(self.to_dict())),
            )
        return target


def load_noisy_labels(path: str | os.PathLike[str]) -> NoisyLabels:
    """Read a file written by :meth:`NoisyLabels.save`.

    Raises:
        DataError: missing file, or not a file written by :meth:`NoisyLabels.save`.
    """
    arrays, summary = _read_npz(Path(path))
    if summary is None or "clean" not in arrays or "noisy" not in arrays:
        raise DataError(f"{path} is not a noisy-label file written by NoisyLabels.save")
    noisy = torch.from_numpy(_as_labels(arrays["noisy"], f"noisy labels in {path}"))
    clean = torch.from_numpy(_as_labels(arrays["clean"], f"clean labels in {path}"))
    true_t = summary.get("transition_true")
    return NoisyLabels(
        noisy=noisy,
        clean=clean,
        spec=NoiseSpec.from_dict(summary["spec"]),
        seed=int(summary["seed"]),
        transition_true=None if true_t is None else np.asarray(true_t, dtype=np.float64),
        realized_rate=float(summary["realized_rate"]),
        realized_T=np.asarray(summary["realized_T"], dtype=np.float64),
        dataset=summary.get("dataset"),
    )


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Arrays of an ``.npz`` (no pickles) and its parsed ``summary`` JSON, if it has one."""
    if not path.is_file():
        raise DataError(f"label file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # numpy's own text may span lines (and advise loading unsafely); keep its first line
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read {path} as .npz (truncated, damaged or not an .npz: {why}); "
                        "write it again with `ddlnl noise --save`") from None
    summary = None
    if "summary" in arrays:
        try:
            summary = json.loads(str(arrays.pop("summary")))
        except json.JSONDecodeError:
            raise DataError(f"{path}: its 'summary' entry is not valid JSON") from None
    return arrays, summary
