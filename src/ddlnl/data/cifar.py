"""CIFAR-10 and CIFAR-100 (fine, and coarse: the 20 superclasses) from the official python
pickles, read without unpickling code."""

from __future__ import annotations

import codecs
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
try:  # numpy >= 2 (numpy.core became numpy._core)
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

from .common import _ROOT_HINT, _build, _check_label_range, _find_dataset_dir, _require_file, _scaled
from .types import Dataset


# --------------------------------------------------------------------------------- CIFAR pickles

# The official CIFAR "python version" batches are pickled dicts of numpy arrays, lists and byte
# strings. Unpickling is code execution in general, so only the globals needed to rebuild a numpy
# array are resolved. ``_codecs.encode`` is what Python 3's protocol-2 pickler emits for bytes.
_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,  # numpy < 2 writers (the originals)
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,  # numpy >= 2 writers
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _load_batch(path: Path, required: Sequence[bytes], dataset: str) -> dict[bytes, Any]:
    """Unpickle one CIFAR batch file (``encoding="bytes"``, as the files come from Python 2)."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    # A damaged pickle can fail in many ways; all of them mean "not a usable batch file".
    except (
        pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError,
        KeyError, IndexError,
    ) as exc:  # fmt: skip
        raise DataError(
            f"{dataset}: cannot read {path} ({type(exc).__name__}: {exc}); the file is truncated "
            "or not an official CIFAR python batch, re-download it"
        )
    if not isinstance(batch, dict) or any(key not in batch for key in required):
        keys = ", ".join(k.decode() for k in required)
        raise DataError(f"{dataset}: {path} is not a CIFAR batch file (expected keys {keys})")
    return batch


def _batch_images(batch: dict[bytes, Any], path: Path, dataset: str) -> np.ndarray:
    # Each row is 3072 uint8: the 1024 red, then green, then blue values of a 32x32 image in
    # row-major order, so a reshape to N x 3 x 32 x 32 is exact.
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{dataset}: {path} holds data {data.dtype} {data.shape}, expected uint8 N x 3072"
        )
    return data.reshape(-1, 3, 32, 32)


def _batch_labels(
    batch: dict[bytes, Any], key: bytes, n: int, k: int, path: Path, dataset: str
) -> np.ndarray:
    labels = np.asarray(batch[key], dtype=np.int64)
    if labels.shape != (n,):
        raise DataError(f"{dataset}: {path} has {n} images but {labels.shape} {key.decode()}")
    _check_label_range(labels, k, f"{path} ({key.decode()})")
    return labels


def _names(values: Sequence[Any]) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


_CIFAR10_HOW = (
    "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpack it, and "
    f"{_ROOT_HINT} to cifar-10-batches-py/ or its parent"
)


def load_cifar10(root: str | Path | None = None) -> Dataset:
    """CIFAR-10 from the official ``cifar-10-batches-py/`` folder.

    Reads ``data_batch_1`` .. ``data_batch_5`` (training, in that order: the order CIFAR-N label
    files index), ``test_batch`` and ``batches.meta`` (class names). ``root`` may be the folder
    itself or its parent; default search as in :func:`load_dataset`.

    Returns:
        ``Dataset`` with 50000 / 10000 images float32 ``N x 3 x 32 x 32`` (pixels /255 then
        normalised per channel), labels int64 in 0..9.
    """
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    folder = _find_dataset_dir(
        "cifar10", root, ["cifar-10-batches-py"], ["batches.meta", *train_files, "test_batch"],
        "cifar-10-batches-py/", _CIFAR10_HOW,
    )  # fmt: skip
    meta_path = _require_file("cifar10", folder, "batches.meta", _CIFAR10_HOW)
    classes = _names(_load_batch(meta_path, [b"label_names"], "cifar10")[b"label_names"])
    if len(classes) != 10:
        raise DataError(f"cifar10: {meta_path} lists {len(classes)} classes, expected 10")
    splits = []
    for names in (train_files, ["test_batch"]):
        images, labels = [], []
        for filename in names:
            path = _require_file("cifar10", folder, filename, _CIFAR10_HOW)
            batch = _load_batch(path, [b"data", b"labels"], "cifar10")
            images.append(_batch_images(batch, path, "cifar10"))
            labels.append(_batch_labels(batch, b"labels", len(images[-1]), 10, path, "cifar10"))
        splits.append((np.concatenate(images), np.concatenate(labels)))
    (x_train, y_train), (x_test, y_test) = splits
    sources = [folder / f for f in ["batches.meta", *train_files, "test_batch"]]
    train_pixels, test_pixels = _scaled(x_train, 255.0), _scaled(x_test, 255.0)
    return _build("cifar10", train_pixels, y_train, test_pixels, y_test, classes, sources)


# ------------------------------------------------------------------------------------ CIFAR-100

#: The 100 CIFAR-100 fine classes, index = fine label (the order of ``meta[b"fine_label_names"]``).
CIFAR100_FINE_CLASSES: tuple[str, ...] = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split()
)

# The superclass table of https://www.cs.toronto.edu/~kriz/cifar.html, written out by name so
# the mapping below can be checked by eye (fine ids are *not* grouped in blocks of five).
_CIFAR100_SUPERCLASS_MEMBERS: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

#: The 20 CIFAR-100 superclasses, index = coarse label (``meta[b"coarse_label_names"]`` order).
CIFAR100_COARSE_CLASSES: tuple[str, ...] = tuple(_CIFAR100_SUPERCLASS_MEMBERS)

#: ``CIFAR100_FINE_TO_COARSE[fine] = coarse``: the official superclass of each fine label.
#: Equals the list used by the noisy-label literature (e.g. Co-teaching / DivideMix code), and
#: the loader checks it against the coarse labels stored in the real files.
CIFAR100_FINE_TO_COARSE: tuple[int, ...] = tuple(
    next(i for i, members in enumerate(_CIFAR100_SUPERCLASS_MEMBERS.values()) if fine in members)
    for fine in CIFAR100_FINE_CLASSES
)

_CIFAR100_HOW = (
    "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, unpack it, and "
    f"{_ROOT_HINT} to cifar-100-python/ or its parent"
)


def load_cifar100(root: str | Path | None = None) -> Dataset:
    """CIFAR-100 from the official ``cifar-100-python/`` folder (``train``, ``test``, ``meta``).

    Labels are the fine labels. The coarse labels stored in the files are checked against
    :data:`CIFAR100_FINE_TO_COARSE` (a mismatch means a foreign or corrupt file) and kept.

    Returns:
        ``Dataset`` with 50000 / 10000 images float32 ``N x 3 x 32 x 32`` (pixels /255 then
        normalised), fine labels int64 in 0..99, and in ``meta``: ``coarse_labels`` (train,
        int64 tensor ``N``), ``test_coarse_labels``, ``coarse_classes`` (20 names).
    """
    folder = _find_dataset_dir(
        "cifar100", root, ["cifar-100-python"], ["meta", "train", "test"],
        "cifar-100-python/", _CIFAR100_HOW,
    )  # fmt: skip
    meta_path = _require_file("cifar100", folder, "meta", _CIFAR100_HOW)
    meta = _load_batch(meta_path, [b"fine_label_names", b"coarse_label_names"], "cifar100")
    classes, coarse_classes = _names(meta[b"fine_label_names"]), _names(meta[b"coarse_label_names"])
    if len(classes) != 100 or len(coarse_classes) != 20:
        raise DataError(f"cifar100: {meta_path} lists {len(classes)}/{len(coarse_classes)} "
                        "fine/coarse classes, expected 100/20")  # fmt: skip
    fine_to_coarse = np.asarray(CIFAR100_FINE_TO_COARSE, dtype=np.int64)
    splits = []
    for filename in ("train", "test"):
        path = _require_file("cifar100", folder, filename, _CIFAR100_HOW)
        batch = _load_batch(path, [b"data", b"fine_labels", b"coarse_labels"], "cifar100")
        images = _batch_images(batch, path, "cifar100")
        fine = _batch_labels(batch, b"fine_labels", len(images), 100, path, "cifar100")
        coarse = _batch_labels(batch, b"coarse_labels", len(images), 20, path, "cifar100")
        bad = np.flatnonzero(fine_to_coarse[fine] != coarse)
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"cifar100: {path} gives fine label {fine[i]} coarse label {coarse[i]} (sample "
                f"{i}, {bad.size} such), but the official superclass is {fine_to_coarse[fine[i]]}; "
                "the file is not the official CIFAR-100"
            )
        splits.append((images, fine, coarse))
    (x_train, y_train, c_train), (x_test, y_test, c_test) = splits
    return _build(
        "cifar100", _scaled(x_train, 255.0), y_train, _scaled(x_test, 255.0), y_test, classes,
        [folder / "meta", folder / "train", folder / "test"],
        coarse_labels=torch.from_numpy(c_train), test_coarse_labels=torch.from_numpy(c_test),
        coarse_classes=coarse_classes,
    )  # fmt: skip


def load_cifar100_coarse(root: str | Path | None = None) -> Dataset:
    """CIFAR-100 with its 20 superclasses as the classes (``cifar100-coarse``).

    The same files, images and normalisation as :func:`load_cifar100`; the labels are the
    official coarse labels, so CIFAR-100N's ``noisy-coarse`` human labels (``natural:noisy-coarse``,
    the study's ``--is_coarse`` runs, DD_LNL ``CIFAR100n_coarse``) have a 20-class dataset to go with.

    Returns:
        ``Dataset`` named ``cifar100-coarse`` with 50000 / 10000 images float32 ``N x 3 x 32 x 32``,
        coarse labels int64 in 0..19, the 20 superclass names as ``classes``, and in ``meta``:
        ``fine_labels`` (train, int64 tensor ``N``), ``test_fine_labels``, ``fine_classes``.
    """
    fine = load_cifar100(root)
    meta = {k: v for k, v in fine.meta.items()
            if k not in ("coarse_labels", "test_coarse_labels", "coarse_classes")}
    meta.update(fine_labels=fine.train.labels, test_fine_labels=fine.test.labels, fine_classes=fine.classes)
    return Dataset(
        name="cifar100-coarse",
        train=fine.train.with_labels(torch.as_tensor(fine.meta["coarse_labels"], dtype=torch.int64)),
        test=fine.test.with_labels(torch.as_tensor(fine.meta["test_coarse_labels"], dtype=torch.int64)),
        classes=tuple(fine.meta["coarse_classes"]),
        mean=fine.mean,
        std=fine.std,
        meta=meta,
    )
