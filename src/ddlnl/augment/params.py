"""DSA's parameters (:class:`DSAParams`), the strategy tokens, and one augmentation draw shared by
the real and the synthetic batch (:class:`AugmentationDraw`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import ConfigError


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
