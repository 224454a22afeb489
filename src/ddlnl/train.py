"""The one training loop, and evaluation.

Baselines, evaluation of every synthetic set, and (later) expert training all go through
:func:`train`. Data are held as tensors on the device and batched by index; there is no per-sample
DataLoader in the hot path.

Evaluation protocol: accuracy on the clean test split **at the end of training**.
:func:`train` can record the test-accuracy curve for reading, but nothing here ever selects an
epoch, iteration or checkpoint by test accuracy. Model selection, where wanted (the early-stopping
baseline), uses a validation split carved from the *noisy* training set.

Defining steps (pinned by ``tests/test_defining_train.py``, ``tests/test_train.py``):

1. one SGD step per batch of ``batch_size``, every sample once per epoch in a fresh order;
2. SGD with momentum 0.9 and weight decay 5e-4 at lr 0.01 (the DC/DSA/DM ``evaluate_synset``
   recipe); the ``step`` schedule multiplies the lr by 0.1 from epoch ``epochs // 2`` (0-based) on
   (the reference decays after epoch ``Epoch // 2 + 1`` of ``Epoch + 1``: one epoch later, one more
   epoch in all);
3. every training batch is augmented (DSA, one draw per batch) unless ``augment="none"``;
4. the accuracy reported is the end of training's; early stopping, where asked, returns the
   earliest epoch with the best accuracy on a noisy validation split and never looks at the test
   split.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import LabeledTensors
from .errors import ConfigError
from .models import create_model
from .utils import derive_seed, generator, progress

DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
# Digit images change meaning under a horizontal flip (the DSA reference drops flip for MNIST).
NO_FLIP_DATASETS = {"digits", "mnist"}


@dataclass(frozen=True)
class TrainConfig:
    """Architecture and schedule of one training run (defaults: the DC/DSA/DM evaluation recipe).

    The defaults train a ConvNet-3 (width 128, instance norm) with SGD momentum 0.9, weight decay
    5e-4, lr 0.01 divided by 10 at half of the epochs, batch 256, with DSA augmentation.
    """

    model: str = "convnet"  # registry name in ddlnl.models.MODELS
    depth: int = 3  # conv blocks
    width: int = 128  # channels per conv layer (of the first one when width_multiplier > 1)
    width_multiplier: int = 1  # block i has width * width_multiplier**i channels (RCIG's ConvNet: 2)
    norm: str = "instance"  # instance | batch | none
    activation: str = "relu"
    pooling: str = "avg"
    epochs: int = 300  # passes over the training data
    batch_size: int = 256  # images per SGD step
    lr: float = 0.01  # initial learning rate (a synthetic set's learned lr overrides it when use_learned_lr)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # step: lr x0.1 at epochs//2 | multistep: lr x0.2 at epochs 2N//3 and again at 5N//6 (DANCE's
    # evaluation, train.py: MultiStepLR stepped per epoch) | cosine | constant
    schedule: str = "step"
    warmup_epochs: int = 0  # linear warm-up from 0 over this many epochs (RCIG's recipe)
    final_lr_fraction: float = 0.0  # cosine schedule decays to lr * this (RCIG: 0.01)
    optimizer: str = "sgd"  # sgd (momentum, weight_decay) | adam (weight_decay as L2)
    loss: str = "ce"  # ce: cross-entropy (hard or probability targets) | mse: 0.5 * mean((logits - y)^2)
    augment: str = "dsa"  # dsa | none
    dsa_strategy: str = DSA_STRATEGY  # '_'-separated DSA ops (color, crop, cutout, flip, scale, rotate)
    dsa_mode: str = "single"  # single: one op per batch (DSA) | all | idc: flip + colour + one op (+ cutout), DANCE
    # CutMix (Yun et al. 2019) as DANCE trains and evaluates (train.py train_epoch): with this
    # probability per batch, a box of area ~ (1 - lam), lam ~ Beta(cutmix_beta, cutmix_beta), is
    # pasted from a shuffled copy of the batch and the loss mixes both targets by area. 0 = off.
    cutmix_prob: float = 0.0
    cutmix_beta: float = 1.0
    use_learned_lr: bool = True  # train a synthetic set with its learned lr when it carries one
    eval_batch_size: int = 1024  # inference batch
    # Sharpness-aware steps (GSAM, Zhuang et al., ICLR 2022), as FTD trains its experts (Du et al.,
    # CVPR 2023): the gradient is taken again at weights moved rho along the normalised gradient,
    # then its component orthogonal to the first gradient is subtracted alpha times. rho 0 = off.
    sam_rho: float = 0.0  # perturbation radius (FTD / the study's buffer_FTD.py runs: 0.01)
    sam_alpha: float = 0.0  # GSAM surrogate-gap weight (study: 0.3; 0 = plain SAM)
    sam_adaptive: bool = False  # ASAM scaling of the perturbation by |w| (the study's runs: on)

    # Options added after results existed: at these values they change nothing, so they are left
    # out of result keys (ddlnl.config.identity) and earlier records stay valid.
    KEY_NEUTRAL: ClassVar[dict[str, Any]] = {"warmup_epochs": 0, "final_lr_fraction": 0.0, "optimizer": "sgd",
                                             "loss": "ce", "sam_rho": 0.0, "sam_alpha": 0.0,
                                             "sam_adaptive": False, "width_multiplier": 1, "dsa_mode": "single",
                                             "cutmix_prob": 0.0, "cutmix_beta": 1.0}

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in {"step", "multistep", "cosine", "constant"}:
            raise ConfigError(f"schedule {self.schedule!r}: use step, multistep, cosine or constant")
        if self.augment not in {"dsa", "none"}:
            raise ConfigError(f"augment {self.augment!r}: use dsa or none")
        if self.dsa_mode not in {"single", "all", "idc"}:
            raise ConfigError(f"dsa_mode {self.dsa_mode!r}: use single, all or idc")
        if self.optimizer not in {"sgd", "adam"}:
            raise ConfigError(f"optimizer {self.optimizer!r}: use sgd or adam")
        if self.loss not in {"ce", "mse"}:
            raise ConfigError(f"loss {self.loss!r}: use ce or mse")
        if self.warmup_epochs < 0 or not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ConfigError("warmup_epochs must be >= 0 and final_lr_fraction in [0, 1]")
        if not 0.0 <= self.cutmix_prob <= 1.0 or self.cutmix_beta <= 0:
            raise ConfigError(f"cutmix_prob must be in [0, 1] and cutmix_beta > 0 (got {self.cutmix_prob}, "
                              f"{self.cutmix_beta}); cutmix_prob=0 turns CutMix off")
        if self.sam_rho < 0 or self.sam_alpha < 0:
            raise ConfigError(f"sam_rho and sam_alpha must be >= 0 (got {self.sam_rho}, {self.sam_alpha}); "
                              "sam_rho=0 turns sharpness-aware training off")

    def model_kwargs(self) -> dict[str, Any]:
        kwargs = dict(depth=self.depth, width=self.width, norm=self.norm, activation=self.activation,
                      pooling=self.pooling)
        if self.width_multiplier != 1:  # only models that know the option are asked for it
            kwargs["width_multiplier"] = self.width_multiplier
        return kwargs

    def for_dataset(self, dataset_name: str) -> "TrainConfig":
        """This config adapted to a dataset (no horizontal flip for digit datasets)."""
        return replace(self, dsa_strategy=dsa_strategy_for(dataset_name, self.dsa_strategy))


def dsa_strategy_for(dataset_name: str, strategy: str) -> str:
    """``strategy`` without ``flip`` for digit datasets, whose classes a mirror image changes."""
    if dataset_name in NO_FLIP_DATASETS:
        return "_".join(op for op in strategy.split("_") if op != "flip")
    return strategy


@dataclass
class TrainResult:
    """What a training run leaves: the model and its recorded curves.

    ``history`` has one entry per recorded epoch: ``{"epoch", "loss", "lr", "<split>_acc"...}``
    where the splits are the ``monitor`` ones given to :func:`train` (read-only, never used to
    choose anything).
    """

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_seen: int = 0


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
    from .augment import DSA

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


def train(model: nn.Module, data: LabeledTensors, cfg: TrainConfig, *, seed: int,
          lr: float | None = None, monitor: dict[str, LabeledTensors] | None = None,
          record_every: int = 0, select: str | None = None, show_progress: bool = False,
          desc: str = "train", loss_fn: LossHook | None = None,
          optimizer: torch.optim.Optimizer | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` and return it with its curves.

    Args:
        model: any module mapping ``N x C x H x W`` to logits ``N x K``, already on its device.
        data: hard (``int64`` N) or soft (float ``N x K``, rows are probabilities) labels.
        cfg: schedule and augmentation.
        seed: fixes batch order and augmentation draws.
        lr: initial learning rate, overriding ``cfg.lr`` (a synthetic set's learned lr).
        monitor: named splits whose accuracy is recorded every ``record_every`` epochs.
        record_every: 0 records only at the end.
        select: name of a *monitor* split (a noisy validation split, never the test set) whose best
            recorded accuracy chooses the returned weights (early stopping); None keeps the last.
        show_progress: a bar over epochs with rate and ETA.
        loss_fn: replaces ``cfg.loss``: ``loss_fn(logits, targets, idx, epoch) -> scalar`` where
            ``targets = data.labels[idx]``, ``idx`` (``B`` int64, on the device) indexes the batch's
            samples in ``data`` (so per-sample weights or targets can be looked up) and ``epoch``
            counts from 0 (so schedules can depend on it). The robust losses and the denoise route
            (``ddlnl.robust``, ``ddlnl.denoise``) train through it.
        optimizer: an optimiser of ``model``'s parameters to continue with (its momentum buffers
            carry over; its lr is set by the schedule every step), e.g. one kept across the
            per-epoch calls that train an expert; None builds a fresh one from ``cfg``.

    Returns:
        :class:`TrainResult`; with ``select`` the model holds the selected epoch's weights and
        ``history`` still records every epoch.
    """
    if select is not None and (monitor is None or select not in monitor):
        raise ConfigError(f"select={select!r} must name a monitored split")
    if select == "test":
        raise ConfigError("selecting a checkpoint by test accuracy is not allowed; use a noisy validation split")
    device = next(model.parameters()).device
    images = data.images.to(device)
    labels = data.labels.to(device)
    n = images.shape[0]
    base_lr = float(lr if lr is not None else cfg.lr)
    opt = optimizer if optimizer is not None else make_optimizer(cfg, model, base_lr)
    g_order = generator(derive_seed(seed, "order"))
    g_aug = generator(derive_seed(seed, "augment"))
    # CutMix draws (apply?, lam, box) from numpy for its Beta variate, its permutations from torch.
    rng_mix = np.random.default_rng(derive_seed(seed, "cutmix"))
    g_mix = generator(derive_seed(seed, "cutmix-perm"))
    augment = _make_augment(cfg)
    step_loss = loss_fn if loss_fn is not None else (lambda logits, target, idx, epoch: _loss(cfg, logits, target))
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    result = TrainResult(model=model)
    best_acc, best_state = -1.0, None
    start = time.perf_counter()
    bar = progress(range(cfg.epochs), desc=desc, enabled=show_progress, unit="epoch")
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=g_order).to(device)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, base_lr, epoch, step / steps_per_epoch)
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = images[idx]
            if augment is not None:
                x = augment(x, g_aug)
            y = labels[idx]
            x, mix_perm, ratio = cutmix(x, cfg, rng_mix, g_mix)

            def batch_loss(logits: torch.Tensor) -> torch.Tensor:
                if mix_perm is None:
                    return step_loss(logits, y, idx, epoch)
                return (ratio * step_loss(logits, y, idx, epoch)
                        + (1.0 - ratio) * step_loss(logits, y[mix_perm], idx[mix_perm], epoch))

            logits = model(x)
            loss = batch_loss(logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.sam_rho > 0:
                gsam_gradient(model, lambda: batch_loss(model(x)), cfg)
            opt.step()
            total_loss += float(loss.detach()) * idx.numel()
        result.images_seen += n
        last = epoch == cfg.epochs - 1
        if monitor and (last or (record_every and (epoch + 1) % record_every == 0)):
            entry = {"epoch": epoch + 1, "loss": total_loss / n, "lr": opt.param_groups[0]["lr"]}
            for name, split in monitor.items():
                entry[f"{name}_acc"] = accuracy(model, split, batch_size=cfg.eval_batch_size)
            result.history.append(entry)
            if select is not None and entry[f"{select}_acc"] > best_acc:
                best_acc = entry[f"{select}_acc"]
                best_state = copy.deepcopy(model.state_dict())
        elif last:
            result.history.append({"epoch": epoch + 1, "loss": total_loss / n})
        if show_progress:
            bar.set_postfix(loss=f"{total_loss / n:.3f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------------------
# Several runs trained together
# --------------------------------------------------------------------------------------------

# Layers a ConvNet's ``features`` may hold that act on each channel (or pixel) on its own, so the
# same module serves n runs whose channels are stacked side by side.
_CHANNELWISE = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Softplus, nn.GELU, nn.AvgPool2d,
                nn.MaxPool2d)


def together_supported(model: nn.Module, cfg: TrainConfig) -> bool:
    """Whether :func:`train_together` can train copies of ``model`` under ``cfg``.

    It can for a :class:`~ddlnl.models.ConvNet` (any depth, widths, norm, activation, pooling)
    trained without sharpness-aware steps or CutMix; anything else trains one run after another.
    """
    from .models import ConvNet

    if cfg.sam_rho > 0 or cfg.cutmix_prob > 0 or type(model) is not ConvNet or not isinstance(model.classifier, nn.Linear):
        return False
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros":
                return False
        elif not isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, *_CHANNELWISE)):
            return False
    return True


def _stack_layer(mods: list[nn.Module]) -> nn.Module:
    """One layer doing the work of ``mods`` (the same layer of n runs) on channel-stacked input.

    Run r's channels are ``[r * c, (r + 1) * c)``. A convolution becomes a grouped convolution
    (groups = n), a GroupNorm with G groups one with n * G groups, a BatchNorm one over n * c
    channels: each output channel still sees only its own run's channels and statistics, and the
    stacked weights are the runs' weights concatenated along dim 0.
    """
    m0, n = mods[0], len(mods)
    meta = torch.device("meta")  # no initialisation: it would draw from the global RNG
    if isinstance(m0, nn.Conv2d):
        layer: nn.Module = nn.Conv2d(n * m0.in_channels, n * m0.out_channels, m0.kernel_size,
                                     stride=m0.stride, padding=m0.padding, dilation=m0.dilation,
                                     groups=n, bias=m0.bias is not None, device=meta)
    elif isinstance(m0, nn.GroupNorm):
        layer = nn.GroupNorm(n * m0.num_groups, n * m0.num_channels, eps=m0.eps, affine=m0.affine,
                             device=meta)
    elif isinstance(m0, nn.BatchNorm2d):
        layer = nn.BatchNorm2d(n * m0.num_features, eps=m0.eps, momentum=m0.momentum, affine=m0.affine,
                               track_running_stats=m0.track_running_stats, device=meta)
    else:
        return copy.deepcopy(m0)
    ref = next(iter(m0.state_dict().values()))
    layer = layer.to_empty(device=ref.device)
    with torch.no_grad():
        for name, value in layer.state_dict().items():
            parts = [m.state_dict()[name] for m in mods]
            value.copy_(parts[0] if value.ndim == 0 else torch.cat(parts))  # 0-d: num_batches_tracked
    return layer


class _StackedConvNets(nn.Module):
    """n ConvNets of one architecture as one network: input ``n x B x C x H x W``, logits ``n x B x K``.

    Every parameter is the runs' parameters concatenated along dim 0, so an element-wise optimiser
    (SGD with momentum and weight decay, Adam) stepping the stacked tensors takes exactly the step
    each run's optimiser would take, given the same gradients.
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.n = len(models)
        self.features = nn.Sequential(*[_stack_layer([m.features[i] for m in models])
                                        for i in range(len(models[0].features))])
        w = torch.cat([m.classifier.weight.detach() for m in models])  # n*K x D
        self.classifier_weight = nn.Parameter(w.clone())
        bias = models[0].classifier.bias
        self.classifier_bias = (nn.Parameter(torch.cat([m.classifier.bias.detach() for m in models]).clone())
                                if bias is not None else None)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        n, b = xs.shape[:2]
        h = self.features(xs.transpose(0, 1).reshape(b, n * xs.shape[2], *xs.shape[3:]))
        h = h.reshape(b, n, -1).transpose(0, 1)  # n x B x D, each run's features in ConvNet.embed order
        w = self.classifier_weight.view(n, -1, h.shape[2])
        out = torch.bmm(h, w.transpose(1, 2))
        return out if self.classifier_bias is None else out + self.classifier_bias.view(n, 1, -1)

    @torch.no_grad()
    def write_back(self, models: list[nn.Module]) -> None:
        """Copy run r's slice of every stacked tensor into ``models[r]``."""
        stacked = dict(self.features.named_parameters()) | dict(self.features.named_buffers())
        for r, model in enumerate(models):
            for name, value in model.features.state_dict().items():
                src = stacked[name]
                value.copy_(src if value.ndim == 0 else src.view(self.n, *value.shape)[r])
            model.classifier.weight.copy_(self.classifier_weight.view(self.n, *model.classifier.weight.shape)[r])
            if self.classifier_bias is not None:
                model.classifier.bias.copy_(self.classifier_bias.view(self.n, -1)[r])


def _loss_per_run(cfg: TrainConfig, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`_loss` of each run: ``logits`` ``n x B x K``, ``target`` ``n x B`` (hard) or ``n x B x K``."""
    if cfg.loss == "mse":
        if target.ndim == 2:
            target = F.one_hot(target, logits.shape[2]).to(logits.dtype)
        return 0.5 * ((logits - target) ** 2).mean(dim=(1, 2))
    logp = F.log_softmax(logits, dim=2)
    if target.ndim == 3:
        return -(target * logp).sum(dim=2).mean(dim=1)
    return -logp.gather(2, target.unsqueeze(2)).squeeze(2).mean(dim=1)


def train_together(models: list[nn.Module], data: LabeledTensors, cfg: TrainConfig, *, seeds: list[int],
                   lr: float | None = None, monitor: dict[str, LabeledTensors] | None = None,
                   record_every: int = 0, select: str | None = None, show_progress: bool = False,
                   desc: str = "train") -> list[TrainResult]:
    """Train ``models`` (n ConvNets of one architecture) in place, all at once; run r as
    ``train(models[r], data, cfg, seed=seeds[r], ...)`` would train it.

    Each run keeps its own initial weights, batch order and augmentation draws (from its seed),
    and takes the same lr schedule, soft or hard targets and optimiser steps; the n networks run as
    one grouped network (:class:`_StackedConvNets`), so a step costs one set of larger operations
    instead of n sets of small ones. Results equal the sequential ones up to float rounding (the
    grouped kernels sum in another order). Needs :func:`together_supported`.

    Returns:
        One :class:`TrainResult` per run (``seconds`` is the shared wall time).
    """
    if len(models) != len(seeds) or not models:
        raise ConfigError(f"train_together needs one seed per model (got {len(models)} models, {len(seeds)} seeds)")
    if not all(together_supported(m, cfg) for m in models):
        raise ConfigError("train_together trains ConvNets without sharpness-aware steps; train these one by one")
    if select is not None and (monitor is None or select not in monitor):
        raise ConfigError(f"select={select!r} must name a monitored split")
    if select == "test":
        raise ConfigError("selecting a checkpoint by test accuracy is not allowed; use a noisy validation split")
    device = next(models[0].parameters()).device
    images = data.images.to(device)
    labels = data.labels.to(device)
    n, runs = images.shape[0], len(models)
    base_lr = float(lr if lr is not None else cfg.lr)
    net = _StackedConvNets(models)
    opt = make_optimizer(cfg, net, base_lr)
    g_orders = [generator(derive_seed(s, "order")) for s in seeds]
    g_augs = [generator(derive_seed(s, "augment")) for s in seeds]
    augment = _make_augment(cfg)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    results = [TrainResult(model=m) for m in models]
    best = [(-1.0, None)] * runs
    start = time.perf_counter()
    bar = progress(range(cfg.epochs), desc=desc, enabled=show_progress, unit="epoch")
    for epoch in bar:
        net.train()
        perms = [torch.randperm(n, generator=g).to(device) for g in g_orders]
        total_loss = torch.zeros(runs, dtype=torch.float64, device=device)
        for step in range(steps_per_epoch):
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, base_lr, epoch, step / steps_per_epoch)
            idx = [p[step * cfg.batch_size:(step + 1) * cfg.batch_size] for p in perms]
            xs = [images[i] for i in idx]
            if augment is not None:
                xs = [augment(x, g) for x, g in zip(xs, g_augs)]
            losses = _loss_per_run(cfg, net(torch.stack(xs)), torch.stack([labels[i] for i in idx]))
            opt.zero_grad(set_to_none=True)
            # Run r's parameters enter only its own loss, so the sum's gradient is each run's own.
            losses.sum().backward()
            opt.step()
            total_loss += losses.detach().double() * idx[0].numel()
        for res in results:
            res.images_seen += n
        last = epoch == cfg.epochs - 1
        mean_loss = (total_loss / n).tolist()
        if monitor and (last or (record_every and (epoch + 1) % record_every == 0)):
            net.write_back(models)
            for r, (model, res) in enumerate(zip(models, results)):
                entry = {"epoch": epoch + 1, "loss": mean_loss[r], "lr": opt.param_groups[0]["lr"]}
                for name, split in monitor.items():
                    entry[f"{name}_acc"] = accuracy(model, split, batch_size=cfg.eval_batch_size)
                res.history.append(entry)
                if select is not None and entry[f"{select}_acc"] > best[r][0]:
                    best[r] = (entry[f"{select}_acc"], copy.deepcopy(model.state_dict()))
        elif last:
            for r, res in enumerate(results):
                res.history.append({"epoch": epoch + 1, "loss": mean_loss[r]})
        if show_progress:
            bar.set_postfix(loss=f"{float(np.mean(mean_loss)):.3f}")
    net.write_back(models)
    seconds = time.perf_counter() - start
    for (_, state), model, res in zip(best, models, results):
        if state is not None:
            model.load_state_dict(state)
        res.seconds = seconds
    return results


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits ``N x K`` in eval mode, on the model's device, returned on CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = [model(images[i:i + batch_size].to(device)).float().cpu()
            for i in range(0, images.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, data: LabeledTensors, batch_size: int = 1024) -> float:
    """Fraction of ``data`` whose argmax prediction equals its (hard, or argmax of soft) label."""
    logits = predict_logits(model, data.images, batch_size)
    target = data.labels if data.labels.ndim == 1 else data.labels.argmax(1)
    return float((logits.argmax(1) == target.cpu()).float().mean())


@dataclass
class EvalResult:
    """Clean-test accuracies of ``n_runs`` fresh models (end of training), with their seeds."""

    accs: list[float]
    seeds: list[int]
    seconds: float = 0.0
    histories: list[list[dict[str, float]]] = field(default_factory=list)
    # Per run, the accuracy on each true class of the test split (ddlnl.longtail.per_class_accuracy;
    # records written before it existed have none).
    per_class: list[list[float]] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accs)) if self.accs else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.accs)) if self.accs else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"accs": self.accs, "seeds": self.seeds, "mean": self.mean, "std": self.std,
                "seconds": self.seconds, "histories": self.histories, "per_class": self.per_class}

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} +- {100 * self.std:.2f}"


def evaluate(train_data: LabeledTensors, test: LabeledTensors, cfg: TrainConfig, *, num_classes: int,
             n_runs: int = 3, seed: int = 0, device: torch.device | str = "cpu", lr: float | None = None,
             monitor: dict[str, LabeledTensors] | None = None, record_every: int = 0,
             select: str | None = None, show_progress: bool = False,
             desc: str = "evaluate", together: bool | None = None) -> EvalResult:
    """Train ``n_runs`` fresh models on ``train_data`` and measure each on the clean ``test`` split.

    Accuracy is taken at the end of training (or at the epoch chosen on a noisy validation split
    when ``select`` names one). Run ``r`` uses seed ``derive_seed(seed, "run", r)``, recorded in
    the result.

    ``together``: True trains the runs at once (:func:`train_together`; same seeds, same results
    up to float rounding), False one after another (the exact path); None chooses with
    :func:`use_together`. A model or config :func:`together_supported` refuses trains one by one.
    """
    if n_runs < 1:
        raise ConfigError(f"n_runs must be >= 1, got {n_runs}")
    channels, h, w = train_data.images.shape[1:]
    seeds = [derive_seed(seed, "run", r) for r in range(n_runs)]
    start = time.perf_counter()
    models = [build_model(cfg, channels=channels, num_classes=num_classes, image_size=(h, w),
                          seed=s, device=device) for s in seeds]
    if together is None:
        together = use_together(cfg, n_runs=n_runs, n_images=len(train_data), device=device)
    if together and n_runs > 1 and together_supported(models[0], cfg):
        results = train_together(models, train_data, cfg, seeds=seeds, lr=lr, monitor=monitor,
                                 record_every=record_every, select=select, show_progress=show_progress,
                                 desc=f"{desc} runs 1-{n_runs} together")
    else:
        results = [train(model, train_data, cfg, seed=s, lr=lr, monitor=monitor, record_every=record_every,
                         select=select, show_progress=show_progress, desc=f"{desc} run {r + 1}/{n_runs}")
                   for r, (model, s) in enumerate(zip(models, seeds))]
    from .longtail import per_class_accuracy

    target = test.labels if test.labels.ndim == 1 else test.labels.argmax(1)
    preds = [predict_logits(model, test.images, cfg.eval_batch_size).argmax(1) for model in models]
    accs = [float((p == target.cpu()).float().mean()) for p in preds]  # as accuracy(), from the same logits
    per_class = [per_class_accuracy(p.numpy(), target.cpu().numpy(), num_classes) for p in preds]
    return EvalResult(accs=accs, seeds=seeds, seconds=time.perf_counter() - start,
                      histories=[res.history for res in results], per_class=per_class)


def use_together(cfg: TrainConfig, *, n_runs: int, n_images: int, device: torch.device | str) -> bool:
    """The default of ``evaluate(together=None)``: together on CUDA, one by one on a CPU.

    On a GPU, n small networks as one grouped network launch one set of kernels instead of n
    (not measured here: no GPU). On a CPU a step of the evaluation ConvNet is bound by arithmetic
    and memory traffic, not by per-operation overhead, so stacking runs saves little or nothing
    (benchmarks/results/eval.md), and the one-by-one path keeps results bit-identical to earlier
    records. ``cfg``, ``n_runs`` and ``n_images`` are taken so the rule can use them.
    """
    return n_runs > 1 and torch.device(device).type == "cuda"


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(keep, held_out)`` with about ``fraction`` of every class (by the given labels) held out."""
    g = generator(seed)
    keep, held = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(round(fraction * idx.numel()))
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values


def curve_subsample(split: LabeledTensors, size: int) -> LabeledTensors:
    """A fixed stratified subsample of about ``size`` images of ``split`` (by its hard labels; the
    same images every time), or ``split`` itself when ``size`` is 0 or not smaller than it."""
    if size <= 0 or size >= len(split):
        return split
    labels = split.labels if split.labels.ndim == 1 else split.labels.argmax(1)
    _, held = stratified_split(labels, size / len(split), derive_seed(0, "curve-subsample"))
    return split.subset(held)


@dataclass(frozen=True)
class BaselineConfig:
    """The full-noisy baseline: the same ConvNet trained with cross-entropy on every noisy label.

    ``converged`` trains the whole schedule on all noisy labels and reports the final accuracy
    (the study's dashed lines). ``early-stop`` holds out ``val_fraction`` of the noisy training set
    and returns the epoch with the best *noisy* validation accuracy (what a careful practitioner
    tries first); it never looks at the test set.
    """

    protocol: str = "converged"  # converged | early-stop
    val_fraction: float = 0.1  # early-stop only: share of noisy training labels held out for selection
    record_every: int = 1  # epochs between recorded points of the accuracy curve
    # Images per split scored for the curve (test, noisy train): a fixed stratified subsample, so
    # that scoring is not most of a baseline's time (with the full 10k-image test set after every
    # epoch it was ~2/3 of it on a 2,000-image training set). 0 = whole splits. The reported
    # accuracy is always on the full test set, and early stopping selects on the full noisy
    # validation split. It changes only the curve, never the trained models, so it is left out
    # of result keys (KEY_NEUTRAL).
    curve_size: int = 2000

    KEY_NEUTRAL: ClassVar[dict[str, Any]] = {"curve_size": 2000}

    def check(self) -> None:
        if self.protocol not in {"converged", "early-stop"}:
            raise ConfigError(f"baseline protocol {self.protocol!r}: use converged or early-stop")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.curve_size < 0 or self.record_every < 0:
            raise ConfigError(f"curve_size and record_every must be >= 0 (got {self.curve_size}, {self.record_every}); "
                              "curve_size=0 scores the curve on whole splits")


def run_baseline(noisy_train: LabeledTensors, test: LabeledTensors, cfg: TrainConfig,
                 bcfg: BaselineConfig = BaselineConfig(), *, num_classes: int, n_runs: int = 1,
                 seed: int = 0, device: torch.device | str = "cpu",
                 show_progress: bool = False) -> EvalResult:
    """Full-noisy baseline (see :class:`BaselineConfig`); accuracy curves recorded for reading.

    The curve's ``test_acc`` and ``noisy_train_acc`` are scored on :func:`curve_subsample` of
    those splits (``bcfg.curve_size`` images); the returned accuracies are on the full test split.
    """
    bcfg.check()
    curve_test = curve_subsample(test, bcfg.curve_size)
    if bcfg.protocol == "converged":
        # "noisy_train" shows whether the network has fitted (memorised) its noisy labels.
        return evaluate(noisy_train, test, cfg, num_classes=num_classes, n_runs=n_runs, seed=seed,
                        device=device, monitor={"noisy_train": curve_subsample(noisy_train, bcfg.curve_size),
                                                "test": curve_test},
                        record_every=bcfg.record_every, show_progress=show_progress, desc="baseline")
    keep, held = stratified_split(noisy_train.labels, bcfg.val_fraction, derive_seed(seed, "val-split"))
    return evaluate(noisy_train.subset(keep), test, cfg, num_classes=num_classes, n_runs=n_runs,
                    seed=seed, device=device,
                    monitor={"noisy_val": noisy_train.subset(held), "test": curve_test},
                    record_every=bcfg.record_every, select="noisy_val",
                    show_progress=show_progress, desc="baseline (early-stop)")
