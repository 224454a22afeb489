"""Fresh models trained and measured on the clean test split: :func:`evaluate` (``n_runs`` models
on a training set, the one evaluation every synthetic set goes through) and :func:`run_baseline`
(the full-noisy baselines), with the stratified splits they use."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data import LabeledTensors
from ..errors import ConfigError
from ..utils import derive_seed, generator

from .config import BaselineConfig, TrainConfig
from .loop import train
from .predict import predict_logits
from .step import build_model
from .together import together_supported, train_together


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
    from ..longtail import per_class_accuracy

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
    if bcfg.stopping == "converged":
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
