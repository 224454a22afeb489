"""Datasets as in-memory tensors, and the loader registry.

Every loader returns a :class:`Dataset` whose ``train`` and ``test`` splits are
:class:`LabeledTensors` (float images ``N x C x H x W``, normalised with statistics of the
*training* split, and ``int64`` labels). Noise is never baked into a dataset: noisy labels are
produced by :mod:`ddlnl.noise` and attached with :meth:`LabeledTensors.with_labels`.

One module per on-disk format: :mod:`.digits` (bundled), :mod:`.fashion_mnist` (IDX files),
:mod:`.cifar` (the official python pickles), :mod:`.cifar_n` (CIFAR-N label files),
:mod:`.tiny_imagenet` (the official folder, decoded once and cached), :mod:`.npz`,
:mod:`.imagefolder`; the shared types in :mod:`.types`, where files are looked for in
:mod:`.common`. This module holds the registry (``DATASETS``, ``DATASET_FACTS``) and
:func:`load_dataset`, and re-exports every name of the former single module.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

from .cifar import load_cifar10, load_cifar100, load_cifar100_coarse
from .digits import load_digits
from .fashion_mnist import load_fashion_mnist
from .imagefolder import load_imagefolder
from .npz import load_npz
from .tiny_imagenet import load_tiny_imagenet
from .types import Dataset

# Re-exported: ``ddlnl.data.X`` keeps working for every name of the former module.
from .types import (  # noqa: F401
    LabeledTensors, normalize_splits,
)
from .common import (  # noqa: F401
    DATA_ENV, DEFAULT_DATA_ROOTS, _ROOT_HINT, _build, _check_label_range, _find_dataset_dir, _require_file,
    _scaled,
)
from .fashion_mnist import (  # noqa: F401
    FASHION_MNIST_CLASSES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, _FASHION_FILES, _FASHION_HOW, _IDX_DTYPES,
    _idx_path, read_idx,
)
from .cifar import (  # noqa: F401
    CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR100_FINE_TO_COARSE, _ArrayOnlyUnpickler,
    _CIFAR100_HOW, _CIFAR100_SUPERCLASS_MEMBERS, _CIFAR10_HOW, _PICKLE_ALLOWED, _batch_images, _batch_labels,
    _load_batch, _names,
)
from .tiny_imagenet import (  # noqa: F401
    _IMAGE_SUFFIXES, _TINY_CACHE_PREFIX, _TINY_CACHE_VERSION, _TINY_HOW, _TINY_SIZE, _atomic_save_npz,
    _cache_dirs, _decode_images, _read_cache, _tiny_class_names, _tiny_fingerprint, _tiny_listing,
    _write_tiny_cache,
)
from .npz import (  # noqa: F401
    _CHANNEL_COUNTS, _npz_images, _npz_labels,
)
from .cifar_n import (  # noqa: F401
    CIFAR_N_FILES, CIFAR_N_VARIANTS, _cifar_n_safe_globals, _weights_only_reason, load_cifar_n,
)


# ------------------------------------------------------------------------------------ registry

#: Dataset name -> loader ``(root: str | Path | None = None) -> Dataset``.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "cifar100-coarse": load_cifar100_coarse,
    "tiny-imagenet": load_tiny_imagenet,
    "npz": load_npz,
    "imagefolder": load_imagefolder,
}


@dataclass(frozen=True)
class DatasetFacts:
    """What is known of a registered dataset before any of its files are read."""

    channels: int
    image_size: tuple[int, int]  # height, width
    num_classes: int
    train_size: int  # images in the full training split

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(channels, height, width, classes, training images)``."""
        return (self.channels, *self.image_size, self.num_classes, self.train_size)


# The one table of dataset facts: configurations resolve (ConvNet depth, a method's own evaluation
# recipe) and dry runs plan memory from it without loading the data. The file-based formats (npz,
# imagefolder) are not listed: their facts are known only once they are read.
DATASET_FACTS: dict[str, DatasetFacts] = {
    "digits": DatasetFacts(1, (8, 8), 10, 1257),
    "fashion-mnist": DatasetFacts(1, (28, 28), 10, 60000),
    "cifar10": DatasetFacts(3, (32, 32), 10, 50000),
    "cifar100": DatasetFacts(3, (32, 32), 100, 50000),
    "cifar100-coarse": DatasetFacts(3, (32, 32), 20, 50000),
    "tiny-imagenet": DatasetFacts(3, (64, 64), 200, 100000),
}


def load_dataset(name: str, root: str | Path | None = None) -> Dataset:
    """Load a registered dataset (see ``sorted(DATASETS)``) into memory.

    Where files are needed they are found in ``root`` if given (a dataset folder such as
    ``cifar-10-batches-py/`` or its parent; for ``npz`` the file itself), else under
    ``$DDLNL_DATA``, else in the dataset's default places (``/usr/share/datasets/fashion-mnist``
    for Fashion-MNIST).

    Returns:
        ``Dataset`` whose splits hold float32 ``N x C x H x W`` images normalised per channel
        with training-split statistics (``mean``/``std`` at pixel scale [0, 1]) and int64
        labels; ``meta["source"]`` lists what was read.

    Raises:
        DataError: unknown name, or missing / truncated / foreign files (one-line message).
    """
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"unknown dataset {name!r}{hint}; choose one of {', '.join(sorted(DATASETS))}"
        )
    return DATASETS[name](root=root)
