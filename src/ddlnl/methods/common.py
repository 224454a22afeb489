"""Pieces shared by distillers: per-class indices and initialisation from real images."""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError


def class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """For each class ``c`` the indices of samples whose (hard) label is ``c``."""
    return [torch.nonzero(labels == c).flatten() for c in range(num_classes)]


def check_ipc(indices: list[torch.Tensor], ipc: int | Sequence[int]) -> None:
    """Refuse an IPC that some class cannot supply from real images (``ipc``: one value for every
    class, or one per class)."""
    counts = [int(i.numel()) for i in indices]
    if not isinstance(ipc, int):
        per = [int(n) for n in ipc]
        if len(per) != len(indices) or min(per, default=0) < 1:
            raise ConfigError(f"per-class ipc must give one value >= 1 for each of the {len(indices)} classes, got {per}")
        for c, (n, have) in enumerate(zip(per, counts)):
            if n > have:
                raise ConfigError(f"ipc {n} for (noisy) class {c} exceeds its {have} images: lower that class's budget")
        return
    if ipc < 1:
        raise ConfigError(f"ipc must be >= 1, got {ipc}")
    smallest = min(counts)
    if ipc > smallest:
        c = counts.index(smallest)
        raise ConfigError(
            f"ipc={ipc} exceeds the {smallest} images of (noisy) class {c}: use ipc <= {smallest}"
        )


def sample_per_class(indices: list[torch.Tensor], ipc: int | Sequence[int], g: torch.Generator) -> torch.Tensor:
    """``ipc`` distinct indices from every class (or ``ipc[c]`` from class ``c``), class-major
    order (class 0 first)."""
    check_ipc(indices, ipc)
    per = [ipc] * len(indices) if isinstance(ipc, int) else [int(n) for n in ipc]
    picks = [idx[torch.randperm(idx.numel(), generator=g)[:n]] for idx, n in zip(indices, per)]
    return torch.cat(picks)
