"""Datasets as in-memory tensors, and the loader registry.

Every loader returns a :class:`Dataset` whose ``train`` and ``test`` splits are
:class:`LabeledTensors` (float images ``N x C x H x W``, normalised with statistics of the
*training* split, and ``int64`` labels). Noise is never baked into a dataset: noisy labels are
produced by :mod:`ddlnl.noise` and attached with :meth:`LabeledTensors.with_labels`.
"""

from __future__ import annotations

import codecs
import difflib
import gzip
import hashlib
import os
import pickle
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .utils import CACHE_ENV, cache_root  # CACHE_ENV: a folder for decoded caches when the data folder is read-only

try:  # numpy >= 2 (numpy.core became numpy._core)
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


@dataclass(frozen=True)
class LabeledTensors:
    """Images and labels held as tensors.

    Attributes:
        images: float32 tensor ``N x C x H x W``.
        labels: ``int64`` tensor ``N`` (hard labels) or float tensor ``N x K`` (soft labels,
            rows are probability vectors or logits, as the producer documents).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"images must be N x C x H x W, got shape {tuple(self.images.shape)}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"{self.images.shape[0]} images but {self.labels.shape[0]} labels: they must match"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def hard(self) -> bool:
        """True when labels are class indices (``int64``, one per sample)."""
        return self.labels.ndim == 1

    def subset(self, index: torch.Tensor | list[int]) -> "LabeledTensors":
        """The samples at ``index`` (a long tensor, list of ints or boolean mask)."""
        index = torch.as_tensor(index)
        return LabeledTensors(self.images[index], self.labels[index])

    def with_labels(self, labels: torch.Tensor) -> "LabeledTensors":
        """The same images with other labels (e.g. noisy ones); the length must match."""
        return LabeledTensors(self.images, torch.as_tensor(labels))

    def to(self, device: torch.device | str) -> "LabeledTensors":
        return LabeledTensors(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Dataset:
    """A named dataset: train and test splits plus what describes them.

    Attributes:
        name: registry name (``"digits"``, ``"fashion-mnist"``, ``"cifar10"``, ...).
        train, test: the splits; ``test`` is never corrupted by noise.
        classes: class names, index = label.
        mean, std: per-channel normalisation statistics computed on the raw training split
            (pixel scale [0, 1]); images in both splits are ``(x - mean) / std``.
        meta: extra facts, e.g. ``coarse_labels`` (CIFAR-100 train coarse labels, ``int64``),
            ``coarse_classes``, ``split`` (how a split was made), ``source`` (files read).
    """

    name: str
    train: LabeledTensors
    test: LabeledTensors
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    def with_train_labels(self, labels: torch.Tensor) -> "Dataset":
        """This dataset with other training labels (same images, same test split)."""
        return replace(self, train=self.train.with_labels(labels))

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalised images back to pixel scale [0, 1] (not clipped)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return images * std + mean


def normalize_splits(
    train_pixels: torch.Tensor, test_pixels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...], tuple[float, ...]]:
    """Normalise both splits with per-channel mean/std of the training split.

    Args:
        train_pixels, test_pixels: float tensors ``N x C x H x W`` in [0, 1].

    Returns:
        ``(train, test, mean, std)`` with the statistics as tuples of floats.
    """
    mean = train_pixels.mean(dim=(0, 2, 3), dtype=torch.float64)
    std = train_pixels.std(dim=(0, 2, 3)).double().clamp_min(1e-8)
    m = mean.float().view(1, -1, 1, 1)
    s = std.float().view(1, -1, 1, 1)
    return (
        (train_pixels - m) / s,
        (test_pixels - m) / s,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
    )


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


# ------------------------------------------------------------------------------------ digits


def load_digits(root: str | Path | None = None) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download needed).

    Pixels are 0..16 in the source and are divided by 16. The dataset ships without a test
    split, so a fixed stratified split is made:
    ``sklearn.model_selection.train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)``,
    giving 1257 training and 540 test images, the same on every call.

    Args:
        root: ignored (the data is bundled with scikit-learn); accepted for registry uniformity.

    Returns:
        ``Dataset`` with images float32 ``N x 1 x 8 x 8``, labels int64 in 0..9, classes
        ``"0".."9"``, ``meta["split"]`` describing the split.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    x, y = _sk_load_digits(return_X_y=True)
    x = x.reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=0
    )
    return _build(
        "digits",
        _scaled(x_train, 16.0),
        y_train,
        _scaled(x_test, 16.0),
        y_test,
        [str(i) for i in range(10)],
        ["sklearn.datasets.load_digits"],
        split="stratified train_test_split(test_size=0.3, stratify=y, random_state=0)",
    )


# ----------------------------------------------------------------------------- fashion-mnist

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FASHION_HOW = (
    "install it with `apt-get install dataset-fashion-mnist`, or download the four IDX files "
    f"from https://github.com/zalandoresearch/fashion-mnist and {_ROOT_HINT}"
)
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX magic numbers: two zero bytes, a type byte (0x08 = unsigned byte), the number of dims.
IDX_IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dims (N, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dim (N)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Parse one IDX file (the MNIST format), gzipped (``.gz``) or not.

    The header is a big-endian int32 magic number ``0x0000TTDD`` (``TT`` element type, ``DD``
    number of dimensions) followed by ``DD`` big-endian int32 sizes; the payload must hold exactly
    the product of the sizes times the element size.

    Args:
        path: the file.
        expected_magic: e.g. :data:`IDX_IMAGES_MAGIC` (2051) or :data:`IDX_LABELS_MAGIC` (2049).

    Returns:
        Array of the header's shape and (native-endian) dtype.

    Raises:
        DataError: unreadable, truncated or trailing bytes, or an unexpected magic number.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {exc} (truncated or corrupt download?)")
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, not even a header")
    magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or type_code not in _IDX_DTYPES or (
        expected_magic is not None and magic != expected_magic
    ):
        want = f" (expected {expected_magic})" if expected_magic is not None else ""
        raise DataError(f"{path} is not the expected IDX file: magic number {magic}{want}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {state}: header {'x'.join(map(str, shape))} needs {expected} "
            f"data bytes, file has {len(raw) - header}; re-download it"
        )
    # astype copies into a writable, native-endian array (frombuffer views the read-only bytes).
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _idx_path(folder: Path, stem: str) -> Path:
    # Prefer the unpacked file (no decompression); fall back to the .gz as distributed.
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"fashion-mnist: missing {stem} or {stem}.gz in {folder}; {_FASHION_HOW}"
    )


def load_fashion_mnist(root: str | Path | None = None) -> Dataset:
    """Fashion-MNIST from its four IDX files (``.gz`` as distributed, or unpacked).

    Searched in ``root`` (the folder holding the files, or its parent with a ``fashion-mnist/``
    or torchvision ``FashionMNIST/raw/`` subfolder), else ``$DDLNL_DATA``, else
    ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).

    Returns:
        ``Dataset`` with 60000 train / 10000 test images float32 ``N x 1 x 28 x 28`` (pixels
        /255 then normalised), labels int64 in 0..9, classes ``FASHION_MNIST_CLASSES``.
    """
    markers = [s + ext for s in _FASHION_FILES.values() for ext in ("", ".gz")]
    folder = _find_dataset_dir(
        "fashion-mnist", root, ["fashion-mnist", "FashionMNIST/raw"], markers,
        "the Fashion-MNIST IDX files", _FASHION_HOW,
    )  # fmt: skip
    paths = {key: _idx_path(folder, stem) for key, stem in _FASHION_FILES.items()}
    arrays = {
        key: read_idx(path, IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC)
        for key, path in paths.items()
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"fashion-mnist: {paths[split + '_images']} has {images.shape[0]} images but "
                f"{paths[split + '_labels']} has {labels.shape[0]} labels; re-download them"
            )
        _check_label_range(labels, 10, str(paths[f"{split}_labels"]))
    return _build(
        "fashion-mnist",
        _scaled(arrays["train_images"][:, None], 255.0),
        arrays["train_labels"],
        _scaled(arrays["test_images"][:, None], 255.0),
        arrays["test_labels"],
        FASHION_MNIST_CLASSES,
        paths.values(),
    )


def _check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"labels in {where} span {int(labels.min())}..{int(labels.max())}, "
            f"expected 0..{num_classes - 1}; the file is corrupt or not what it claims to be"
        )


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
    from .utils import atomic_output

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
