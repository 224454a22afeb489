"""The configs of a training run (:class:`TrainConfig`) and of the full-noisy baseline
(:class:`BaselineConfig`), and the dataset-dependent DSA strategy."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..errors import ConfigError


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


@dataclass(frozen=True)
class BaselineConfig:
    """The full-noisy baseline: the same ConvNet trained with cross-entropy on every noisy label.

    ``converged`` trains the whole schedule on all noisy labels and reports the final accuracy
    (the study's dashed lines). ``early-stop`` holds out ``val_fraction`` of the noisy training set
    and returns the epoch with the best *noisy* validation accuracy (what a careful practitioner
    tries first); it never looks at the test set.
    """

    stopping: str = "converged"  # when training stops: converged (the whole schedule) | early-stop
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
    # Fields renamed after records existed, by their name in result keys (ddlnl.config.identity),
    # so that those records keep their keys.
    KEY_NAMES: ClassVar[dict[str, str]] = {"stopping": "protocol"}

    def check(self) -> None:
        if self.stopping not in {"converged", "early-stop"}:
            raise ConfigError(f"baseline stopping {self.stopping!r}: use converged or early-stop")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.curve_size < 0 or self.record_every < 0:
            raise ConfigError(f"curve_size and record_every must be >= 0 (got {self.curve_size}, {self.record_every}); "
                              "curve_size=0 scores the curve on whole splits")
