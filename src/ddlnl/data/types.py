"""The in-memory dataset types: :class:`LabeledTensors` and :class:`Dataset`, and the
normalisation of both splits with training statistics."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..errors import DataError


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
