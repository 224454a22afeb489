"""Noise specifications: the kinds ddlnl understands, the published asymmetric class maps,
:class:`NoiseSpec` and its text form (``symmetric:0.6``, ``natural:aggre``, ``file:labels.npz``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError


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
