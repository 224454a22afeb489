"""A dataset of your own in one ``.npz`` file (``x_train``, ``y_train``, ``x_test``, ``y_test``)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

from .cifar import _names
from .common import DATA_ENV, _build, _check_label_range, _scaled
from .types import Dataset


# ---------------------------------------------------------------------------------------- npz

_CHANNEL_COUNTS = (1, 3, 4)


def _npz_images(x: np.ndarray, key: str, path: Path) -> torch.Tensor:
    """Images from an npz array -> float32 ``N x C x H x W`` in [0, 1] (rule: see load_npz)."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] in _CHANNEL_COUNTS:
        pass
    elif x.ndim == 4 and x.shape[3] in _CHANNEL_COUNTS:
        x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"npz: {path} array {key!r} has shape {x.shape}; expected N x H x W, "
                        "N x C x H x W or N x H x W x C with C in 1, 3, 4")  # fmt: skip
    if x.dtype == np.uint8:
        return _scaled(x, 255.0)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise DataError(
                f"npz: {path} array {key!r} is float but not within [0, 1]; store "
                "raw pixels (uint8 0..255 or float 0..1), not normalised ones"
            )
        return _scaled(x, 1.0)
    raise DataError(
        f"npz: {path} array {key!r} has dtype {x.dtype}; use uint8 (0..255) or float (0..1)"
    )


def _npz_labels(y: np.ndarray, n: int, key: str, path: Path) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise DataError(f"npz: {path} array {key!r} must be {n} integer class indices, "
                        f"got {y.dtype} {y.shape}")  # fmt: skip
    return y.astype(np.int64)


def load_npz(root: str | Path | None = None) -> Dataset:
    """A dataset stored as one ``.npz`` file (``load_dataset("npz", root="file.npz")``).

    Arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test``; or only ``x``, ``y``, which are
    then split 80/20 with ``train_test_split(test_size=0.2, stratify=y, random_state=0)``
    (recorded in ``meta["split"]``). Optional ``classes``: K names (a unicode/bytes array).
    Image layout rule: 3-D arrays are ``N x H x W`` (one channel). 4-D arrays are channels-first
    (``N x C x H x W``) when axis 1 has 1, 3 or 4 entries, else channels-last (``N x H x W x C``)
    when axis 3 has; anything else is refused (so images at most 4 pixels high must be stored
    channels-first). uint8 pixels are divided by 255; float pixels must already lie in [0, 1]
    (already-normalised data is refused rather than normalised twice). Labels must be integers
    in 0..K-1, K = ``len(classes)`` if given, else max label + 1.

    Args:
        root: path of the ``.npz`` file (else ``$DDLNL_DATA`` if that names a file).
    """
    if root is None and os.environ.get(DATA_ENV):
        root = os.environ[DATA_ENV]
    if root is None or not Path(root).expanduser().is_file():
        where = f"{root} is not a file" if root is not None else "no file given"
        raise DataError(f"npz: {where}; pass root='data.npz' (CLI: --data-root data.npz) with "
                        "arrays x_train, y_train, x_test, y_test (or x, y)")  # fmt: skip
    path = Path(root).expanduser()
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"npz: cannot read {path} ({exc}); it must be an np.savez file without "
                        "object arrays (store class names as a unicode array)")  # fmt: skip
    meta: dict[str, Any] = {}
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        parts = [arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    elif {"x", "y"} <= arrays.keys():
        from sklearn.model_selection import train_test_split

        x, y = arrays["x"], _npz_labels(arrays["y"], len(arrays["x"]), "y", path)
        try:
            x_tr, x_te, y_tr, y_te = train_test_split(
                x, y, test_size=0.2, stratify=y, random_state=0
            )
        except ValueError as exc:
            raise DataError(f"npz: cannot split {path} 80/20 by class ({exc}); store x_train/"
                            "y_train/x_test/y_test instead")  # fmt: skip
        parts = [x_tr, y_tr, x_te, y_te]
        meta["split"] = (
            "stratified train_test_split(test_size=0.2, stratify=y, random_state=0) of x, y"
        )
    else:
        raise DataError(f"npz: {path} holds {sorted(arrays)}; expected x_train, y_train, x_test, "
                        "y_test (or x, y)")  # fmt: skip
    x_train = _npz_images(parts[0], "x_train", path)
    x_test = _npz_images(parts[2], "x_test", path)
    y_train = _npz_labels(parts[1], len(x_train), "y_train", path)
    y_test = _npz_labels(parts[3], len(x_test), "y_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"npz: {path} train images are {tuple(x_train.shape[1:])} but test images "
                        f"{tuple(x_test.shape[1:])}")  # fmt: skip
    if "classes" in arrays:
        classes = _names(arrays["classes"].tolist())
    else:
        num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
        classes = tuple(str(i) for i in range(num_classes))
    _check_label_range(y_train, len(classes), f"{path} (y_train)")
    _check_label_range(y_test, len(classes), f"{path} (y_test)")
    return _build("npz", x_train, y_train, x_test, y_test, classes, [path], **meta)
