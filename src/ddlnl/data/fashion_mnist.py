"""Fashion-MNIST from its IDX files (gzipped or not)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

from .common import _ROOT_HINT, _build, _check_label_range, _find_dataset_dir, _scaled
from .types import Dataset


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
