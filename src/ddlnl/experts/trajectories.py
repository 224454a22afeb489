"""Expert trajectories: the flat parameter layout of a ConvNet, its functional forward pass, and
:class:`Trajectories` (the epochs of every expert, read lazily from their files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..train import build_model

from .config import ExpertConfig


# --------------------------------------------------------------------------------------------
# Flat parameters and the functional forward
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamLayout:
    """How a flat parameter vector maps to a module's parameters.

    Attributes:
        names: parameter names in ``module.named_parameters()`` order.
        shapes: their shapes; the flat vector is their row-major concatenation, length ``numel``.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def sizes(self) -> list[int]:
        out = []
        for shape in self.shapes:
            n = 1
            for s in shape:
                n *= s
            out.append(n)
        return out

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """``module``'s parameters as one detached 1-D tensor (length :attr:`numel`)."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` (1-D, length :attr:`numel`) shaped as the parameters, by name.

        The views keep ``flat``'s autograd history, so a loss of the functional forward is
        differentiable with respect to ``flat``.
        """
        if flat.ndim != 1 or flat.numel() != self.numel:
            raise ValueError(f"flat parameters must be 1-D of length {self.numel}, got {tuple(flat.shape)}")
        chunks = torch.split(flat, self.sizes)
        return {name: chunk.view(shape) for name, chunk, shape in zip(self.names, chunks, self.shapes)}

    def load(self, module: nn.Module, flat: torch.Tensor) -> nn.Module:
        """Copy the flat parameters ``flat`` into ``module`` (same layout, on its device); returns it."""
        with torch.no_grad():
            for p, v in zip(module.parameters(), self.unflatten(flat).values()):
                p.copy_(v)
        return module


def functional_forward(model: nn.Module, layout: ParamLayout, flat: torch.Tensor,
                       x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with its parameters replaced by the flat vector ``flat``.

    Uses :func:`torch.func.functional_call`; ``model``'s own parameters are not read. Only
    parameters are substituted: a model with running-statistics buffers (BatchNorm) is not
    supported (instance norm has affine parameters and no buffers).

    Args:
        model: module whose parameter layout is ``layout``.
        flat: 1-D parameters (float, on ``x``'s device), possibly part of an autograd graph.
        x: ``N x C x H x W`` input.

    Returns:
        Logits ``N x K``.
    """
    return torch.func.functional_call(model, layout.unflatten(flat), (x,))


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


class Trajectories:
    """``num_experts`` trajectories of ``num_epochs + 1`` flat parameter vectors each.

    Cached experts are read lazily, one row at a time (safetensors slices), so a large buffer
    never has to fit in memory; in-memory experts (``cache=False``) hold their tensors.

    Attributes:
        key: the cache key the experts were made under (:func:`expert_key`).
        config: the :class:`ExpertConfig` that trained them.
        channels, num_classes, image_size: the input/output sizes of the expert architecture.
        layout: flat-parameter layout (:class:`ParamLayout`).
        directory: the cache folder, or None for in-memory experts.
    """

    def __init__(self, *, key: str, config: ExpertConfig, channels: int, num_classes: int,
                 image_size: tuple[int, int], layout: ParamLayout,
                 sources: Sequence[Path | torch.Tensor], directory: Path | None = None) -> None:
        self.key = key
        self.config = config
        self.channels = channels
        self.num_classes = num_classes
        self.image_size = tuple(image_size)
        self.layout = layout
        self.directory = directory
        self._sources = list(sources)

    @property
    def num_experts(self) -> int:
        return len(self._sources)

    @property
    def num_epochs(self) -> int:
        """N: epochs trained; epoch indices run 0..N (0 = the initial parameters)."""
        return self.config.epochs

    @property
    def num_params(self) -> int:
        return self.layout.numel

    def _epoch_index(self, epoch: int) -> int:
        n = self.num_epochs + 1
        if not -n <= epoch < n:
            raise IndexError(f"epoch {epoch} out of range for trajectories of {self.num_epochs} epochs")
        return epoch % n

    def params(self, expert: int, epoch: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
        """Flat float32 parameters ``P`` of ``expert`` after ``epoch`` epochs (negative: from the end)."""
        t = self._epoch_index(epoch)
        src = self._sources[expert]
        if isinstance(src, torch.Tensor):
            row = src[t]
        else:
            from safetensors import safe_open

            with safe_open(str(src), framework="pt") as f:
                # clone: the slice may share memory with the mapped file
                row = f.get_slice("trajectory")[t:t + 1][0].clone()
        return row.to(device=device, dtype=torch.float32)

    def trajectory(self, expert: int) -> torch.Tensor:
        """The whole trajectory of ``expert``: float32 ``(N + 1) x P`` on CPU."""
        src = self._sources[expert]
        if isinstance(src, torch.Tensor):
            return src.float()
        return _read_trajectory(src).float()

    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """A module of the expert architecture (its own weights are irrelevant for
        :func:`functional_forward`)."""
        return build_model(self.config.train_config(), channels=self.channels, num_classes=self.num_classes,
                           image_size=self.image_size, seed=0, device=device)

    def load_into(self, model: nn.Module, expert: int, epoch: int) -> nn.Module:
        """Copy ``expert``'s parameters at ``epoch`` into ``model`` (same architecture); returns it."""
        return self.layout.load(model, self.params(expert, epoch, device=next(model.parameters()).device))


def _read_trajectory(path: Path) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("trajectory").clone()  # detached from the mapped file
