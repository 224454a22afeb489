"""What one training step is made of: a model's seeded initial weights, the learning-rate
schedule, the loss (hard, soft or regression targets), the optimiser, augmentation, CutMix and
the sharpness-aware (GSAM) gradient."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import create_model

from .config import TrainConfig


def build_model(cfg: TrainConfig, *, channels: int, num_classes: int, image_size: tuple[int, int],
                seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """A freshly initialised model; ``seed`` fixes its initial weights (independent of global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(cfg.model, channels=channels, num_classes=num_classes,
                             image_size=image_size, **cfg.model_kwargs())
    return model.to(device)


@torch.no_grad()
def reinitialize_(model: nn.Module, seed: int, *, host: nn.Module | None = None) -> nn.Module:
    """Give ``model`` (built by :func:`build_model`) the initial weights ``build_model(..., seed=seed)``
    would give it, in place; returns ``model``.

    Every module's ``reset_parameters`` runs in construction order under ``seed`` on the CPU
    generator, exactly what construction does, so the weights are bit-identical to a fresh build;
    batch-norm running statistics are reset too. For a model on another device pass ``host``, a
    CPU copy of the architecture: it is re-initialised and copied over (drawing on the device's own
    generator would give other weights).
    """
    target = model
    model = host if host is not None else model
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("reinitialize_ draws on the CPU generator: pass a CPU copy as host= for a device model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):  # batch norm: also its running statistics
                m.reset_parameters()
    if target is not model:
        for dst, src in zip(target.state_dict().values(), model.state_dict().values()):
            dst.copy_(src)
    return target


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy with probability targets ``N x K`` (rows sum to 1)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _lr_at(cfg: TrainConfig, base_lr: float, epoch: int, frac: float) -> float:
    t = epoch + frac
    if t < cfg.warmup_epochs:
        return base_lr * t / cfg.warmup_epochs
    if cfg.schedule == "step":
        return base_lr * (0.1 if epoch >= cfg.epochs // 2 else 1.0)
    if cfg.schedule == "multistep":
        return base_lr * 0.2 ** sum(epoch >= m for m in (2 * cfg.epochs // 3, 5 * cfg.epochs // 6))
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        progress_ = min(1.0, (t - cfg.warmup_epochs) / span)
        floor = cfg.final_lr_fraction
        return base_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress_)))
    return base_lr


def _loss(cfg: TrainConfig, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if cfg.loss == "mse":
        # Regression on label vectors (RCIG): hard labels become one-hot rows.
        if target.ndim == 1:
            target = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        return 0.5 * ((logits - target) ** 2).mean()
    return soft_cross_entropy(logits, target) if target.ndim == 2 else F.cross_entropy(logits, target)


# A per-sample loss hook of :func:`train`: (logits B x K, targets = labels[idx], idx B, epoch) -> scalar.
LossHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def make_optimizer(cfg: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names (SGD with momentum and weight decay, or Adam) at ``lr``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _make_augment(cfg: TrainConfig) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    if cfg.augment == "none":
        return None
    from ..augment import DSA

    dsa = DSA(cfg.dsa_strategy, mode=cfg.dsa_mode)
    return lambda x, g: dsa(x, g)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The box ``(r1, c1, r2, c2)`` (rows r1:r2, columns c1:c2) CutMix pastes, as DANCE's
    ``rand_bbox``: sides ``int(side * sqrt(1 - lam))``, centre uniform over the image, clipped."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    r1, r2 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    c1, c2 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return r1, c1, r2, c2


def cutmix(x: torch.Tensor, cfg: TrainConfig, rng: np.random.Generator,
           g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Maybe CutMix the batch ``x`` (``N x C x H x W``): ``(x, perm, ratio)``.

    With probability ``cfg.cutmix_prob`` a box is pasted from ``x[perm]`` and the loss is
    ``ratio * loss(y) + (1 - ratio) * loss(y[perm])`` with ``ratio`` = the share of pixels kept;
    otherwise ``perm`` is None and ``ratio`` 1.
    """
    if cfg.cutmix_prob <= 0 or rng.random() >= cfg.cutmix_prob:
        return x, None, 1.0
    lam = float(rng.beta(cfg.cutmix_beta, cfg.cutmix_beta))
    perm = torch.randperm(x.shape[0], generator=g).to(x.device)
    h, w = x.shape[-2:]
    r1, c1, r2, c2 = cutmix_box(h, w, lam, rng)
    x = x.clone()
    x[:, :, r1:r2, c1:c2] = x[perm, :, r1:r2, c1:c2]
    return x, perm, 1.0 - (r2 - r1) * (c2 - c1) / (h * w)


def _running_stats(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, saved copy) for every batch-norm running statistic of ``model``."""
    return [(b, b.detach().clone()) for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()]


def gsam_gradient(model: nn.Module, loss_fn: Callable[[], torch.Tensor], cfg: TrainConfig,
                  eps: float = 1e-12) -> None:
    """Replace the gradients in ``model`` (those of ``loss_fn()`` at the current weights ``w``,
    already computed by ``backward``) with the GSAM update direction.

    With ``g`` the gradient at ``w`` and ``a = |w|`` when ``cfg.sam_adaptive`` (else 1):

    - perturbation ``e = rho * a^2 g / ||a g||`` (SAM; ASAM with the adaptive scaling);
    - ``h``: the gradient of ``loss_fn()`` at ``w + e`` (same batch, same augmentation);
    - ``v = g - (<g, h> / ||h||^2) h``: the part of ``g`` orthogonal to ``h``;
    - result ``h - alpha * v``, written into ``p.grad``; the weights are back at ``w``.

    This is the decomposition of the GSAM reference implementation that FTD (and the study's
    ``buffer_FTD.py``) train experts with. Batch-norm running statistics are restored after the
    second forward pass, so they are updated once per step, as in plain training.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return
    with torch.no_grad():
        g = [p.grad.detach().clone() for p in params]
        scaled = [(p.abs() * gi if cfg.sam_adaptive else gi) for p, gi in zip(params, g)]
        scale = cfg.sam_rho / (torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled])) + eps)
        e = [gi * scale * (p * p if cfg.sam_adaptive else 1.0) for p, gi in zip(params, g)]
        for p, ei in zip(params, e):
            p.add_(ei)
    saved = _running_stats(model)
    for p in params:
        p.grad = None
    loss_fn().backward()
    with torch.no_grad():
        for buf, copy_ in saved:
            buf.copy_(copy_)
        h = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        g_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in g]))
        h_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in h]))
        inner = sum((gi * hi).sum() for gi, hi in zip(g, h))
        cosine = inner / (g_norm * h_norm + eps)
        for p, gi, hi, ei in zip(params, g, h, e):
            vertical = gi - cosine * g_norm * hi / (h_norm + eps)
            p.grad = hi - cfg.sam_alpha * vertical
            p.sub_(ei)
