"""From a spec and a dataset to noisy labels (:func:`make_noise`): drawn for the synthetic kinds,
read and checked for natural (CIFAR-N) and file labels; and the one-paragraph summary
(:func:`summary_text`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..errors import DataError, UserError

from .labels import NoisyLabels, _read_npz, realized_noise_rate, realized_transition
from .matrices import asymmetric_matrix, pairflip_matrix, symmetric_matrix
from .sampling import _as_labels, _check_range, apply_transition, instance_dependent_labels
from .spec import NoiseSpec, _RATE_KINDS, _check_seed


if TYPE_CHECKING:  # imported lazily at run time: data.py is being extended concurrently
    from ..data import Dataset
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
    from .. import data  # lazy: load_cifar_n lives in data.py

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
