"""Pieces shared by distillers: per-class indices and initialisation from real images."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """For each class ``c`` the indices of samples whose (hard) label is ``c``."""
    return [torch.nonzero(labels == c).flatten() for c in range(num_classes)]


def check_ipc(indices: list[torch.Tensor], ipc: int) -> None:
    """Refuse an IPC that some class cannot supply from real images."""
    if ipc < 1:
        raise ConfigError(f"ipc must be >= 1, got {ipc}")
    counts = [int(i.numel()) for i in indices]
    smallest = min(counts)
    if ipc > smallest:
        c = counts.index(smallest)
        raise ConfigError(
            f"ipc={ipc} exceeds the {smallest} images of (noisy) class {c}: use ipc <= {smallest}"
        )


def sample_per_class(indices: list[torch.Tensor], ipc: int, g: torch.Generator) -> torch.Tensor:
    """``ipc`` distinct indices from every class, class-major order (class 0 first)."""
    check_ipc(indices, ipc)
    picks = [idx[torch.randperm(idx.numel(), generator=g)[:ipc]] for idx in indices]
    return torch.cat(picks)
