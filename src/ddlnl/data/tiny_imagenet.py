"""Tiny ImageNet from its official folder, decoded once and cached."""

from __future__ import annotations

import hashlib
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils import CACHE_ENV, cache_root

from .common import _ROOT_HINT, _build, _find_dataset_dir, _require_file, _scaled
from .types import Dataset


# -------------------------------------------------------------------------------- Tiny ImageNet

_TINY_HOW = (
    "download http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzip it, and "
    f"{_ROOT_HINT} to tiny-imagenet-200/ or its parent"
)
_TINY_SIZE = 64
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
# Bump when the cache layout changes so that old caches are ignored rather than misread.
_TINY_CACHE_VERSION = 1
_TINY_CACHE_PREFIX = ".ddlnl-cache-tiny-imagenet-"


def _tiny_listing(folder: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """wnids, and (file, class) for train and val, in a deterministic order.

    Train: class by class in ``wnids.txt`` order, files sorted by name. Val (used as the test
    split, since the official test labels are withheld): files sorted by name, class from
    ``val/val_annotations.txt`` (filename, wnid, x, y, w, h; tab-separated).
    """
    wnids_path = _require_file("tiny-imagenet", folder, "wnids.txt", _TINY_HOW)
    wnids = [line.strip() for line in wnids_path.read_text().splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"tiny-imagenet: {wnids_path} must list distinct wnids, one per line")
    index = {w: i for i, w in enumerate(wnids)}
    train: list[tuple[Path, int]] = []
    for wnid, label in index.items():
        images_dir = folder / "train" / wnid / "images"
        files = sorted(p for p in images_dir.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"tiny-imagenet: no images in {images_dir} (class {wnid} of "
                            f"{wnids_path}); the folder is incomplete, {_TINY_HOW}")  # fmt: skip
        train += [(p, label) for p in files]
    ann_path = _require_file("tiny-imagenet", folder, "val/val_annotations.txt", _TINY_HOW)
    test: list[tuple[Path, int]] = []
    for lineno, line in enumerate(ann_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(
                f"tiny-imagenet: {ann_path}:{lineno} should read "
                f"'<file>\\t<wnid from wnids.txt>\\t...', got {line.strip()!r}"
            )
        path = folder / "val" / "images" / fields[0]
        if not path.is_file():
            raise DataError(
                f"tiny-imagenet: {path} is listed in {ann_path} but missing; {_TINY_HOW}"
            )
        test.append((path, index[fields[1]]))
    if not test:
        raise DataError(f"tiny-imagenet: {ann_path} lists no validation images")
    return wnids, train, sorted(test, key=lambda item: item[0].name)


def _tiny_fingerprint(folder: Path, files: Iterable[Path]) -> str:
    # Name, size and mtime of every file that goes into the arrays: adding, removing, replacing
    # or touching any image (or the label files) gives a new key, hence a fresh decode.
    h = hashlib.sha256(f"v{_TINY_CACHE_VERSION}".encode())
    for path in files:
        st = path.stat()
        h.update(f"{path.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _cache_dirs(folder: Path) -> list[Path]:
    fallback = cache_root()
    return [folder, fallback]


def _atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` so that readers see the old file or the whole new one."""
    from ..utils import atomic_output

    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _read_cache(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    keys = ("x_train", "y_train", "x_test", "y_test", "fingerprint")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None  # unreadable (e.g. a crashed writer on a non-atomic filesystem): re-decode
    return arrays if str(arrays["fingerprint"]) == fingerprint else None


def _decode_images(items: Sequence[tuple[Path, int]]) -> np.ndarray:
    """Decode RGB 64x64 images into uint8 ``N x 3 x 64 x 64``."""
    from PIL import Image

    out = np.empty((len(items), 3, _TINY_SIZE, _TINY_SIZE), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))  # some Tiny ImageNet JPEGs are greyscale
        except OSError as exc:  # includes PIL.UnidentifiedImageError and truncated files
            raise DataError(f"tiny-imagenet: cannot decode {path}: {exc}; re-download it")
        if rgb.shape != (_TINY_SIZE, _TINY_SIZE, 3):
            raise DataError(f"tiny-imagenet: {path} is {rgb.shape[1]}x{rgb.shape[0]}, expected "
                            f"{_TINY_SIZE}x{_TINY_SIZE}")  # fmt: skip
        out[i] = rgb.transpose(2, 0, 1)
    return out


def _tiny_class_names(
    folder: Path, wnids: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Short names (first synonym in ``words.txt``) and full ``words.txt`` entries per wnid.

    ``words.txt`` only provides readable names; without it (or a wnid in it) the wnid is used.
    """
    words: dict[str, str] = {}
    path = folder / "words.txt"
    if path.is_file():
        wanted = set(wnids)
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, names = line.partition("\t")
            if wnid in wanted:
                words[wnid] = names.strip()
    full = tuple(words.get(w) or w for w in wnids)
    short = tuple(f.split(",")[0].strip() for f in full)
    # Short names collide in a few WordNet cases; fall back to the full entries then.
    return (short if len(set(short)) == len(short) else full), full


def load_tiny_imagenet(root: str | Path | None = None) -> Dataset:
    """Tiny ImageNet (200 classes, 64x64) from the official ``tiny-imagenet-200/`` folder.

    Training images come from ``train/<wnid>/images/`` (class index = line of ``wnids.txt``);
    the labelled ``val/`` split is the test split. Decoding ~110k JPEGs takes a while, so the
    decoded uint8 arrays are cached once in
    ``tiny-imagenet-200/.ddlnl-cache-tiny-imagenet-<key>.npz`` (or under ``$DDLNL_CACHE``,
    default ``~/.cache/ddlnl``, when the folder is read-only). The key is a fingerprint of the
    names, sizes and mtimes of all files read, so a changed folder is decoded afresh; caches
    are written atomically (temporary file + ``os.replace``) and stale ones in the data folder
    are deleted.

    Returns:
        ``Dataset`` with images float32 ``N x 3 x 64 x 64`` (pixels /255 then normalised), labels
        int64 in 0..K-1, classes from ``words.txt``; ``meta`` has ``wnids``, ``class_words``
        and ``cache`` (the cache file used or written, or None).
    """
    folder = _find_dataset_dir(
        "tiny-imagenet", root, ["tiny-imagenet-200"], ["wnids.txt"], "tiny-imagenet-200/",
        _TINY_HOW,
    )  # fmt: skip
    wnids, train, test = _tiny_listing(folder)
    label_files = [folder / "wnids.txt", folder / "val" / "val_annotations.txt"]
    fingerprint = _tiny_fingerprint(folder, label_files + [p for p, _ in train + test])
    cache_name = f"{_TINY_CACHE_PREFIX}{fingerprint}.npz"
    cache: Path | None = None
    arrays = None
    for directory in _cache_dirs(folder):
        arrays = _read_cache(directory / cache_name, fingerprint)
        if arrays is not None:
            cache = directory / cache_name
            break
    if arrays is None:
        arrays = {
            "x_train": _decode_images(train),
            "y_train": np.array([label for _, label in train], dtype=np.int64),
            "x_test": _decode_images(test),
            "y_test": np.array([label for _, label in test], dtype=np.int64),
            "fingerprint": np.array(fingerprint),
        }
        cache = _write_tiny_cache(folder, cache_name, arrays)
    classes, class_words = _tiny_class_names(folder, wnids)
    return _build(
        "tiny-imagenet", _scaled(arrays["x_train"], 255.0), arrays["y_train"],
        _scaled(arrays["x_test"], 255.0), arrays["y_test"], classes, [folder],
        wnids=tuple(wnids), class_words=class_words, cache=str(cache) if cache else None,
    )  # fmt: skip


def _write_tiny_cache(folder: Path, cache_name: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write the cache next to the data, else in the user cache; None (and a warning) if neither."""
    errors = []
    for directory in _cache_dirs(folder):
        try:
            _atomic_save_npz(directory / cache_name, **arrays)
        except OSError as exc:
            errors.append(f"{directory}: {exc}")
            continue
        if directory == folder:
            # Drop caches of earlier versions of this folder; each is as large as the data.
            for stale in folder.glob(f"{_TINY_CACHE_PREFIX}*.npz"):
                if stale.name != cache_name:
                    stale.unlink(missing_ok=True)
        return directory / cache_name
    warnings.warn(
        f"tiny-imagenet: could not write a decode cache ({'; '.join(errors)}); "
        f"set {CACHE_ENV} to a writable folder to avoid decoding on every load"
    )
    return None
