"""Drawing noisy labels: from a transition matrix (one uniform per sample, inverse CDF of row
``T[true]``), and instance-dependent (PTD, Xia et al. 2020) from raw pixels."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError

from .matrices import _validate_transition
from .spec import _INSTANCE_RATE_STD, _check_num_classes, _check_rate, _check_seed


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _as_labels(labels: np.ndarray | torch.Tensor, what: str = "labels") -> np.ndarray:
    """A 1-D int64 numpy copy of ``labels`` (numpy array or tensor of hard class indices)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of class indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{what} must be integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64, copy=True)


def _check_range(labels: np.ndarray, num_classes: int, what: str = "labels") -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{what} must lie in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}"
        )


def _sample_from_rows(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: one class per row of ``probs`` (``n x K``) from ``uniforms`` (n).

    Each cumulative row is divided by its total so its last entry is exactly 1.0 and a uniform
    in ``[0, 1)`` can never run past it; a zero-probability class has ``cdf[j] == cdf[j - 1]``
    and so is never selected.
    """
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    picked = (cdf <= uniforms[:, None]).sum(axis=1)
    return np.minimum(picked, probs.shape[1] - 1).astype(np.int64)


def apply_transition(
    labels: np.ndarray | torch.Tensor, transition: np.ndarray, seed: int
) -> np.ndarray:
    """Draw noisy labels: ``noisy[n] ~ T[labels[n], :]``, with ``T[i, j] = P(noisy=j | true=i)``.

    Vectorised inverse-CDF sampling: one uniform per sample, drawn in sample order from
    ``np.random.default_rng(seed)``, compared against the cumulative row of its true class.

    Args:
        labels: clean labels, ``int64`` array or tensor of shape ``N`` in ``[0, K)``.
        transition: ``K x K`` row-stochastic matrix (rows sum to 1 within 1e-6).
        seed: non-negative integer.

    Returns:
        noisy labels, ``int64`` numpy array of shape ``N``.

    Raises:
        UserError: ``transition`` not square, not non-negative or rows not summing to 1;
            labels out of range.
    """
    clean = _as_labels(labels)
    t = _validate_transition(transition)
    _check_range(clean, t.shape[0])
    uniforms = np.random.default_rng(_check_seed(seed)).random(clean.shape[0])
    noisy = clean.copy()
    for cls in np.unique(clean):
        where = clean == cls
        row = np.broadcast_to(t[cls], (int(where.sum()), t.shape[0]))
        noisy[where] = _sample_from_rows(row, uniforms[where])
    return noisy


def _truncated_normal(
    rng: np.random.Generator, mean: float, std: float, low: float, high: float, size: int
) -> np.ndarray:
    """Exact draws from ``N(mean, std^2)`` truncated to ``[low, high]``, by rejection."""
    out = rng.normal(mean, std, size)
    bad = (out < low) | (out > high)
    while bad.any():  # acceptance >= ~0.5 for a mean inside [low, high]: a few rounds at most
        out[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (out < low) | (out > high)
    return out


def truncated_normal_mean(mean: float, std: float, low: float = 0.0, high: float = 1.0) -> float:
    """Mean of ``N(mean, std^2)`` truncated to ``[low, high]``: the expected instance noise rate."""
    a, b = (low - mean) / std, (high - mean) / std
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    return mean + std * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))


def _instance_setup(images: torch.Tensor, labels: np.ndarray | torch.Tensor, rate: float, seed: int,
                    num_classes: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray, list[np.ndarray], np.ndarray, int]:
    k = _check_num_classes(num_classes)
    _check_rate(float(rate), 1.0, "instance noise")
    clean = _as_labels(labels)
    _check_range(clean, k)
    images = torch.as_tensor(images)
    if images.shape[0] != clean.shape[0]:
        raise DataError(f"{images.shape[0]} images but {clean.shape[0]} labels: they must match")
    rng = np.random.default_rng(_check_seed(seed))
    n, dim = clean.shape[0], int(np.prod(images.shape[1:]))
    flip_rates = _truncated_normal(rng, float(rate), _INSTANCE_RATE_STD, 0.0, 1.0, n)
    projections = [rng.standard_normal((dim, k), dtype=np.float32) for _ in range(k)]
    uniforms = rng.random(n)
    return clean, images, flip_rates, projections, uniforms, dim


def _raw_pixels(images: torch.Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None) -> torch.Tensor:
    """``images`` in 0..255 pixel values: as given, or undoing ``(x / 255 - mean) / std`` per channel."""
    x = images.to(torch.float64).cpu()
    if normalization is None:
        return x
    mean, std = (torch.tensor([float(v) for v in t], dtype=torch.float64) for t in normalization)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x * std.view(shape) + mean.view(shape)) * 255.0


def _class_flip_probabilities(images: torch.Tensor, where: np.ndarray, cls: int, dim: int,
                              flip_rates: np.ndarray, projection: np.ndarray,
                              normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """Rows ``P(noisy = j | x_n)`` for the samples ``where`` of clean class ``cls``."""
    # Per class, so only one class's images are copied (and de-normalised) at a time.
    x = _raw_pixels(images[torch.from_numpy(where)], normalization).reshape(len(where), dim)
    scores = (x @ torch.from_numpy(projection).double()).numpy()
    scores[:, cls] = -np.inf
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    probs *= (flip_rates[where] / probs.sum(axis=1))[:, None]
    probs[:, cls] = 1.0 - flip_rates[where]
    return probs


def instance_flip_probabilities(images: torch.Tensor, labels: np.ndarray | torch.Tensor, rate: float,
                                seed: int, num_classes: int, *,
                                normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """The per-sample label distributions ``N x K`` that :func:`instance_dependent_labels` samples
    from (same arguments, same draws): row ``n`` is ``P(noisy = j | x_n, clean = y_n)``."""
    clean, images, flip_rates, projections, _, dim = _instance_setup(images, labels, rate, seed, num_classes)
    probs = np.zeros((clean.shape[0], int(num_classes)), dtype=np.float64)
    for cls in np.unique(clean):
        where = np.flatnonzero(clean == cls)
        probs[where] = _class_flip_probabilities(images, where, int(cls), dim, flip_rates, projections[cls],
                                                 normalization)
    return probs


def instance_dependent_labels(
    images: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    rate: float,
    seed: int,
    num_classes: int,
    *,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> np.ndarray:
    """Instance-dependent (PTD) label noise, Xia et al., NeurIPS 2020, ``get_instance_noisy_label``
    (xiaoboxia/Part-dependent-label-noise ``tools.py``).

    For each sample ``x_n`` with clean label ``y``, where ``x_n`` is the image flattened (C, H, W
    order) in RAW PIXEL VALUES 0..255, as the reference feeds its ``.npy`` images (``data.py``:
    ``torch.from_numpy(original_images).float()``, no scaling):

    1. flip rate ``q_n`` ~ normal(mean=``rate``, std=0.1) truncated to ``[0, 1]``;
    2. scores ``s = x_n @ W_y`` with ``W_y`` a ``D x K`` standard-normal projection drawn once
       per class (as in the reference code, where ``W`` is ``K x D x K`` and sample ``n`` uses
       ``W[y]``, so the flip direction depends on both the image and its class);
    3. ``s[y] = -inf``; ``p = q_n * softmax(s)``; ``p[y] = 1 - q_n``; draw the noisy label
       from ``p``.

    On raw pixels the scores are hundreds to thousands apart, so the softmax is nearly one-hot:
    almost all of a sample's flip mass goes to ONE wrong class chosen by its image (on
    unit-normalised images the softmax would be nearly flat: a different, much more spread noise).
    :func:`make_noise` passes the dataset's normalised images with ``normalization=(mean, std)``,
    and each class's images are turned back into 0..255 pixels here, one class at a time.

    The expected noise rate is the mean of the truncated normal (:func:`truncated_normal_mean`),
    which equals ``rate`` up to the truncation (0.4 -> 0.4000, 0.2 -> 0.2055, 0.05 -> 0.1009).
    Unlike the reference code, ``rate == 0`` returns the labels unchanged (the truncated normal
    would still flip about 8% of them). Draws, in order, from ``np.random.default_rng(seed)``:
    the N flip rates, the K projections (class 0 first, all classes even if absent), the N
    uniforms.

    Args:
        images: float tensor ``N x ...`` (e.g. ``N x C x H x W``) in pixel values 0..255, or
            normalised as ``(pixel / 255 - mean) / std`` when ``normalization=(mean, std)`` (per
            channel, axis 1) is given; ``D`` = product of the rest.
        labels: clean ``int64`` labels, shape ``N``, in ``[0, num_classes)``.
        rate: mean flip rate in ``[0, 1)``.
        seed: non-negative integer.
        num_classes: ``K``.

    Returns:
        noisy labels, ``int64`` numpy array of shape ``N``.
    """
    clean, images, flip_rates, projections, uniforms, dim = _instance_setup(images, labels, rate, seed, num_classes)
    if float(rate) == 0.0 or clean.size == 0:
        return clean
    noisy = clean.copy()
    for cls in np.unique(clean):
        where = np.flatnonzero(clean == cls)
        probs = _class_flip_probabilities(images, where, int(cls), dim, flip_rates, projections[cls],
                                          normalization)
        noisy[where] = _sample_from_rows(probs, uniforms[where])
    return noisy
