"""A dataset of your own as image folders, one per class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

from .common import _ROOT_HINT, _build, _scaled
from .tiny_imagenet import _IMAGE_SUFFIXES
from .types import Dataset


# -------------------------------------------------------------------------------- imagefolder


def load_imagefolder(root: str | Path | None = None) -> Dataset:
    """Images in class folders: ``root/train/<class>/*`` and ``root/test/<class>/*``.

    Classes are the sorted folder names under ``train/`` (index = position); every test class
    folder must be one of them. Files (``.png``, ``.jpg``, ``.jpeg``) are read in sorted order.
    All images must share one size. They are loaded greyscale (1 channel) when every image is
    greyscale, else RGB (3 channels). Not cached: meant for small custom datasets.

    Returns:
        ``Dataset`` with images float32 ``N x C x H x W`` (pixels /255 then normalised).
    """
    from PIL import Image

    if root is None:
        raise DataError(f"imagefolder: no folder given; {_ROOT_HINT} to a folder with "
                        "train/<class>/ and test/<class>/ image folders")  # fmt: skip
    folder = Path(root).expanduser()
    train_dir, test_dir = folder / "train", folder / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"imagefolder: {d} does not exist; expected {folder}/train/<class>/ "
                            f"and {folder}/test/<class>/ image folders")  # fmt: skip
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    extra = sorted({p.name for p in test_dir.iterdir() if p.is_dir()} - set(classes))
    if not classes or extra:
        raise DataError(f"imagefolder: {test_dir} has classes {extra} absent from {train_dir}"
                        if extra else f"imagefolder: no class folders in {train_dir}")  # fmt: skip

    def listing(split_dir: Path) -> list[tuple[Path, int]]:
        return [
            (p, label)
            for label, name in enumerate(classes)
            if (split_dir / name).is_dir()
            for p in sorted((split_dir / name).iterdir())
            if p.suffix.lower() in _IMAGE_SUFFIXES
        ]

    splits = [listing(train_dir), listing(test_dir)]
    images: list[list[Any]] = [[], []]
    for k, items in enumerate(splits):
        if not items:
            raise DataError(f"imagefolder: no images in {[train_dir, test_dir][k]}/<class>/")
        for path, _ in items:
            try:
                with Image.open(path) as img:
                    img.load()
                    images[k].append(img.copy())
            except OSError as exc:
                raise DataError(f"imagefolder: cannot decode {path}: {exc}")
    first = images[0][0]
    grey = all(img.mode in ("1", "L") for split in images for img in split)
    arrays = []
    for items, split in zip(splits, images):
        out = []
        for (path, _), img in zip(items, split):
            if img.size != first.size:
                raise DataError(f"imagefolder: {path} is {img.size[0]}x{img.size[1]} but "
                                f"{splits[0][0][0]} is {first.size[0]}x{first.size[1]}; resize "
                                "all images to one size")  # fmt: skip
            a = np.asarray(img.convert("L" if grey else "RGB"))
            out.append(a[None] if grey else a.transpose(2, 0, 1))
        arrays.append(np.stack(out))
    labels = [np.array([label for _, label in items], dtype=np.int64) for items in splits]
    return _build(
        "imagefolder", _scaled(arrays[0], 255.0), labels[0], _scaled(arrays[1], 255.0),
        labels[1], classes, [folder],
    )  # fmt: skip
