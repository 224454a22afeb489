"""Writers of tiny datasets in exactly the official on-disk formats (into pytest's tmp_path).

Nothing binary is committed: each writer builds its files from seeded random data and returns
the arrays it wrote, so tests can assert that the loaders give them back.
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ddlnl.data import (
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_FINE_TO_COARSE,
)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _numpy1_names(pickled: bytes) -> bytes:
    # The official files were pickled when numpy's array reconstructor lived in numpy.core; numpy 2
    # writes numpy._core. Protocol-2 GLOBAL opcodes are plain newline-terminated text, so the
    # module name can be swapped in place to reproduce the originals.
    return pickled.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_pickle(path: Path, obj: Any) -> None:
    """Pickle ``obj`` as the CIFAR python batches are: protocol 2, numpy-1 global names."""
    path.write_bytes(_numpy1_names(pickle.dumps(obj, protocol=2)))


def _cifar_rows(rng: np.random.Generator, n: int, offset: int) -> np.ndarray:
    """uint8 ``n x 3072`` rows (R plane, G plane, B plane; each 32x32 row-major)."""
    return rng.integers(offset, offset + 128, size=(n, 3072), dtype=np.uint8)


def write_cifar10(
    parent: Path, per_batch: int = 2, n_test: int = 3, seed: int = 0
) -> dict[str, Any]:
    """Write ``parent/cifar-10-batches-py/``; return train/test rows and labels as written.

    Training pixels are drawn from 0..127 and test pixels from 128..255 so that statistics of
    the two splits differ (normalisation must use the training ones).
    """
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    write_pickle(
        folder / "batches.meta",
        {b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES],
         b"num_vis": 3072},
    )  # fmt: skip
    rows, labels = [], []
    for i in range(1, 6):
        data = _cifar_rows(rng, per_batch, 0)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]  # the originals hold Python lists
        write_pickle(folder / f"data_batch_{i}", {
            b"batch_label": f"training batch {i} of 5".encode(), b"labels": y, b"data": data,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
        })  # fmt: skip
        rows.append(data)
        labels += y
    test = _cifar_rows(rng, n_test, 128)
    test_labels = [int(v) for v in rng.integers(0, 10, n_test)]
    write_pickle(folder / "test_batch", {
        b"batch_label": b"testing batch 1 of 1", b"labels": test_labels, b"data": test,
        b"filenames": [f"test_{j}.png".encode() for j in range(n_test)],
    })  # fmt: skip
    return {
        "folder": folder,
        "train_rows": np.concatenate(rows),
        "train_labels": np.array(labels),
        "test_rows": test,
        "test_labels": np.array(test_labels),
    }


def write_cifar100(
    parent: Path, n_train: int = 6, n_test: int = 4, seed: int = 0, corrupt_coarse: bool = False
) -> dict[str, Any]:
    """Write ``parent/cifar-100-python/`` (``train``, ``test``, ``meta``).

    Coarse labels follow the official mapping; ``corrupt_coarse`` moves one training sample to
    a wrong superclass (a file the loader must refuse).
    """
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    write_pickle(folder / "meta", {
        b"fine_label_names": [c.encode() for c in CIFAR100_FINE_CLASSES],
        b"coarse_label_names": [c.encode() for c in CIFAR100_COARSE_CLASSES],
    })  # fmt: skip
    out: dict[str, Any] = {"folder": folder}
    for split, n in (("train", n_train), ("test", n_test)):
        data = _cifar_rows(rng, n, 0 if split == "train" else 128)
        fine = [int(v) for v in rng.choice(100, size=n, replace=False)]
        coarse = [CIFAR100_FINE_TO_COARSE[f] for f in fine]
        if corrupt_coarse and split == "train":
            coarse[0] = (coarse[0] + 1) % 20
        write_pickle(folder / split, {
            b"filenames": [f"{split}_{j}.png".encode() for j in range(n)],
            b"batch_label": f"{split} batch".encode(), b"fine_labels": fine,
            b"coarse_labels": coarse, b"data": data,
        })  # fmt: skip
        out.update({f"{split}_rows": data, f"{split}_fine": np.array(fine),
                    f"{split}_coarse": np.array(coarse)})  # fmt: skip
    return out


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """Write a uint8 IDX file: magic 0x0000 08 <ndim>, big-endian int32 dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def write_fashion_mnist(
    folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four Fashion-MNIST IDX files (``.gz`` or unpacked) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array, gz)
    return arrays


# Flat colours survive JPEG compression almost exactly (no edges to ring around).
TINY_COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def write_jpeg(path: Path, colour: tuple[int, int, int], size: int = 64, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size), colour)
    (image.convert("L") if mode == "L" else image).save(path, format="JPEG", quality=95)


def write_tiny_imagenet(parent: Path, n_train: int = 3, n_val: int = 2) -> dict[str, Any]:
    """Write ``parent/tiny-imagenet-200/`` with three classes of flat-colour 64x64 JPEGs.

    Class ``k`` images have colour ``TINY_COLOURS[k]``. Like the original, ``words.txt`` lists
    more wnids than are used, training folders contain a ``<wnid>_boxes.txt`` and validation
    annotations are in ``val/val_annotations.txt``. One training image is stored greyscale,
    as a few originals are.
    """
    folder = parent / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    folder.mkdir(parents=True)
    # Written deliberately out of sorted order: wnids.txt order is the class order.
    order = [wnids[2], wnids[0], wnids[1]]
    (folder / "wnids.txt").write_text("".join(w + "\n" for w in order))
    (folder / "words.txt").write_text(
        "n00001740\tentity\n"
        "n01443537\tgoldfish, Carassius auratus\n"
        "n01629819\tEuropean fire salamander, Salamandra salamandra\n"
        "n01641577\tbullfrog, Rana catesbeiana\n"
    )
    for label, wnid in enumerate(order):
        class_dir = folder / "train" / wnid
        for j in range(n_train):
            mode = "L" if (label, j) == (0, 0) else "RGB"
            write_jpeg(class_dir / "images" / f"{wnid}_{j}.JPEG", TINY_COLOURS[label], mode=mode)
        (class_dir / f"{wnid}_boxes.txt").write_text(
            "".join(f"{wnid}_{j}.JPEG\t0\t0\t63\t63\n" for j in range(n_train))
        )
    lines = []
    for i in range(n_val * len(order)):
        label = (i * 2) % len(order)
        name = f"val_{i}.JPEG"
        write_jpeg(folder / "val" / "images" / name, TINY_COLOURS[label])
        lines.append(f"{name}\t{order[label]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(reversed(lines)))
    return {"folder": folder, "wnids": order}


def write_cifar_n(path: Path, arrays: dict[str, Any], numpy1_names: bool = True) -> None:
    """``torch.save`` a dict of arrays, as the official CIFAR-N ``.pt`` files were written.

    With ``numpy1_names`` the pickle inside the zip container is rewritten to the numpy-1
    global names the originals carry.
    """
    torch.save(arrays, path)
    if not numpy1_names:
        return
    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                data = _numpy1_names(data)
            zout.writestr(info, data)
