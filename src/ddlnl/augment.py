"""Differentiable Siamese Augmentation (DSA) and ZCA whitening.

DSA (Zhao & Bilen, ICML 2021, "Dataset Condensation with Differentiable Siamese Augmentation")
augments the real and the synthetic batch with *the same* randomly drawn transform and keeps every
transform differentiable with respect to the pixels, so the matching loss can be back-propagated
into the synthetic images. Defaults and parameter distributions follow the reference code
(VICO-UoE/DatasetCondensation, ``utils.py``: ``ParamDiffAug``, ``DiffAugment``, ``rand_*``).

Randomness is explicit: a :class:`DSA` never touches the global RNG. :meth:`DSA.sample` turns a CPU
``torch.Generator`` into an :class:`AugmentationDraw` (which transform(s), with which parameters),
and :meth:`DSA.apply` applies a draw. Keeping the two apart is what makes the augmentation
*siamese*: draw once, apply to the real batch and to the synthetic batch.

ZCA whitening (:func:`fit_zca`, :class:`ZCA`) follows kornia's ``ZCAWhitening`` as used by MTT and
DATM with ``eps=0.1`` (``convention="kornia"``), or RCIG's ``ops.get_whitening_transform``
(``convention="rcig"``). :class:`ZCASpace` is what a distiller that works in ZCA space (DATM, RCIG)
fits on its training images and records in the synthetic set, so that evaluation whitens the test
images the same way (:func:`zca_space_for`).

Defining steps (pinned by ``tests/test_defining_dsa.py``, ``tests/test_augment.py``):

1. DSA ops as the reference's ``rand_*``: scale factors ``U[1/1.2, 1.2]`` per axis, rotation
   ``U[-15, 15]`` degrees, flip with probability 0.5, brightness ``+(u - 0.5)``, saturation ``u * 2``
   around the channel mean, contrast ``u + 0.5`` around the image mean, crop = integer shift in
   ``[-round(0.125 side), +round(0.125 side)]`` with zero fill, cutout = a zeroed square of half
   the side whose centre is uniform;
2. ``single`` mode: one strategy token per batch, uniformly; ``color`` applies brightness,
   saturation, contrast in that order;
3. siamese: one draw applied to the real and the synthetic batch;
4. ZCA: the whitened training data have (about) identity covariance and the inverse recovers the
   images; kornia's ``eps`` or RCIG's relative regulariser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = [
    "DSAParams",
    "AugmentationDraw",
    "DSA",
    "STRATEGY_TOKENS",
    "OP_PARAM_KEYS",
    "ZCA",
    "fit_zca",
    "ZCA_CONVENTIONS",
    "ZCASpace",
    "fit_zca_space",
    "zca_space_for",
]


# --------------------------------------------------------------------------------------------
# DSA configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DSAParams:
    """Strengths of the DSA transforms; defaults are the published ones (``ParamDiffAug``).

    The reference also carries ``ratio_noise = 0.05``, but no strategy uses it, so it is left out.
    """

    prob_flip: float = 0.5  # probability of a horizontal flip, in [0, 1]
    ratio_scale: float = 1.2  # scale factors (x and y independently) ~ U[1/ratio, ratio]; >= 1
    ratio_rotate: float = 15.0  # rotation angle ~ U[-ratio, ratio], in degrees
    ratio_crop_pad: float = 0.125  # max translation, as a fraction of the side (zero padding)
    ratio_cutout: float = 0.5  # side of the zeroed square, as a fraction of the image side
    brightness: float = 1.0  # additive shift ~ (U[0, 1) - 0.5) * brightness, in pixel units
    saturation: float = 2.0  # channel-deviation factor ~ U[0, 1) * saturation (unitless)
    contrast: float = 0.5  # deviation-from-image-mean factor ~ U[0, 1) + contrast (unitless)

    def __post_init__(self) -> None:
        checks = {
            "prob_flip": 0.0 <= self.prob_flip <= 1.0,
            "ratio_scale": self.ratio_scale >= 1.0,
            "ratio_rotate": self.ratio_rotate >= 0.0,
            "ratio_crop_pad": 0.0 <= self.ratio_crop_pad <= 1.0,
            "ratio_cutout": 0.0 <= self.ratio_cutout <= 1.0,
            "brightness": self.brightness >= 0.0,
            "saturation": self.saturation >= 0.0,
            "contrast": self.contrast >= 0.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            name = bad[0]
            raise ConfigError(
                f"DSAParams.{name}={getattr(self, name)!r} is out of range "
                "(prob_flip, ratio_crop_pad, ratio_cutout in [0, 1]; ratio_scale >= 1; others >= 0)"
            )


# A strategy token names one choice of the single mode; 'color' is one choice that applies three
# primitive ops (the reference's AUGMENT_FNS['color']). The primitive colour ops are also accepted
# on their own, which the reference does not offer but tests and ablations want.
STRATEGY_TOKENS: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
    "brightness": ("brightness",),
    "saturation": ("saturation",),
    "contrast": ("contrast",),
}

# Parameter tensors each primitive op reads from a draw (each of shape (n,), or (1,) if siamese).
# crop/cutout store quantiles u in [0, 1) rather than pixel counts, because the number of
# admissible pixel offsets depends on the image side, which is only known at apply time; storing
# u keeps a draw independent of the image size and maps to the reference's uniform integer draw.
OP_PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "scale": ("scale_x", "scale_y"),  # factors multiplying output coords (>1 shrinks content)
    "rotate": ("rotate_degrees",),  # anticlockwise angle in degrees
    "flip": ("flip",),  # bool: flip along the width axis
    "brightness": ("brightness_shift",),  # added to every pixel
    "saturation": ("saturation_factor",),  # x -> mean_c + f * (x - mean_c)
    "contrast": ("contrast_factor",),  # x -> mean + f * (x - mean), mean over C, H, W
    "crop": ("crop_quantile_h", "crop_quantile_w"),  # u=0.5 means no translation
    "cutout": ("cutout_quantile_h", "cutout_quantile_w"),  # position of the square's centre
}

_MODES = ("single", "all", "idc")


# --------------------------------------------------------------------------------------------
# A concrete draw
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AugmentationDraw:
    """One concrete augmentation: which primitive ops, in order, with which parameters.

    Attributes:
        ops: primitive op names (keys of :data:`OP_PARAM_KEYS`) applied left to right; empty
            means the identity.
        params: for every op in ``ops``, the tensors named in :data:`OP_PARAM_KEYS`, each 1-D of
            length ``batch_size`` (one value per sample) or of length 1 when siamese.
        batch_size: the batch size the per-sample parameters belong to, or ``None`` for a siamese
            draw whose single parameter set is shared by every sample of a batch of any size.
    """

    ops: tuple[str, ...]
    params: Mapping[str, torch.Tensor]
    batch_size: int | None = None

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OP_PARAM_KEYS]
        if unknown:
            raise ValueError(
                f"unknown augmentation op(s) {unknown}; known: {sorted(OP_PARAM_KEYS)}"
            )
        needed = {key for op in self.ops for key in OP_PARAM_KEYS[op]}
        missing = needed - set(self.params)
        extra = set(self.params) - needed
        if missing or extra:
            raise ValueError(
                f"draw parameters do not match ops {self.ops}: missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}"
            )
        length = 1 if self.batch_size is None else self.batch_size
        for key, value in self.params.items():
            if value.ndim != 1 or value.shape[0] != length:
                raise ValueError(
                    f"draw parameter {key!r} has shape {tuple(value.shape)}, expected ({length},)"
                )

    @property
    def siamese(self) -> bool:
        """True when one parameter set is shared by all samples (applicable to any batch size)."""
        return self.batch_size is None

    def to(self, device: torch.device | str) -> "AugmentationDraw":
        """The same draw with its parameter tensors on ``device``."""
        params = {key: value.to(device) for key, value in self.params.items()}
        return AugmentationDraw(self.ops, params, self.batch_size)


# --------------------------------------------------------------------------------------------
# Primitive differentiable ops (x: N x C x H x W; per-sample values of length N or 1)
# --------------------------------------------------------------------------------------------


def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``value`` (length N or 1) as an ``N|1 x 1 x 1 x 1`` tensor on x's device and dtype."""
    return value.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` on the grid ``theta`` (``N|1 x 2 x 3``, normalised coordinates).

    Bilinear sampling with zero padding is differentiable w.r.t. x. ``align_corners=False`` is
    what the reference gets from ``affine_grid``/``grid_sample`` defaults in torch >= 1.3, and it
    makes the identity matrix reproduce the input exactly.
    """
    theta = theta.expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _scale(x: torch.Tensor, scale_x: torch.Tensor, scale_y: torch.Tensor) -> torch.Tensor:
    sx = scale_x.to(device=x.device, dtype=x.dtype)
    sy = scale_y.to(device=x.device, dtype=x.dtype)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1)
    return _affine(x, theta)


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    angle = degrees.to(device=x.device, dtype=x.dtype) * (math.pi / 180.0)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    return _affine(x, theta)


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def _brightness(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return x + _per_sample(shift, x)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # With one channel the channel mean is the pixel itself, so this is exactly the identity.
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def _quantile_to_index(quantile: torch.Tensor, count: int) -> torch.Tensor:
    """Map u in [0, 1) to an integer uniform on {0, ..., count - 1} (long, same shape).

    Computed in float64 and clamped, because a float32 u just below 1 times ``count`` can round
    up to ``count``.
    """
    index = torch.floor(quantile.to(torch.float64) * count).long()
    return index.clamp(0, max(count - 1, 0))


def _translate(x: torch.Tensor, shift_h: torch.Tensor, shift_w: torch.Tensor) -> torch.Tensor:
    """Integer translation with zero fill: ``out[..., i, j] = x[..., i + shift_h, j + shift_w]``.

    Like the reference, x is padded by one zero pixel and indices are clamped into the padding,
    so everything shifted in from outside is zero; gathers are differentiable w.r.t. x.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))
    rows = torch.arange(h, device=x.device) + shift_h.to(x.device).view(-1, 1) + 1
    cols = torch.arange(w, device=x.device) + shift_w.to(x.device).view(-1, 1) + 1
    rows = rows.clamp(0, h + 1).expand(n, h)
    cols = cols.clamp(0, w + 1).expand(n, w)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _crop(
    x: torch.Tensor, quantile_h: torch.Tensor, quantile_w: torch.Tensor, ratio: float
) -> torch.Tensor:
    # Reference: shift ~ uniform integer in [-s, s] with s = round-half-up(side * ratio_crop_pad).
    h, w = x.shape[2], x.shape[3]
    max_h, max_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    shift_h = _quantile_to_index(quantile_h, 2 * max_h + 1) - max_h
    shift_w = _quantile_to_index(quantile_w, 2 * max_w + 1) - max_w
    return _translate(x, shift_h, shift_w)


def _cutout(
    x: torch.Tensor, quantile_h: torch.Tensor, quantile_w: torch.Tensor, ratio: float
) -> torch.Tensor:
    # Reference: side k = round-half-up(side * ratio_cutout); centre ~ uniform integer in
    # [0, side + (1 - k % 2)); the square covers [centre - k // 2, centre - k // 2 + k), clipped
    # to the image. Multiplying by a 0/1 mask keeps the gradient (zero inside the square).
    h, w = x.shape[2], x.shape[3]
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = _quantile_to_index(quantile_h, h + 1 - size_h % 2).to(x.device) - size_h // 2
    left = _quantile_to_index(quantile_w, w + 1 - size_w % 2).to(x.device) - size_w // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top.view(-1, 1)) & (rows < top.view(-1, 1) + size_h)
    in_cols = (cols >= left.view(-1, 1)) & (cols < left.view(-1, 1) + size_w)
    mask = 1.0 - (in_rows[:, :, None] & in_cols[:, None, :]).to(x.dtype)
    return x * mask[:, None, :, :]


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


# --------------------------------------------------------------------------------------------
# ZCA whitening
# --------------------------------------------------------------------------------------------

# Rows of flattened images accumulated per step while fitting, so that a float64 copy of a whole
# training set (50k x 3072 doubles = 1.2 GB for CIFAR) is never materialised at once.
_ZCA_CHUNK_ROWS = 4096


@dataclass(frozen=True, eq=False)
class ZCA:
    """A fitted ZCA whitening transform (kornia ``ZCAWhitening`` convention).

    ``transform(x) = (flat(x) - mean) @ matrix`` with ``matrix = U diag(1/sqrt(s + reg)) U^T``
    and ``inverse_transform(z) = flat(z) @ inverse_matrix + mean`` with
    ``inverse_matrix = U diag(sqrt(s + reg)) U^T``, where ``U, s`` are the eigenvectors and
    eigenvalues of the (unbiased) covariance of the flattened training images. Both matrices are
    symmetric. ``reg`` > 0 shrinks low-variance directions instead of amplifying their noise.

    Attributes:
        mean: ``D`` mean of the flattened training images (``D = C * H * W``).
        matrix: ``D x D`` whitening matrix.
        inverse_matrix: ``D x D`` colouring matrix, the inverse of ``matrix``.
        reg: the regulariser added to every eigenvalue.
        image_shape: ``(C, H, W)`` the transform was fitted for.
    """

    mean: torch.Tensor
    matrix: torch.Tensor
    inverse_matrix: torch.Tensor
    reg: float
    image_shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        dim = math.prod(self.image_shape)
        square = (dim, dim)
        if (
            self.mean.shape != (dim,)
            or self.matrix.shape != square
            or self.inverse_matrix.shape != square
        ):
            raise ValueError(
                f"ZCA tensors do not match image_shape {self.image_shape} (D={dim}): mean "
                f"{tuple(self.mean.shape)}, matrix {tuple(self.matrix.shape)}, "
                f"inverse_matrix {tuple(self.inverse_matrix.shape)}"
            )

    @property
    def dim(self) -> int:
        """Flattened image dimensionality ``D = C * H * W``."""
        return math.prod(self.image_shape)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != tuple(self.image_shape):
            raise ValueError(
                f"ZCA fitted for images {self.image_shape}, got shape {tuple(x.shape)}"
            )
        return x.reshape(-1, self.dim)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten ``x`` (``... x C x H x W``); same shape, dtype and device; differentiable."""
        flat = self._flatten(x)
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        matrix = self.matrix.to(device=x.device, dtype=x.dtype)
        return ((flat - mean) @ matrix).reshape(x.shape)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`transform` on ``z`` (``... x C x H x W``); same shape; differentiable."""
        flat = self._flatten(z)
        mean = self.mean.to(device=z.device, dtype=z.dtype)
        inverse = self.inverse_matrix.to(device=z.device, dtype=z.dtype)
        return (flat @ inverse + mean).reshape(z.shape)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "ZCA":
        """The same transform with tensors on ``device`` / in ``dtype`` (saves a copy per call)."""
        return ZCA(
            self.mean.to(device=device, dtype=dtype),
            self.matrix.to(device=device, dtype=dtype),
            self.inverse_matrix.to(device=device, dtype=dtype),
            self.reg,
            self.image_shape,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of CPU tensors and numbers, for ``torch.save`` in a run directory."""
        return {
            "mean": self.mean.detach().cpu(),
            "matrix": self.matrix.detach().cpu(),
            "inverse_matrix": self.inverse_matrix.detach().cpu(),
            "reg": float(self.reg),
            "image_shape": list(self.image_shape),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], device: torch.device | str | None = None) -> "ZCA":
        """Rebuild from :meth:`to_dict` output, optionally onto ``device``."""
        return cls(
            torch.as_tensor(data["mean"], device=device),
            torch.as_tensor(data["matrix"], device=device),
            torch.as_tensor(data["inverse_matrix"], device=device),
            float(data["reg"]),
            tuple(int(s) for s in data["image_shape"]),  # type: ignore[arg-type]
        )


ZCA_CONVENTIONS = ("kornia", "rcig")


def fit_zca(images: torch.Tensor, reg: float = 0.1, *, dtype: torch.dtype = torch.float32,
            convention: str = "kornia") -> ZCA:
    """Fit ZCA whitening on ``images``. Fit it on the TRAINING split only, never on test data.

    ``convention="kornia"`` follows kornia ``zca_mean`` (``unbiased=True``) with ``eps = reg``;
    MTT and DATM use ``kornia.enhance.ZCAWhitening(eps=0.1)``, hence the default.
    ``convention="rcig"`` follows RCIG (and FRePo) ``ops.get_whitening_transform``: biased
    covariance (``1/N``), ``reg * trace(cov) / D`` added to every eigenvalue (a regulariser
    relative to the mean eigenvalue; RCIG ``zca_reg = 0.1``), and, when ``N < D``, the
    ``D - N`` smallest eigen-directions left unscaled ("rank control").

    The covariance and its eigendecomposition are computed in float64 on the images' device
    (``eigh`` instead of an SVD: identical for a symmetric PSD matrix; round-off negative
    eigenvalues are clamped to 0).

    Args:
        images: float tensor ``N x C x H x W`` with ``N >= 2``.
        reg: the regulariser (absolute for kornia, relative for rcig); > 0.
        dtype: dtype of the stored mean and matrices (``D x D`` each; 36 MB in float32 for CIFAR).
        convention: ``"kornia"`` or ``"rcig"``.

    Returns:
        A :class:`ZCA` on ``images.device``.
    """
    if convention not in ZCA_CONVENTIONS:
        raise ConfigError(f"ZCA convention {convention!r}: use one of {', '.join(ZCA_CONVENTIONS)}")
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"need at least 2 images to estimate a covariance, got {images.shape[0]}")
    if not reg > 0:
        raise ConfigError(f"ZCA reg must be > 0 (kornia eps; MTT uses 0.1), got {reg!r}")
    n = images.shape[0]
    image_shape = tuple(int(s) for s in images.shape[1:])
    flat = images.detach().reshape(n, -1)
    chunks = range(0, n, _ZCA_CHUNK_ROWS)
    mean = sum(flat[i : i + _ZCA_CHUNK_ROWS].to(torch.float64).sum(0) for i in chunks) / n
    cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64, device=images.device)
    for i in chunks:
        centred = flat[i : i + _ZCA_CHUNK_ROWS].to(torch.float64) - mean
        cov.addmm_(centred.T, centred)
    dim = cov.shape[0]
    if convention == "kornia":
        cov /= n - 1  # unbiased, as kornia's default
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        eigenvalues = eigenvalues.clamp_min(0.0) + reg
        inv_sqrt, sqrt = eigenvalues.rsqrt(), eigenvalues.sqrt()
    else:
        cov /= n  # RCIG: 1/count * sum of outer products
        amount = reg * torch.trace(cov) / dim
        eigenvalues, eigenvectors = torch.linalg.eigh(cov + amount * torch.eye(dim, dtype=cov.dtype, device=cov.device))
        eigenvalues = eigenvalues.clamp_min(float(amount))
        inv_sqrt, sqrt = eigenvalues.rsqrt(), eigenvalues.sqrt()
        if n < dim:  # eigh is ascending: the D - N smallest directions are left as they are
            inv_sqrt[: dim - n] = 1.0
            sqrt[: dim - n] = 1.0
    matrix = (eigenvectors * inv_sqrt) @ eigenvectors.T
    inverse = (eigenvectors * sqrt) @ eigenvectors.T
    stored = [t.to(dtype) for t in (mean, matrix, inverse)]
    return ZCA(*stored, float(reg), image_shape)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# ZCA space of a distillation: fitted on the training images, recorded, re-applied to the test set
# --------------------------------------------------------------------------------------------


def _pixel_box(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(lo, hi)`` (``C`` each): the normalised values of pixel 0 and pixel 1,
    recovered as the channel's min and max over the images (exact whenever the training split
    holds a black and a white pixel in every channel, as CIFAR, Tiny-ImageNet and MNIST do)."""
    lo = images.amin(dim=(0, 2, 3)).double().cpu()
    hi = images.amax(dim=(0, 2, 3)).double().cpu()
    return lo, torch.where(hi > lo, hi, lo + 1.0)


@dataclass(frozen=True, eq=False)
class ZCASpace:
    """The whitening a distiller's images live in, and how to take other images there.

    ``transform(x)`` maps images in ddlnl's normalised space to the ZCA space. For the kornia
    convention (DATM, MTT) the input is first taken back to [0, 1] pixels, ``(x - lo) / (hi - lo)``
    per channel, because those references whiten ``ToTensor()`` images without normalising them
    (DATM ``utils_baseline.get_dataset`` with ``--zca``) and kornia's ``eps`` is absolute, so the
    pixel scale matters. For the rcig convention the input is the normalised image itself (RCIG
    standardises per channel, then whitens with a relative regulariser).

    Attributes:
        convention: ``"kornia"`` or ``"rcig"`` (see :func:`fit_zca`).
        reg: the regulariser.
        zca: the fitted :class:`ZCA`.
        pixel_box: per-channel ``(lo, hi)`` for kornia, None for rcig.
        fingerprint: SHA-256 of the images it was fitted on.
    """

    convention: str
    reg: float
    zca: ZCA
    pixel_box: tuple[tuple[float, ...], tuple[float, ...]] | None
    fingerprint: str
    num_images: int

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.pixel_box is None:
            return x
        lo, hi = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for v in self.pixel_box)
        return (x - lo) / (hi - lo)

    def transform(self, images: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """Images ``N x C x H x W`` (normalised) in this ZCA space, same shape (float32 chunks)."""
        zca = self.zca.to(device=images.device)
        outs = [zca.transform(self._inputs(images[i:i + batch].float())) for i in range(0, images.shape[0], batch)]
        return torch.cat(outs) if outs else images.float().clone()

    def untransform(self, images: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """Undo :meth:`transform`: ZCA-space images back in ddlnl's normalised space (for display)."""
        zca = self.zca.to(device=images.device)
        outs = []
        for i in range(0, images.shape[0], batch):
            x = zca.inverse_transform(images[i:i + batch].float())
            if self.pixel_box is not None:
                lo, hi = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for v in self.pixel_box)
                x = x * (hi - lo) + lo
            outs.append(x)
        return torch.cat(outs) if outs else images.float().clone()

    def describe(self) -> dict[str, Any]:
        """JSON-able record for ``SyntheticSet.meta["zca"]``."""
        return {"convention": self.convention, "reg": float(self.reg), "fit_fingerprint": self.fingerprint,
                "fit_images": self.num_images,
                "pixel_box": None if self.pixel_box is None else {"lo": list(self.pixel_box[0]),
                                                                  "hi": list(self.pixel_box[1])}}


# The last fitted space, so evaluating several sets of one run does not refit a D x D whitening.
_SPACE_CACHE: dict[tuple[str, str, float], ZCASpace] = {}


def fit_zca_space(images: torch.Tensor, convention: str = "kornia", reg: float = 0.1) -> ZCASpace:
    """Fit the ZCA space of ``images`` (a distiller's TRAINING images, normalised ``N x C x H x W``).

    Returns a cached space when the same images (by content), convention and reg were fitted last.
    """
    from .utils import tensor_fingerprint

    if convention not in ZCA_CONVENTIONS:
        raise ConfigError(f"ZCA convention {convention!r}: use one of {', '.join(ZCA_CONVENTIONS)}")
    fingerprint = tensor_fingerprint(images)
    key = (fingerprint, convention, float(reg))
    if key in _SPACE_CACHE:
        return _SPACE_CACHE[key]
    box = None
    inputs = images
    if convention == "kornia":
        lo, hi = _pixel_box(images)
        box = (tuple(float(v) for v in lo), tuple(float(v) for v in hi))
        lo_, span = lo.float().view(1, -1, 1, 1).to(images.device), (hi - lo).float().view(1, -1, 1, 1).to(images.device)
        inputs = (images.float() - lo_) / span
    space = ZCASpace(convention, float(reg), fit_zca(inputs, reg, convention=convention), box, fingerprint,
                     int(images.shape[0]))
    _SPACE_CACHE.clear()
    _SPACE_CACHE[key] = space
    return space


def zca_space_for(meta: Mapping[str, Any], train_images: torch.Tensor) -> ZCASpace | None:
    """The ZCA space a synthetic set's ``meta`` records (``image_space == "zca"``), refitted on
    ``train_images`` (the training images it was distilled from); None for a set in ddlnl's
    normalised space.

    Raises:
        DataError: ``train_images`` are not the images the set's whitening was fitted on.
    """
    from .errors import DataError

    if meta.get("image_space") != "zca":
        return None
    info = meta.get("zca") or {}
    space = fit_zca_space(train_images, info.get("convention", "kornia"), float(info.get("reg", 0.1)))
    if info.get("fit_fingerprint") not in (None, space.fingerprint):
        raise DataError("this synthetic set lives in a ZCA space fitted on other training images (another "
                        "dataset or --train-subset): evaluate it with the training split it was distilled from")
    return space
