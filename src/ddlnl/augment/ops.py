"""The differentiable augmentation operations of DSA (scale, rotate, flip, colour, translate,
crop, cutout), each applied with a given draw."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
