"""``SyntheticSet``: what every distiller returns, evaluated the same way whoever made it.

Saved as one self-describing safetensors file: the tensors plus a JSON metadata header (method,
config, source dataset, noise spec, seed, code version, learned lr) and a SHA-256 of all of it, so
loading executes no code and a tampered or truncated file is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import LabeledTensors
from .errors import DamagedFile, DataError
from .utils import atomic_output

FORMAT = "ddlnl.synthetic/1"


@dataclass(frozen=True)
class SyntheticSet:
    """A distilled (or selected) training set.

    Attributes:
        images: float32 ``N x C x H x W`` in the source dataset's normalised space.
        labels: ``int64`` ``N`` (hard) or float32 ``N x K`` (soft; rows are probabilities).
        lr: a learned learning rate to train with, or None.
        meta: JSON-able facts: ``method``, ``config``, ``dataset``, ``noise``, ``seed``, ``ipc``,
            ``num_classes``, ``code_version``, and whatever the method adds.
    """

    images: torch.Tensor
    labels: torch.Tensor
    lr: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_tensors(self.images, self.labels, self.meta.get("num_classes"))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        if "num_classes" in self.meta:
            return int(self.meta["num_classes"])
        return int(self.labels.shape[1]) if self.labels.ndim == 2 else int(self.labels.max()) + 1

    @property
    def hard_labels(self) -> torch.Tensor:
        """Class indices (argmax of soft labels)."""
        return self.labels if self.labels.ndim == 1 else self.labels.argmax(1)

    def as_labeled(self) -> LabeledTensors:
        return LabeledTensors(self.images, self.labels)

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (``.safetensors`` suggested)."""
        from safetensors.torch import save

        tensors = {"images": self.images.detach().cpu().contiguous(),
                   "labels": self.labels.detach().cpu().contiguous()}
        meta_json = json.dumps({"format": FORMAT, "lr": self.lr, "meta": self.meta}, sort_keys=True,
                               default=_jsonable)
        header = {"ddlnl": meta_json, "sha256": _digest(tensors, meta_json)}
        path = Path(path)
        with atomic_output(path) as tmp:
            tmp.write_bytes(save(tensors, metadata=header))
        return path


def to_set_space(syn: Any, images: torch.Tensor, train_images: torch.Tensor | None = None) -> torch.Tensor:
    """``images`` (ddlnl's normalised space) as a model trained on ``syn`` must see them.

    A set distilled in a ZCA space (``meta["image_space"] == "zca"``: DATM, RCIG) trains models on
    whitened images, so every real image such a model scores (test split, training labels to
    check) is whitened the same way first; any other set (or plain labelled tensors) returns
    ``images`` unchanged.

    Args:
        syn: the synthetic set the model was trained on.
        images: ``N x C x H x W`` real images.
        train_images: the training split ``syn`` was distilled from, on which the whitening is
            refitted (checked against the set's record); default ``images`` itself.

    Raises:
        DataError: ``train_images`` are not the images the set's whitening was fitted on.
    """
    from .augment import zca_space_for

    meta = getattr(syn, "meta", None)
    if not isinstance(meta, dict):
        return images
    space = zca_space_for(meta, images if train_images is None else train_images)
    return images if space is None else space.transform(images)


def display_images(syn: SyntheticSet, train_images: torch.Tensor | None) -> tuple[torch.Tensor, str]:
    """``syn``'s images in ddlnl's normalised space, for figures and pixel checks, and a note.

    A ZCA-space set is un-whitened with the whitening refitted on ``train_images`` (the training
    split it was distilled from); without them it is returned as it is and the note says that the
    images are shown whitened. The note is empty for a set in the normalised space.
    """
    from .augment import zca_space_for

    if syn.meta.get("image_space") != "zca":
        return syn.images, ""
    if train_images is None:
        return syn.images, "shown in ZCA (whitened) space: the training split to un-whiten them is not available"
    space = zca_space_for(syn.meta, train_images)
    assert space is not None
    return space.untransform(syn.images), "un-whitened from the ZCA space the set was distilled in"


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _digest(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _check_tensors(images: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise DataError(f"synthetic images must be float N x C x H x W, got {images.dtype} {tuple(images.shape)}")
    n = images.shape[0]
    if labels.ndim == 1:
        if labels.dtype != torch.int64:
            raise DataError(f"hard synthetic labels must be int64, got {labels.dtype}")
        if labels.numel() != n:
            raise DataError(f"{n} synthetic images but {labels.numel()} labels")
        if n and (int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)):
            raise DataError(f"synthetic labels out of range 0..{num_classes}")
    elif labels.ndim == 2:
        if not labels.is_floating_point() or labels.shape[0] != n:
            raise DataError(f"soft synthetic labels must be float N x K with N={n}, got {labels.dtype} {tuple(labels.shape)}")
        if num_classes is not None and labels.shape[1] != num_classes:
            raise DataError(f"soft labels have {labels.shape[1]} columns but num_classes is {num_classes}")
    else:
        raise DataError(f"synthetic labels must be N or N x K, got shape {tuple(labels.shape)}")
    if not torch.isfinite(images).all():
        raise DataError("synthetic images contain NaN or inf")


def load_synthetic(path: str | Path) -> SyntheticSet:
    """Load a file written by :meth:`SyntheticSet.save`, checking its digest, shapes and dtypes.

    Raises:
        DataError: missing, truncated, tampered or not a ddlnl synthetic set (one line).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"synthetic set {path} not found: give the .safetensors file written by `ddlnl distill`")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except OSError:
        raise  # permissions and the like: the CLI names the path and the fix
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise DamagedFile(path, f"not a readable safetensors file: truncated or corrupt ({type(exc).__name__}); "
                                "re-run `ddlnl distill`") from None
    if "ddlnl" not in header or "sha256" not in header or set(tensors) != {"images", "labels"}:
        raise DataError(f"{path} is a safetensors file but not a ddlnl synthetic set")
    if _digest(tensors, header["ddlnl"]) != header["sha256"]:
        raise DamagedFile(path, "fails its checksum: modified or damaged; re-run `ddlnl distill`")
    try:
        info = json.loads(header["ddlnl"])
    except json.JSONDecodeError:
        raise DamagedFile(path, "its metadata is not valid JSON; re-run `ddlnl distill`") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{path}: unsupported format {info.get('format') if isinstance(info, dict) else info!r} (expected {FORMAT})")
    _check_meaning(tensors, info, path)
    try:
        return SyntheticSet(images=tensors["images"], labels=tensors["labels"], lr=info.get("lr"),
                            meta=info.get("meta") or {})
    except DataError as exc:
        raise DamagedFile(path, f"{exc}; re-run `ddlnl distill`") from None


def _check_meaning(tensors: dict[str, torch.Tensor], info: dict[str, Any], path: Path) -> None:
    """What a checksum cannot catch (a file written by a buggy or foreign writer): a set that
    no training run could use."""
    def bad(reason: str) -> DamagedFile:
        return DamagedFile(path, f"{reason}; re-run `ddlnl distill`")

    images, labels = tensors["images"], tensors["labels"]
    lr, meta = info.get("lr"), info.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise bad(f"its metadata is a {type(meta).__name__}, not a mapping")
    if images.ndim != 4 or images.shape[0] == 0 or 0 in tuple(images.shape):
        raise bad(f"it holds no images (shape {tuple(images.shape)})")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0):
        raise bad(f"its learned learning rate {lr!r} is not a positive number")
    k = (meta or {}).get("num_classes")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise bad(f"its num_classes {k!r} is not a positive integer")
    if labels.ndim == 2 and labels.is_floating_point() and labels.numel():
        if not torch.isfinite(labels).all():
            raise bad("its soft labels contain NaN or inf")
