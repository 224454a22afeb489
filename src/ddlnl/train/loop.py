"""The one training loop (:func:`train`) and what a run leaves (:class:`TrainResult`)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data import LabeledTensors
from ..errors import ConfigError
from ..utils import derive_seed, generator, progress, retain_freed_cpu_memory

from .config import TrainConfig
from .predict import accuracy
from .step import LossHook, _loss, _lr_at, _make_augment, cutmix, gsam_gradient, make_optimizer


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
    if device.type == "cpu":
        retain_freed_cpu_memory()  # a step's activations reuse the last step's pages (see there)
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
