"""ZCA whitening (kornia's ``eps`` or RCIG's relative regulariser) and the ZCA space a synthetic
set was distilled in."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..errors import ConfigError


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
    from ..utils import tensor_fingerprint

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
    from ..errors import DataError

    if meta.get("image_space") != "zca":
        return None
    info = meta.get("zca") or {}
    space = fit_zca_space(train_images, info.get("convention", "kornia"), float(info.get("reg", 0.1)))
    if info.get("fit_fingerprint") not in (None, space.fingerprint):
        raise DataError("this synthetic set lives in a ZCA space fitted on other training images (another "
                        "dataset or --train-subset): evaluate it with the training split it was distilled from")
    return space
