"""Several runs trained together as one grouped network (:func:`train_together`): the same
seeds and steps as :func:`ddlnl.train.train` one run at a time, up to float rounding."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import LabeledTensors
from ..errors import ConfigError
from ..utils import derive_seed, generator, progress

from .config import TrainConfig
from .loop import TrainResult
from .predict import accuracy
from .step import _lr_at, _make_augment, make_optimizer


# Layers a ConvNet's ``features`` may hold that act on each channel (or pixel) on its own, so the
# same module serves n runs whose channels are stacked side by side.
_CHANNELWISE = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Softplus, nn.GELU, nn.AvgPool2d,
                nn.MaxPool2d)


def together_supported(model: nn.Module, cfg: TrainConfig) -> bool:
    """Whether :func:`train_together` can train copies of ``model`` under ``cfg``.

    It can for a :class:`~ddlnl.models.ConvNet` (any depth, widths, norm, activation, pooling)
    trained without sharpness-aware steps or CutMix; anything else trains one run after another.
    """
    from ..models import ConvNet

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
