"""CIFAR-N human label files (CIFAR-10N, CIFAR-100N), read without unpickling code."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
try:  # numpy >= 2 (numpy.core became numpy._core)
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

from .cifar import CIFAR100_COARSE_CLASSES
from .common import _check_label_range
from .types import Dataset


# ----------------------------------------------------------------------------- CIFAR-N labels

#: Official CIFAR-N file names (http://noisylabels.com, github.com/UCSC-REAL/cifar-10-100n).
CIFAR_N_FILES: dict[str, str] = {
    "cifar10": "CIFAR-10_human.pt",
    "cifar100": "CIFAR-100_noisy_label.pt",
    "cifar100-coarse": "CIFAR-100_noisy_label.pt",
}

#: ddlnl name of each human-label variant -> key in the official CIFAR-N file.
CIFAR_N_VARIANTS: dict[str, dict[str, str]] = {
    "cifar10": {
        "aggre": "aggre_label",
        "random1": "random_label1",
        "random2": "random_label2",
        "random3": "random_label3",
        "worst": "worse_label",
    },
    "cifar100": {"noisy": "noisy_label", "noisy-coarse": "noisy_coarse_label"},
    # The superclass labels only: the fine ones are not in a 20-class space.
    "cifar100-coarse": {"noisy-coarse": "noisy_coarse_label"},
}


def _cifar_n_safe_globals() -> list[Any]:
    # Exactly what torch's weights-only unpickler needs to rebuild int64 numpy arrays: the array
    # reconstructor under both its numpy-1 name (how the official files were written) and its
    # numpy-2 name, ndarray, dtype, and the int64 dtype class (BUILD is applied to it).
    return [
        (_np_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_np_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype(np.int64)),
    ]


def _weights_only_reason(exc: BaseException) -> str:
    """The informative part of a torch.load failure (torch's own text spans many lines)."""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text) or re.search(
        r"but got (<class '[^']+'>)", text
    )
    if found:
        return f"it holds {found.group(1)}, not only int64 numpy arrays"
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in text.splitlines()]
    return next((ln[:200] for ln in lines if ln), type(exc).__name__)


def load_cifar_n(path: str | Path, dataset: Dataset) -> dict[str, np.ndarray]:
    """Human-annotated CIFAR-N training labels, checked against ``dataset``.

    The official files were written with ``torch.save`` of a dict of int64 numpy arrays. They
    are read with ``torch.load(weights_only=True)`` allowing only the numpy globals needed for
    such arrays, so a file holding anything else is refused rather than executed.

    Args:
        path: ``CIFAR-10_human.pt`` (for cifar10) or ``CIFAR-100_noisy_label.pt`` (for cifar100
            and cifar100-coarse).
        dataset: the loaded ``cifar10`` / ``cifar100`` / ``cifar100-coarse`` dataset; its training
            labels (for cifar100-coarse: ``meta["fine_labels"]``) must equal the file's
            ``clean_label`` (same images, same order).

    Returns:
        ``{variant: int64 array N}`` for the variants of ``CIFAR_N_VARIANTS[dataset.name]``
        (cifar10: ``aggre``, ``random1..3``, ``worst``; cifar100: ``noisy``, ``noisy-coarse``,
        the latter in coarse label space 0..19; cifar100-coarse: ``noisy-coarse``).

    Raises:
        DataError: missing file, not a CIFAR-N label file, wrong length, or clean labels that do
            not match ``dataset``.
    """
    path = Path(path).expanduser()
    if dataset.name not in CIFAR_N_VARIANTS:
        raise DataError(
            f"CIFAR-N labels exist for {sorted(CIFAR_N_VARIANTS)} only, not {dataset.name!r}"
        )
    if not path.is_file():
        raise DataError(
            f"CIFAR-N label file {path} not found; download {CIFAR_N_FILES[dataset.name]} "
            "from https://github.com/UCSC-REAL/cifar-10-100n"
        )
    refuse = f"refusing {path}: not a CIFAR-N label file"
    if not zipfile.is_zipfile(path):
        raise DataError(f"{refuse} (not a torch zip container)")
    try:
        with torch.serialization.safe_globals(_cifar_n_safe_globals()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{refuse} ({_weights_only_reason(exc)})")
    if not isinstance(content, dict):
        raise DataError(f"{refuse} (holds a {type(content).__name__}, expected a dict)")
    n = len(dataset.train)
    variants = CIFAR_N_VARIANTS[dataset.name]
    needed = ["clean_label", *variants.values()]
    arrays = {}
    for key in needed + (["clean_coarse_label"] if "clean_coarse_label" in content else []):
        if key not in content:
            raise DataError(
                f"{refuse} for {dataset.name}: key {key!r} missing (has "
                f"{sorted(map(str, content))}); is this the file for cifar10 or cifar100?"
            )
        value = np.asarray(content[key])
        if not np.issubdtype(value.dtype, np.integer) or value.shape != (n,):
            raise DataError(f"{path}: {key} is {value.dtype} {value.shape}, expected {n} integer "
                            f"labels (one per {dataset.name} training image)")  # fmt: skip
        arrays[key] = value.astype(np.int64)
    # cifar100-coarse: the file's clean_label (fine) is checked against the fine labels kept in
    # meta, its clean_coarse_label against the dataset's own (coarse) labels.
    is_coarse = dataset.name == "cifar100-coarse"
    fine = dataset.meta.get("fine_labels") if is_coarse else dataset.train.labels
    if fine is None or not np.array_equal(arrays["clean_label"], np.asarray(fine)):
        raise DataError(f"{path}: clean_label does not match {dataset.name} training labels: is "
                        "this the file for cifar10 or cifar100?")  # fmt: skip
    coarse = dataset.train.labels if is_coarse else dataset.meta.get("coarse_labels")
    if "clean_coarse_label" in arrays and coarse is not None:
        if not np.array_equal(arrays["clean_coarse_label"], np.asarray(coarse)):
            raise DataError(
                f"{path}: clean_coarse_label does not match {dataset.name} coarse labels"
            )
    result = {}
    for name, key in variants.items():
        k = len(CIFAR100_COARSE_CLASSES) if key == "noisy_coarse_label" else dataset.num_classes
        _check_label_range(arrays[key], k, f"{path} ({key})")
        result[name] = arrays[key]
    return result
