"""Differentiable siamese augmentation (:class:`DSA`): one draw per call, applied to the real and
the synthetic batch alike."""

from __future__ import annotations

import torch

from ..errors import ConfigError

from .ops import _brightness, _contrast, _crop, _cutout, _flip, _rotate, _saturation, _scale
from .params import AugmentationDraw, DSAParams, STRATEGY_TOKENS, _MODES


# --------------------------------------------------------------------------------------------
# DSA
# --------------------------------------------------------------------------------------------


class DSA:
    """Differentiable Siamese Augmentation.

    Args:
        strategy: ``'_'``-separated tokens of :data:`STRATEGY_TOKENS` (the paper's default is
            ``"color_crop_cutout_flip_scale_rotate"``); ``"none"`` or ``""`` is the identity.
        params: transform strengths.
        mode: ``"single"`` (the reference default, ``aug_mode='S'``): each draw picks ONE token
            uniformly at random for the whole batch ('color' then applies brightness, saturation
            and contrast); ``"all"`` (reference ``'M'``): every token's ops, in strategy order;
            ``"idc"`` (IDC/DANCE ``misc/augment.py`` ``DiffAug(single=False)``, DANCE's evaluation
            and pre-training): ``flip`` and ``color`` on every batch, then ONE of the other tokens
            except ``cutout`` (e.g. crop, scale or rotate), then ``cutout``, each where the
            strategy has it.

    Use :meth:`sample` once and :meth:`apply` the draw to the real and the synthetic batch to get
    identical transforms on both (``siamese=True`` makes the draw fit batches of any size).
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout_flip_scale_rotate",
        params: DSAParams = DSAParams(),
        mode: str = "single",
    ) -> None:
        tokens = tuple(t for t in strategy.split("_") if t) if strategy.lower() != "none" else ()
        unknown = [t for t in tokens if t not in STRATEGY_TOKENS]
        if unknown:
            raise ConfigError(
                f"unknown DSA strategy token(s) {unknown} in {strategy!r}; "
                f"use '_'-separated names from {sorted(STRATEGY_TOKENS)}"
            )
        if mode not in _MODES:
            raise ConfigError(f"unknown DSA mode {mode!r}; use one of {list(_MODES)}")
        self.strategy = strategy
        self.tokens = tokens
        self.params = params
        self.mode = mode

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, params={self.params!r}, mode={self.mode!r})"

    def sample(
        self,
        n: int,
        generator: torch.Generator,
        *,
        siamese: bool = False,
        device: torch.device | str | None = None,
    ) -> AugmentationDraw:
        """Draw the op(s) and their parameters.

        Args:
            n: batch size the per-sample parameters are drawn for (ignored when ``siamese``).
            generator: a CPU ``torch.Generator``; all sampling happens on CPU so that a seed gives
                the same draw whatever device the images live on.
            siamese: draw one parameter set (length-1 tensors) shared by every sample of any
                batch, as the reference does when real and synthetic batches share a seed.
            device: where to put the parameter tensors (default CPU; :meth:`apply` moves them to
                the images' device anyway).

        Returns:
            An :class:`AugmentationDraw` with ``batch_size = None if siamese else n``.
        """
        if generator.device.type != "cpu":
            raise ValueError(
                "DSA.sample needs a CPU torch.Generator (a seed then gives one draw on any device)"
            )
        if n < 0:
            raise ValueError(f"batch size must be >= 0, got {n}")
        length = 1 if siamese else n
        if self.mode == "single" and self.tokens:
            choice = int(torch.randint(len(self.tokens), (1,), generator=generator))
            tokens: tuple[str, ...] = (self.tokens[choice],)
        elif self.mode == "idc":
            tokens = self._idc_tokens(generator)
        else:
            tokens = self.tokens
        ops = tuple(op for token in tokens for op in STRATEGY_TOKENS[token])
        params: dict[str, torch.Tensor] = {}
        for op in ops:
            params.update(self._sample_op(op, length, generator))
        if device is not None:
            params = {key: value.to(device) for key, value in params.items()}
        return AugmentationDraw(ops, params, None if siamese else n)

    def _idc_tokens(self, generator: torch.Generator) -> tuple[str, ...]:
        """IDC ``DiffAug.__call__`` with ``single=False``: flip, colour, one of the rest, cutout."""
        front = tuple(t for t in ("flip", "color") if t in self.tokens)
        rest = [t for t in self.tokens if t not in ("flip", "color", "cutout")]
        middle: tuple[str, ...] = ()
        if rest:  # np.random.randint(len(self.strategy)) per batch in the reference
            middle = (rest[int(torch.randint(len(rest), (1,), generator=generator))],)
        return front + middle + (("cutout",) if "cutout" in self.tokens else ())

    def _sample_op(
        self, op: str, length: int, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Parameters of one primitive op, distributed as in the reference ``rand_*`` functions."""
        p = self.params

        def uniform() -> torch.Tensor:
            return torch.rand(length, generator=generator)

        if op == "scale":
            low, high = 1.0 / p.ratio_scale, p.ratio_scale
            scale_x = uniform() * (high - low) + low
            scale_y = uniform() * (high - low) + low
            return {"scale_x": scale_x, "scale_y": scale_y}
        if op == "rotate":
            return {"rotate_degrees": (uniform() - 0.5) * 2.0 * p.ratio_rotate}
        if op == "flip":
            return {"flip": uniform() < p.prob_flip}
        if op == "brightness":
            return {"brightness_shift": (uniform() - 0.5) * p.brightness}
        if op == "saturation":
            return {"saturation_factor": uniform() * p.saturation}
        if op == "contrast":
            return {"contrast_factor": uniform() + p.contrast}
        if op in ("crop", "cutout"):
            return {f"{op}_quantile_h": uniform(), f"{op}_quantile_w": uniform()}
        raise AssertionError(f"unhandled op {op!r}")  # guarded by STRATEGY_TOKENS

    def apply(self, x: torch.Tensor, draw: AugmentationDraw) -> torch.Tensor:
        """Apply ``draw`` to ``x``; differentiable w.r.t. ``x``.

        Args:
            x: float tensor ``N x C x H x W`` on any device (any C, any H, W).
            draw: from :meth:`sample`; a per-sample draw needs ``N == draw.batch_size``.

        Returns:
            Tensor of the same shape, dtype and device as ``x``.

        Raises:
            ValueError: if x is not 4-D, or a per-sample draw is applied to a batch of another size.
        """
        if x.ndim != 4:
            raise ValueError(f"images must be N x C x H x W, got shape {tuple(x.shape)}")
        if draw.batch_size is not None and x.shape[0] != draw.batch_size:
            raise ValueError(
                f"per-sample draw for a batch of {draw.batch_size} applied to a batch of "
                f"{x.shape[0]}; sample for this batch, or use siamese=True to share one draw"
            )
        q = draw.params
        for op in draw.ops:
            if op == "scale":
                x = _scale(x, q["scale_x"], q["scale_y"])
            elif op == "rotate":
                x = _rotate(x, q["rotate_degrees"])
            elif op == "flip":
                x = _flip(x, q["flip"])
            elif op == "brightness":
                x = _brightness(x, q["brightness_shift"])
            elif op == "saturation":
                x = _saturation(x, q["saturation_factor"])
            elif op == "contrast":
                x = _contrast(x, q["contrast_factor"])
            elif op == "crop":
                x = _crop(x, q["crop_quantile_h"], q["crop_quantile_w"], self.params.ratio_crop_pad)
            elif op == "cutout":
                ratio = self.params.ratio_cutout
                x = _cutout(x, q["cutout_quantile_h"], q["cutout_quantile_w"], ratio)
        return x

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, *, siamese: bool = False
    ) -> torch.Tensor:
        """``apply(x, sample(len(x), generator, siamese=siamese))``; see those methods."""
        return self.apply(x, self.sample(x.shape[0], generator, siamese=siamese, device=x.device))
