"""What every loader shares: where dataset files are looked for (``root``, ``$DDLNL_DATA``, the
default places), pixel scaling and the one-line errors for missing files and bad labels."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

from .types import Dataset, LabeledTensors, normalize_splits


# ---------------------------------------------------------------------------------------------
# Loader registry
# ---------------------------------------------------------------------------------------------
#
# Every loader below has the signature ``loader(root: str | Path | None = None) -> Dataset`` and
# is registered in ``DATASETS`` (a plain dict, so the CLI can offer ``sorted(DATASETS)``).
# Raw pixels are scaled to [0, 1], then both splits are normalised with training statistics by
# ``normalize_splits``. Anything a user can get wrong (a missing, truncated or foreign file) is a
# one-line ``DataError`` naming the file and the fix; no KeyError / pickle error leaks out.

#: Environment variable naming a folder that holds datasets (or a dataset folder itself).
DATA_ENV = "DDLNL_DATA"

# Searched (after DDLNL_DATA) when no root is given. The Debian/Ubuntu package
# ``dataset-fashion-mnist`` installs the four IDX files into the first one.
DEFAULT_DATA_ROOTS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"), Path("/usr/share/datasets")),
    "cifar10": (Path("/usr/share/datasets"),),
    "cifar100": (Path("/usr/share/datasets"),),
    "tiny-imagenet": (Path("/usr/share/datasets"),),
}

_ROOT_HINT = "pass root=... (CLI: --data-root) or set DDLNL_DATA"


def _scaled(pixels: np.ndarray, max_value: float) -> torch.Tensor:
    """uint8/float numpy ``N x C x H x W`` -> contiguous float32 tensor in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32)
    return t.div_(max_value) if max_value != 1.0 else t


def _build(
    name: str,
    train_pixels: torch.Tensor,
    train_labels: np.ndarray,
    test_pixels: torch.Tensor,
    test_labels: np.ndarray,
    classes: Sequence[str],
    source: Iterable[str | Path],
    **meta: Any,
) -> Dataset:
    """Normalise with training statistics and wrap the splits in a :class:`Dataset`."""
    train_x, test_x, mean, std = normalize_splits(train_pixels, test_pixels)

    def as_labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))

    return Dataset(
        name=name,
        train=LabeledTensors(train_x.contiguous(), as_labels(train_labels)),
        test=LabeledTensors(test_x.contiguous(), as_labels(test_labels)),
        classes=tuple(str(c) for c in classes),
        mean=mean,
        std=std,
        meta={"source": tuple(str(s) for s in source), **meta},
    )


def _find_dataset_dir(
    name: str,
    root: str | Path | None,
    subfolders: Sequence[str],
    markers: Sequence[str],
    what: str,
    how: str,
) -> Path:
    """Locate the folder of a file-based dataset.

    An explicit ``root`` is authoritative; otherwise ``$DDLNL_DATA`` and then the dataset's
    ``DEFAULT_DATA_ROOTS`` are searched. Each base is tried as the dataset folder itself and as
    its parent (``base / subfolder``), so both ``.../cifar-10-batches-py`` and ``...`` work.
    A folder qualifies when it holds any of ``markers``; a partial folder is then reported
    file by file by the loader, which is more helpful than "not found".
    """
    if root is not None:
        bases = [Path(root).expanduser()]
    else:
        env = os.environ.get(DATA_ENV)
        bases = ([Path(env).expanduser()] if env else []) + list(DEFAULT_DATA_ROOTS.get(name, ()))
    checked: list[str] = []
    for base in bases:
        for candidate in [base, *(base / sub for sub in subfolders)]:
            checked.append(str(candidate))
            if any((candidate / marker).is_file() for marker in markers):
                return candidate
    if not bases:
        raise DataError(f"{name}: no data folder given and {DATA_ENV} is not set; {how}")
    raise DataError(f"{name}: {what} not found in {', '.join(checked)}; {how}")


def _require_file(name: str, folder: Path, filename: str, how: str) -> Path:
    path = folder / filename
    if not path.is_file():
        raise DataError(f"{name}: missing file {path} (the dataset folder is incomplete); {how}")
    return path


def _check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"labels in {where} span {int(labels.min())}..{int(labels.max())}, "
            f"expected 0..{num_classes - 1}; the file is corrupt or not what it claims to be"
        )
