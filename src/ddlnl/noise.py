"""Label noise as pure functions of labels (and, for instance-dependent noise, images).

Conventions used throughout this module:

* **Transition matrix**: ``T[i, j] = P(noisy = j | true = i)``; ``T`` is a ``K x K`` float64
  numpy array whose rows sum to 1. (cleanlab's ``noise_matrix`` is the transpose of this.)
* **Noise rate**: the fraction of training labels that differ from the clean label, *as
  realized*. The requested rate is a parameter of the generator; :class:`NoisyLabels` always
  records the realized rate and the realized (empirical) transition matrix next to it.
* **Randomness** is explicit: every stochastic function takes an integer ``seed`` and builds its
  own ``np.random.default_rng(seed)``. Nothing seeds or reads a global generator, so the same
  spec and seed give the same labels, bit for bit.

The test split is never corrupted: everything here acts on ``dataset.train`` only.

Defining steps of each kind (pinned by ``tests/test_defining_noise.py``,
``tests/test_reference_values.py``, ``tests/test_noise.py``):

* symmetric: flip with probability ``rate`` to one of the OTHER classes, uniformly
  (``symmetric-inclusive``: resample from all classes);
* pairflip: class ``i`` flips to ``(i + 1) mod K`` with probability ``rate``;
* asymmetric: the published class maps (CIFAR-10, MNIST/Fashion-MNIST), CIFAR-100 to the next
  fine class within the true superclass;
* instance (PTD): Xia et al.'s procedure on raw 0-255 pixels, flip rate from a truncated normal;
* natural / file: labels read, checked, never drawn;
* sampling: inverse-CDF of row ``T[true]`` with one uniform per sample; the realized rate and
  transition are what the labels show.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .errors import DataError, UserError

if TYPE_CHECKING:  # imported lazily at run time: data.py is being extended concurrently
    from .data import Dataset

# One-line warnings (logging's last-resort handler prints just the message to stderr).
_log = logging.getLogger("ddlnl.noise")

__all__ = [
    "NOISE_KINDS",
    "ASYMMETRIC_MAPS",
    "NoiseSpec",
    "NoisyLabels",
    "parse_noise_spec",
    "symmetric_matrix",
    "pairflip_matrix",
    "asymmetric_map",
    "asymmetric_matrix",
    "apply_transition",
    "instance_dependent_labels",
    "instance_flip_probabilities",
    "truncated_normal_mean",
    "realized_transition",
    "realized_noise_rate",
    "make_noise",
    "load_noisy_labels",
    "summary_text",
]

#: Every noise kind :func:`make_noise` understands.
NOISE_KINDS: tuple[str, ...] = (
    "none",
    "symmetric",
    "symmetric-inclusive",
    "asymmetric",
    "pairflip",
    "instance",
    "natural",
    "file",
)

# Kinds whose labels are generated from a rate; "natural" and "file" labels are read, not drawn.
_RATE_KINDS = ("symmetric", "symmetric-inclusive", "asymmetric", "pairflip", "instance")

# Short names accepted by parse_noise_spec.
_KIND_ALIASES: dict[str, str] = {
    "clean": "none",
    "sym": "symmetric",
    "inclusive": "symmetric-inclusive",
    "sym-inclusive": "symmetric-inclusive",
    "asym": "asymmetric",
    "pair": "pairflip",
    "pair-flip": "pairflip",
    "idn": "instance",
    "instance-dependent": "instance",
    "human": "natural",
}

# Asymmetric (class-conditional) maps, source class -> target class, each flipped with
# probability ``rate``; classes not listed keep their label. CIFAR-100 is built from its real
# superclasses in :func:`asymmetric_map`, not listed here.
ASYMMETRIC_MAPS: dict[str, dict[int, int]] = {
    # Patrini et al. 2017, "Making deep neural networks robust to label noise: a loss correction
    # approach"; the same map is used by the Co-teaching and DD_LNL code.
    # truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
    # Zhang & Sabuncu 2018, "Generalized cross entropy loss" (GCE), Fashion-MNIST:
    # ankle boot -> sneaker, sneaker -> sandal, pullover -> shirt, coat <-> dress.
    "fashion-mnist": {9: 7, 7: 5, 2: 6, 4: 3, 3: 4},
    # Patrini et al. 2017 / Co-teaching, MNIST: 7 -> 1, 2 -> 7, 5 <-> 6, 3 -> 8.
    "mnist": {7: 1, 2: 7, 5: 6, 6: 5, 3: 8},
    # sklearn's 8x8 digits: same digits, same map as MNIST.
    "digits": {7: 1, 2: 7, 5: 6, 6: 5, 3: 8},
}

# Number of classes each asymmetric map is written for.
_ASYMMETRIC_NUM_CLASSES: dict[str, int] = {
    "cifar10": 10,
    "cifar100": 100,
    "fashion-mnist": 10,
    "mnist": 10,
    "digits": 10,
}

# Standard deviation of the per-sample flip rate in PTD instance-dependent noise (Xia et al. 2020).
_INSTANCE_RATE_STD = 0.1

_ROW_SUM_TOL = 1e-6


# --------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseSpec:
    """What noise to inject; a value that can be written to and read from JSON.

    Attributes:
        kind: one of :data:`NOISE_KINDS`.
        rate: generator parameter in ``[0, 1)`` for the rate kinds (symmetric: probability of a
            flip to another class; symmetric-inclusive: probability of a resample to any class;
            asymmetric / pairflip: flip probability of each mapped class; instance: mean of the
            per-sample flip probability). Must be 0 for ``none``, ``natural`` and ``file``,
            whose labels are read, not drawn. Kind- and K-dependent upper limits are checked
            where the matrix is built.
        variant: ``natural`` only: the CIFAR-N label set, e.g. ``"aggre"``, ``"worst"``,
            ``"noisy"``.
        path: ``natural``: the CIFAR-N ``.pt`` file; ``file``: a saved label file.
    """

    kind: str
    rate: float = 0.0
    variant: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise UserError(
                f"unknown noise kind {self.kind!r}; choose one of {', '.join(NOISE_KINDS)}"
            )
        try:
            rate = float(self.rate)
        except (TypeError, ValueError):
            raise UserError(f"noise rate must be a number, got {self.rate!r}") from None
        object.__setattr__(self, "rate", rate)
        _check_rate(rate, 1.0, f"{self.kind} noise")
        if self.kind not in _RATE_KINDS and rate != 0.0:
            raise UserError(
                f"{self.kind} noise takes no rate (got {rate:g}); its labels are "
                f"{'unchanged' if self.kind == 'none' else 'read from a file'}"
            )
        if self.kind == "natural" and not self.variant:
            raise UserError("natural noise needs a CIFAR-N label set, e.g. natural:aggre")
        if self.variant is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.variant):
            # the variant names run directories and sweep records: no path separators or dots
            raise UserError(f"natural noise variant {self.variant!r}: use a CIFAR-N label set name, e.g. aggre, worst")
        if self.kind != "natural" and self.variant is not None:
            raise UserError(f"{self.kind} noise takes no variant (got {self.variant!r})")
        if self.kind == "file" and not self.path:
            raise UserError("file noise needs the path of a label file, e.g. file:labels.npz")
        if self.kind not in ("natural", "file") and self.path is not None:
            raise UserError(f"{self.kind} noise takes no path (got {self.path!r})")

    def label(self) -> str:
        """Short name for tables and file names: ``"symmetric-0.6"``, ``"natural-aggre"``."""
        if self.kind == "none":
            return "none"
        if self.kind == "natural":
            return f"natural-{self.variant}"
        if self.kind == "file":
            return f"file-{Path(str(self.path)).stem}"
        return f"{self.kind}-{self.rate:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with every field (``None`` fields included)."""
        return {"kind": self.kind, "rate": self.rate, "variant": self.variant, "path": self.path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NoiseSpec":
        """Inverse of :meth:`to_dict`; an unknown key is a :class:`UserError` naming it."""
        unknown = sorted(set(data) - {"kind", "rate", "variant", "path"})
        if unknown:
            raise UserError(f"unknown noise spec key(s) {', '.join(unknown)}")
        if "kind" not in data:
            raise UserError("noise spec needs a 'kind'")
        return cls(
            kind=data["kind"],
            rate=data.get("rate", 0.0),
            variant=data.get("variant"),
            path=data.get("path"),
        )


def parse_noise_spec(text: str) -> NoiseSpec:
    """Parse a command-line noise spec.

    Accepted forms: ``"none"``; ``"<kind>:<rate>"`` for symmetric (alias ``sym``),
    symmetric-inclusive (``inclusive``), asymmetric (``asym``), pairflip (``pair``) and
    instance (``idn``), e.g. ``"symmetric:0.6"``, ``"asym:0.4"``; ``"natural:<variant>"`` or
    ``"natural:<variant>:<cifar-n.pt>"``; ``"file:<path>"``. Rates are fractions (0.6, not 60).

    Raises:
        UserError: one line naming what is wrong and an accepted example.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError("empty noise spec; use e.g. symmetric:0.6, asym:0.4, natural:aggre, none")
    head, _, rest = text.strip().partition(":")
    kind = _KIND_ALIASES.get(head.strip().lower(), head.strip().lower())
    rest = rest.strip()
    if kind not in NOISE_KINDS:
        raise UserError(
            f"unknown noise kind {head!r} in {text!r}; choose one of {', '.join(NOISE_KINDS)}"
        )
    if kind == "none":
        if rest and _parse_rate(rest, text) != 0.0:
            raise UserError(f"noise spec {text!r}: 'none' takes no rate")
        return NoiseSpec("none")
    if kind == "natural":
        variant, _, path = rest.partition(":")
        if not variant:
            raise UserError(f"noise spec {text!r} lacks a CIFAR-N label set; e.g. natural:aggre")
        return NoiseSpec("natural", variant=variant, path=path or None)
    if kind == "file":
        if not rest:
            raise UserError(f"noise spec {text!r} lacks a path; e.g. file:labels.npz")
        return NoiseSpec("file", path=rest)
    if not rest:
        raise UserError(f"noise spec {text!r} lacks a rate; e.g. {kind}:0.4")
    return NoiseSpec(kind, rate=_parse_rate(rest, text))


def _parse_rate(value: str, text: str) -> float:
    """The float in ``value``, or a UserError quoting the whole spec ``text``."""
    try:
        rate = float(value)
    except ValueError:
        raise UserError(f"noise spec {text!r}: rate {value!r} is not a number") from None
    if rate >= 1.0 and rate <= 100.0 and float(rate).is_integer():
        raise UserError(f"noise spec {text!r}: rate is a fraction in [0, 1), e.g. 0.6 not 60")
    return rate


def _check_rate(rate: float, limit: float, what: str, why: str = "") -> None:
    """Refuse a rate outside ``[0, limit)`` with a one-line UserError naming the limit."""
    if not math.isfinite(rate) or rate < 0.0:
        raise UserError(f"{what}: rate must be >= 0, got {rate!r}")
    if rate >= limit:
        reason = f" ({why})" if why else ""
        raise UserError(f"{what}: rate must be < {limit:.6g}, got {rate:g}{reason}")


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise UserError(f"number of classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


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
        from .data import CIFAR100_FINE_TO_COARSE  # lazy: data.py owns the official table

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


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _as_labels(labels: np.ndarray | torch.Tensor, what: str = "labels") -> np.ndarray:
    """A 1-D int64 numpy copy of ``labels`` (numpy array or tensor of hard class indices)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of class indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{what} must be integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64, copy=True)


def _check_range(labels: np.ndarray, num_classes: int, what: str = "labels") -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{what} must lie in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}"
        )


def _sample_from_rows(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: one class per row of ``probs`` (``n x K``) from ``uniforms`` (n).

    Each cumulative row is divided by its total so its last entry is exactly 1.0 and a uniform
    in ``[0, 1)`` can never run past it; a zero-probability class has ``cdf[j] == cdf[j - 1]``
    and so is never selected.
    """
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    picked = (cdf <= uniforms[:, None]).sum(axis=1)
    return np.minimum(picked, probs.shape[1] - 1).astype(np.int64)


def apply_transition(
    labels: np.ndarray | torch.Tensor, transition: np.ndarray, seed: int
) -> np.ndarray:
    """Draw noisy labels: ``noisy[n] ~ T[labels[n], :]``, with ``T[i, j] = P(noisy=j | true=i)``.

    Vectorised inverse-CDF sampling: one uniform per sample, drawn in sample order from
    ``np.random.default_rng(seed)``, compared against the cumulative row of its true class.

    Args:
        labels: clean labels, ``int64`` array or tensor of shape ``N`` in ``[0, K)``.
        transition: ``K x K`` row-stochastic matrix (rows sum to 1 within 1e-6).
        seed: non-negative integer.

    Returns:
        noisy labels, ``int64`` numpy array of shape ``N``.

    Raises:
        UserError: ``transition`` not square, not non-negative or rows not summing to 1;
            labels out of range.
    """
    clean = _as_labels(labels)
    t = _validate_transition(transition)
    _check_range(clean, t.shape[0])
    uniforms = np.random.default_rng(_check_seed(seed)).random(clean.shape[0])
    noisy = clean.copy()
    for cls in np.unique(clean):
        where = clean == cls
        row = np.broadcast_to(t[cls], (int(where.sum()), t.shape[0]))
        noisy[where] = _sample_from_rows(row, uniforms[where])
    return noisy


def _truncated_normal(
    rng: np.random.Generator, mean: float, std: float, low: float, high: float, size: int
) -> np.ndarray:
    """Exact draws from ``N(mean, std^2)`` truncated to ``[low, high]``, by rejection."""
    out = rng.normal(mean, std, size)
    bad = (out < low) | (out > high)
    while bad.any():  # acceptance >= ~0.5 for a mean inside [low, high]: a few rounds at most
        out[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (out < low) | (out > high)
    return out


def truncated_normal_mean(mean: float, std: float, low: float = 0.0, high: float = 1.0) -> float:
    """Mean of ``N(mean, std^2)`` truncated to ``[low, high]``: the expected instance noise rate."""
    a, b = (low - mean) / std, (high - mean) / std
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    return mean + std * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))


def _instance_setup(images: torch.Tensor, labels: np.ndarray | torch.Tensor, rate: float, seed: int,
                    num_classes: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray, list[np.ndarray], np.ndarray, int]:
    k = _check_num_classes(num_classes)
    _check_rate(float(rate), 1.0, "instance noise")
    clean = _as_labels(labels)
    _check_range(clean, k)
    images = torch.as_tensor(images)
    if images.shape[0] != clean.shape[0]:
        raise DataError(f"{images.shape[0]} images but {clean.shape[0]} labels: they must match")
    rng = np.random.default_rng(_check_seed(seed))
    n, dim = clean.shape[0], int(np.prod(images.shape[1:]))
    flip_rates = _truncated_normal(rng, float(rate), _INSTANCE_RATE_STD, 0.0, 1.0, n)
    projections = [rng.standard_normal((dim, k), dtype=np.float32) for _ in range(k)]
    uniforms = rng.random(n)
    return clean, images, flip_rates, projections, uniforms, dim


def _raw_pixels(images: torch.Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None) -> torch.Tensor:
    """``images`` in 0..255 pixel values: as given, or undoing ``(x / 255 - mean) / std`` per channel."""
    x = images.to(torch.float64).cpu()
    if normalization is None:
        return x
    mean, std = (torch.tensor([float(v) for v in t], dtype=torch.float64) for t in normalization)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x * std.view(shape) + mean.view(shape)) * 255.0


def _class_flip_probabilities(images: torch.Tensor, where: np.ndarray, cls: int, dim: int,
                              flip_rates: np.ndarray, projection: np.ndarray,
                              normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """Rows ``P(noisy = j | x_n)`` for the samples ``where`` of clean class ``cls``."""
    # Per class, so only one class's images are copied (and de-normalised) at a time.
    x = _raw_pixels(images[torch.from_numpy(where)], normalization).reshape(len(where), dim)
    scores = (x @ torch.from_numpy(projection).double()).numpy()
    scores[:, cls] = -np.inf
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    probs *= (flip_rates[where] / probs.sum(axis=1))[:, None]
    probs[:, cls] = 1.0 - flip_rates[where]
    return probs


def instance_flip_probabilities(images: torch.Tensor, labels: np.ndarray | torch.Tensor, rate: float,
                                seed: int, num_classes: int, *,
                                normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """The per-sample label distributions ``N x K`` that :func:`instance_dependent_labels` samples
    from (same arguments, same draws): row ``n`` is ``P(noisy = j | x_n, clean = y_n)``."""
    clean, images, flip_rates, projections, _, dim = _instance_setup(images, labels, rate, seed, num_classes)
    probs = np.zeros((clean.shape[0], int(num_classes)), dtype=np.float64)
    for cls in np.unique(clean):
        where = np.flatnonzero(clean == cls)
        probs[where] = _class_flip_probabilities(images, where, int(cls), dim, flip_rates, projections[cls],
                                                 normalization)
    return probs


def instance_dependent_labels(
    images: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    rate: float,
    seed: int,
    num_classes: int,
    *,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> np.ndarray:
    """Instance-dependent (PTD) label noise, Xia et al., NeurIPS 2020, ``get_instance_noisy_label``
    (xiaoboxia/Part-dependent-label-noise ``tools.py``).

    For each sample ``x_n`` with clean label ``y``, where ``x_n`` is the image flattened (C, H, W
    order) in RAW PIXEL VALUES 0..255, as the reference feeds its ``.npy`` images (``data.py``:
    ``torch.from_numpy(original_images).float()``, no scaling):

    1. flip rate ``q_n`` ~ normal(mean=``rate``, std=0.1) truncated to ``[0, 1]``;
    2. scores ``s = x_n @ W_y`` with ``W_y`` a ``D x K`` standard-normal projection drawn once
       per class (as in the reference code, where ``W`` is ``K x D x K`` and sample ``n`` uses
       ``W[y]``, so the flip direction depends on both the image and its class);
    3. ``s[y] = -inf``; ``p = q_n * softmax(s)``; ``p[y] = 1 - q_n``; draw the noisy label
       from ``p``.

    On raw pixels the scores are hundreds to thousands apart, so the softmax is nearly one-hot:
    almost all of a sample's flip mass goes to ONE wrong class chosen by its image (on
    unit-normalised images the softmax would be nearly flat: a different, much more spread noise).
    :func:`make_noise` passes the dataset's normalised images with ``normalization=(mean, std)``,
    and each class's images are turned back into 0..255 pixels here, one class at a time.

    The expected noise rate is the mean of the truncated normal (:func:`truncated_normal_mean`),
    which equals ``rate`` up to the truncation (0.4 -> 0.4000, 0.2 -> 0.2055, 0.05 -> 0.1009).
    Unlike the reference code, ``rate == 0`` returns the labels unchanged (the truncated normal
    would still flip about 8% of them). Draws, in order, from ``np.random.default_rng(seed)``:
    the N flip rates, the K projections (class 0 first, all classes even if absent), the N
    uniforms.

    Args:
        images: float tensor ``N x ...`` (e.g. ``N x C x H x W``) in pixel values 0..255, or
            normalised as ``(pixel / 255 - mean) / std`` when ``normalization=(mean, std)`` (per
            channel, axis 1) is given; ``D`` = product of the rest.
        labels: clean ``int64`` labels, shape ``N``, in ``[0, num_classes)``.
        rate: mean flip rate in ``[0, 1)``.
        seed: non-negative integer.
        num_classes: ``K``.

    Returns:
        noisy labels, ``int64`` numpy array of shape ``N``.
    """
    clean, images, flip_rates, projections, uniforms, dim = _instance_setup(images, labels, rate, seed, num_classes)
    if float(rate) == 0.0 or clean.size == 0:
        return clean
    noisy = clean.copy()
    for cls in np.unique(clean):
        where = np.flatnonzero(clean == cls)
        probs = _class_flip_probabilities(images, where, int(cls), dim, flip_rates, projections[cls],
                                          normalization)
        noisy[where] = _sample_from_rows(probs, uniforms[where])
    return noisy


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
        from .utils import atomic_output

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


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def make_noise(spec: NoiseSpec, dataset: "Dataset", seed: int) -> NoisyLabels:
    """Noisy training labels for ``dataset`` as described by ``spec``, drawn with ``seed``.

    Uses ``dataset.train.labels`` (clean, ``int64``), ``dataset.name``, ``dataset.num_classes``
    and, for instance noise, ``dataset.train.images``. The test split is not touched. The
    result records ``transition_true`` (``T[i, j] = P(noisy = j | true = i)``, rows sum to 1)
    where the labels are drawn from a matrix, the realized rate and the realized matrix.
    For the rate kinds, rate 0 returns the clean labels unchanged.

    Raises:
        UserError: an invalid rate for this K, no asymmetric map for the dataset, a CIFAR-N
            variant that the file lacks, a label file that does not fit the dataset.
    """
    seed = _check_seed(seed)
    k = dataset.num_classes
    clean = _as_labels(dataset.train.labels, f"{dataset.name} training labels")
    _check_range(clean, k, f"{dataset.name} training labels")
    transition: np.ndarray | None = None
    if spec.kind == "none":
        transition, noisy = np.eye(k), clean.copy()
    elif spec.kind in ("symmetric", "symmetric-inclusive", "asymmetric", "pairflip"):
        transition = _spec_matrix(spec, dataset.name, k)
        noisy = apply_transition(clean, transition, seed)
    elif spec.kind == "instance":
        # Xia et al. score raw 0..255 pixels, not ddlnl's normalised images.
        noisy = instance_dependent_labels(dataset.train.images, clean, spec.rate, seed, k,
                                          normalization=(dataset.mean, dataset.std))
    elif spec.kind == "natural":
        noisy = _natural_labels(spec, dataset)
    else:  # "file"
        noisy = _file_labels(Path(str(spec.path)), dataset)
    _check_range(noisy, k, f"noisy labels for {dataset.name}")
    return NoisyLabels(
        noisy=torch.from_numpy(noisy),
        clean=torch.from_numpy(clean),
        spec=spec,
        seed=seed,
        transition_true=transition,
        realized_rate=realized_noise_rate(clean, noisy),
        realized_T=realized_transition(clean, noisy, k),
        dataset=dataset.name,
    )


def _spec_matrix(spec: NoiseSpec, dataset_name: str, num_classes: int) -> np.ndarray:
    """The transition matrix of a matrix-based spec (``T[i, j] = P(noisy=j | true=i)``)."""
    if spec.kind == "symmetric":
        return symmetric_matrix(num_classes, spec.rate)
    if spec.kind == "symmetric-inclusive":
        return symmetric_matrix(num_classes, spec.rate, inclusive=True)
    if spec.kind == "pairflip":
        return pairflip_matrix(num_classes, spec.rate)
    return asymmetric_matrix(dataset_name, num_classes, spec.rate)


def _natural_labels(spec: NoiseSpec, dataset: "Dataset") -> np.ndarray:
    """The CIFAR-N label set ``spec.variant`` for ``dataset``, via ``ddlnl.data.load_cifar_n``."""
    if spec.path is None:
        raise UserError(
            f"natural noise needs the CIFAR-N label file; pass it as natural:{spec.variant}:<path "
            "to CIFAR-10_human.pt or CIFAR-100_human.pt>"
        )
    from . import data  # lazy: load_cifar_n lives in data.py

    label_sets = data.load_cifar_n(spec.path, dataset)
    variant = str(spec.variant)
    if variant not in label_sets:
        raise UserError(
            f"CIFAR-N file {spec.path} has no label set {variant!r}; available: "
            f"{', '.join(sorted(label_sets))}"
        )
    if "coarse" in variant and dataset.name != "cifar100-coarse":
        # CIFAR-100N's "noisy-coarse" set is in the 20-superclass label space: comparing it with
        # fine labels would report nonsense rates (the cifar100-coarse dataset is its match).
        raise UserError(
            f"CIFAR-N label set {variant!r} holds superclass labels, not the {dataset.num_classes} "
            f"classes of {dataset.name}; use --dataset cifar100-coarse for it, or one of "
            f"{', '.join(sorted(v for v in label_sets if 'coarse' not in v))}"
        )
    labels = _as_labels(label_sets[variant], f"CIFAR-N {variant} labels")
    _check_length(labels, dataset, f"CIFAR-N {variant} labels in {spec.path}")
    return labels


def _check_length(labels: np.ndarray, dataset: "Dataset", what: str) -> None:
    if labels.shape[0] != len(dataset.train):
        raise DataError(
            f"{what}: {labels.shape[0]} labels but {dataset.name} has {len(dataset.train)} "
            "training samples; use a file made for this dataset and split"
        )


def _file_labels(path: Path, dataset: "Dataset") -> np.ndarray:
    """Labels from a ``NoisyLabels.save`` file or a plain ``.npy`` / ``.npz`` / ``.csv``.

    A plain ``.npz`` must hold one array (or one named ``noisy`` or ``labels``); a ``.csv``
    holds one integer per line (a non-numeric first line is skipped as a header).
    """
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays, summary = _read_npz(path)
        if summary is not None:
            _check_summary(summary, path, dataset)
            if "clean" in arrays and not np.array_equal(
                np.asarray(arrays["clean"]), dataset.train.labels.cpu().numpy()
            ):
                raise DataError(
                    f"label file {path}: its clean labels differ from {dataset.name}'s training "
                    "labels (another split or sample order)"
                )
        raw = _pick_npz_labels(arrays, path)
    elif suffix == ".npy":
        if not path.is_file():
            raise DataError(f"label file {path} does not exist")
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path} as .npy: {exc}".splitlines()[0]) from None
    elif suffix in (".csv", ".txt"):
        raw = _read_csv_labels(path)
    else:
        raise UserError(f"label file {path}: use .npz (NoisyLabels.save), .npy or .csv")
    raw = np.asarray(raw)
    if raw.ndim == 2 and 1 in raw.shape:
        raw = raw.reshape(-1)
    labels = _as_labels(raw, f"labels in {path}")
    _check_length(labels, dataset, f"label file {path}")
    _check_range(labels, dataset.num_classes, f"labels in {path} (K={dataset.num_classes})")
    return labels


def _check_summary(summary: dict[str, Any], path: Path, dataset: "Dataset") -> None:
    """Refuse a saved label file made for another dataset, split or label order."""
    name = summary.get("dataset")
    if name is not None and name != dataset.name:
        raise DataError(f"label file {path} was made for {name}, not {dataset.name}")
    size = summary.get("train_size")
    if size is not None and int(size) != len(dataset.train):
        raise DataError(
            f"label file {path} is for {size} training samples, {dataset.name} has "
            f"{len(dataset.train)}; use a file made for this split"
        )


def _pick_npz_labels(arrays: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """The label array of a plain or saved ``.npz``: ``noisy``, ``labels`` or the only array."""
    for key in ("noisy", "labels"):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(
        f"label file {path} holds {', '.join(sorted(arrays))}; expected one array or one "
        "named 'noisy' or 'labels'"
    )


def _read_csv_labels(path: Path) -> np.ndarray:
    """One integer label per line; a first line that is not an integer is a header."""
    if not path.is_file():
        raise DataError(f"label file {path} does not exist")
    lines = [line.strip().split(",")[0].strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line]
    if lines and not _is_int(lines[0]):
        lines = lines[1:]
    for number, line in enumerate(lines, start=1):
        if not _is_int(line):
            raise DataError(f"label file {path}: entry {number} ({line!r}) is not an integer label")
    return np.array([int(line) for line in lines], dtype=np.int64)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def summary_text(noisy: NoisyLabels, classes: Sequence[str], top: int = 5) -> str:
    """A few human-readable lines: requested spec, realized (and expected) rate, largest flips.

    Args:
        noisy: the labels to describe.
        classes: class names, index = label.
        top: how many flips to list.
    """
    n = len(noisy.clean)
    where = f" on {noisy.dataset}" if noisy.dataset else ""
    lines = [f"noise {noisy.spec.label()} (seed {noisy.seed}){where}, {n} training labels"]
    rate = f"realized rate {noisy.realized_rate:.4f} ({int(noisy.is_noisy.sum())} changed)"
    if noisy.spec.kind in _RATE_KINDS:
        rate += f"; requested rate {noisy.spec.rate:g}"
    if noisy.expected_rate is not None:
        rate += f"; expected rate {noisy.expected_rate:.4f}"
    lines.append(rate)
    flips = noisy.flips(top)
    if flips:
        lines.append("largest flips (true -> noisy: count):")
        name = lambda i: classes[i] if 0 <= i < len(classes) else str(i)  # noqa: E731
        lines += [f"  {name(i)} -> {name(j)}: {count}" for i, j, count in flips]
    else:
        lines.append("no label was changed")
    return "\n".join(lines)
