"""Noise-robust training baselines, run through ddlnl's one training loop (:func:`ddlnl.train.train`
with its ``loss_fn`` hook), so they share the model, schedule, data and budget of every other route.

* **GCE** (generalized cross-entropy, Zhang & Sabuncu, NeurIPS 2018): per sample
  ``L_q = (1 - p_y^q) / q`` with ``p_y`` the softmax probability of the given label. As ``q -> 0`` it
  tends to cross-entropy ``-log p_y``; at ``q = 1`` it is ``1 - p_y`` (the MAE of the probability
  vector up to a factor 2). The paper's value is ``q = 0.7`` (the untruncated ``L_q``).
* **Co-teaching** (Han et al., NeurIPS 2018): two networks see the same batches; each ranks the
  batch by its own cross-entropy, keeps the ``R(e) = 1 - tau * min(e / T_k, 1)`` fraction with the
  smallest losses, and the *other* network is updated on those samples only. ``tau`` is the forget
  rate, the noise rate (here always an *estimated* one, never the true one); the published schedule
  ramps it linearly over ``T_k = 10`` epochs (the authors' code: ``np.linspace(0, tau, T_k)`` for the
  first ``T_k`` epochs, then ``tau``). Both networks are one :class:`CoTeachingPair` module, so the
  loop trains them with one optimizer over disjoint parameters, which is the same update as two
  optimizers; at evaluation the pair answers with its first network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import LabeledTensors
from .errors import ConfigError
from .train import TrainConfig, build_model, train
from .utils import derive_seed

__all__ = ["gce_loss", "GCE_Q", "forget_rate_schedule", "CoTeachingPair", "coteaching_selection",
           "CoTeachingLoss", "train_gce", "train_coteaching", "RobustRun"]

GCE_Q = 0.7  # Zhang & Sabuncu (2018), the value used for all their reported L_q results
COTEACHING_TK = 10  # Han et al. (2018): epochs over which the forget rate ramps up


def gce_loss(logits: torch.Tensor, target: torch.Tensor, q: float = GCE_Q) -> torch.Tensor:
    """Mean generalized cross-entropy ``(1 - p_y^q) / q`` over a batch.

    Args:
        logits: ``B x K``.
        target: ``B`` int64 given labels.
        q: in ``(0, 1]``; ``q -> 0`` is cross-entropy, ``q = 1`` is ``1 - p_y``.
    """
    if not 0.0 < q <= 1.0:
        raise ConfigError(f"GCE q must be in (0, 1], got {q}")
    p_y = torch.softmax(logits, dim=1).gather(1, target.view(-1, 1)).squeeze(1)
    return ((1.0 - p_y.clamp_min(1e-12) ** q) / q).mean()


def forget_rate_schedule(forget_rate: float, epochs: int, tk: int = COTEACHING_TK) -> np.ndarray:
    """Co-teaching's forget rate per epoch (``epochs`` float64): ``linspace(0, tau, T_k)`` for the
    first ``T_k`` epochs, ``tau`` after (Han et al.'s code); the kept fraction is ``1 -`` this."""
    if not 0.0 <= forget_rate < 1.0:
        raise ConfigError(f"co-teaching forget rate must be in [0, 1), got {forget_rate}")
    sched = np.full(epochs, float(forget_rate))
    ramp = min(tk, epochs)
    sched[:ramp] = np.linspace(0.0, forget_rate, tk)[:ramp]
    return sched


class CoTeachingPair(nn.Module):
    """Two networks as one module: in training mode the logits of both side by side (``B x 2K``),
    in evaluation mode those of the first network (``B x K``)."""

    def __init__(self, first: nn.Module, second: nn.Module, num_classes: int):
        super().__init__()
        self.nets = nn.ModuleList([first, second])
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.cat([self.nets[0](x), self.nets[1](x)], dim=1)
        return self.nets[0](x)


def coteaching_selection(loss_a: torch.Tensor, loss_b: torch.Tensor, keep_fraction: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (in the batch) that each network keeps: ``int(keep_fraction * B)`` (at least 1) of
    its smallest per-sample losses, as Han et al.'s ``num_remember``. Returns ``(kept_by_a,
    kept_by_b)``; network A is then updated on ``kept_by_b`` and B on ``kept_by_a``."""
    n = loss_a.numel()
    k = max(1, int(keep_fraction * n))
    return torch.argsort(loss_a.detach())[:k], torch.argsort(loss_b.detach())[:k]


class CoTeachingLoss:
    """The ``loss_fn`` hook of :func:`ddlnl.train.train` for a :class:`CoTeachingPair`.

    ``last_selection`` keeps the batch positions of the latest step (``kept_by_a``, ``kept_by_b``)
    and ``kept_fractions`` the fraction kept per step, for reading.
    """

    def __init__(self, num_classes: int, schedule: np.ndarray):
        self.k = num_classes
        self.schedule = schedule
        self.last_selection: tuple[torch.Tensor, torch.Tensor] | None = None
        self.kept_fractions: list[float] = []

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        la, lb = logits[:, :self.k], logits[:, self.k:]
        ce_a = F.cross_entropy(la, target, reduction="none")
        ce_b = F.cross_entropy(lb, target, reduction="none")
        keep = 1.0 - float(self.schedule[min(epoch, len(self.schedule) - 1)])
        by_a, by_b = coteaching_selection(ce_a, ce_b, keep)
        self.last_selection = (by_a, by_b)
        self.kept_fractions.append(by_a.numel() / target.numel())
        # Each network learns from the samples its peer found easiest (the exchange).
        return ce_a[by_b].mean() + ce_b[by_a].mean()


@dataclass
class RobustRun:
    """A trained model, the wall time of its route (seconds), its curve and route-specific facts
    (Co-teaching: ``kept_fractions``, the fraction of each batch every network kept, per step)."""

    model: nn.Module
    seconds: float
    history: list
    info: dict = field(default_factory=dict)


def _shape(data: LabeledTensors) -> tuple[int, tuple[int, int]]:
    c, h, w = data.images.shape[1:]
    return int(c), (int(h), int(w))


def train_gce(data: LabeledTensors, cfg: TrainConfig, *, num_classes: int, seed: int, q: float = GCE_Q,
              device: torch.device | str = "cpu", show_progress: bool = False) -> RobustRun:
    """One fresh model trained on ``data``'s (noisy, hard) labels with GCE instead of cross-entropy."""
    t0 = time.perf_counter()
    c, hw = _shape(data)
    model = build_model(cfg, channels=c, num_classes=num_classes, image_size=hw, seed=seed, device=device)
    res = train(model, data, cfg, seed=seed, show_progress=show_progress, desc="gce",
                loss_fn=lambda logits, target, idx, epoch: gce_loss(logits, target, q))
    return RobustRun(model, time.perf_counter() - t0, res.history)


def train_coteaching(data: LabeledTensors, cfg: TrainConfig, *, num_classes: int, seed: int, forget_rate: float,
                     tk: int = COTEACHING_TK, device: torch.device | str = "cpu",
                     show_progress: bool = False) -> RobustRun:
    """Co-teaching on ``data``'s noisy labels; ``forget_rate`` is the (estimated) noise rate.

    The two networks start from seeds ``derive_seed(seed, "coteaching", 0/1)``; the returned model is
    the :class:`CoTeachingPair` (its first network answers in evaluation mode).
    """
    t0 = time.perf_counter()
    c, hw = _shape(data)
    nets = [build_model(cfg, channels=c, num_classes=num_classes, image_size=hw,
                        seed=derive_seed(seed, "coteaching", i), device=device) for i in range(2)]
    pair = CoTeachingPair(nets[0], nets[1], num_classes).to(device)
    hook = CoTeachingLoss(num_classes, forget_rate_schedule(forget_rate, cfg.epochs, tk))
    res = train(pair, data, cfg, seed=seed, show_progress=show_progress, desc="co-teaching", loss_fn=hook)
    return RobustRun(pair, time.perf_counter() - t0, res.history,
                     {"kept_fractions": hook.kept_fractions, "forget_rate": forget_rate, "tk": tk})
