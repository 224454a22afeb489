"""How expert trajectories are trained and stored (:class:`ExpertConfig`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..train import DSA_STRATEGY, TrainConfig


FORMAT = "ddlnl.experts/1"
# The study's FTD expert training (DD_LNL ``ddlnl_scripts.md``: buffer_FTD.py --rho_max 0.01
# --rho_min 0.01 --alpha 0.3, with the script's default --adaptive True).
FTD: dict[str, Any] = {"sam_rho": 0.01, "sam_alpha": 0.3, "sam_adaptive": True}
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class ExpertConfig:
    """How experts are trained; defaults are the MTT/DATM ``buffer.py`` settings.

    Only the first ``max_start_epoch - 1 + expert_epochs`` epochs are ever matched (DATM CIFAR-10
    IPC 50: 41 of 50), so ``epochs`` beyond that only cost time. The study (DD_LNL) keeps its
    ``buffer_FTD.py`` default of 100 epochs.
    """

    num_experts: int = 100  # trajectories (reference --num_experts 100); not part of the cache key
    epochs: int = 50  # N: epochs per expert (reference --train_epochs 50)
    lr: float = 0.01  # constant SGD learning rate (reference --lr_teacher 0.01)
    batch_size: int = 256  # reference --batch_train 256
    momentum: float = 0.0  # reference: momentum 0 (so epochs are plain SGD paths)
    weight_decay: float = 0.0  # reference: weight decay 0
    augment: str = "dsa"  # dsa | none (reference: DSA on every training batch)
    dsa_strategy: str = DSA_STRATEGY
    dsa_mode: str = "single"  # single (DSA, MTT/DATM) | idc (DANCE's pre-training: every listed op; see augment.DSA)
    cutmix_prob: float = 0.0  # CutMix per batch (DANCE's pre-training: 0.5); 0 = off
    cutmix_beta: float = 1.0  # CutMix Beta(beta, beta) (DANCE: 1)
    model: str = "convnet"
    depth: int = 3
    width: int = 128
    norm: str = "instance"  # instance | none (batch norm is refused: its statistics are buffers)
    activation: str = "relu"
    pooling: str = "avg"
    storage_dtype: str = "float32"  # float32 | float16 (halves the cache; rows are read back as float32)
    # Step schedule across epochs (MultiStepLR): the lr of epoch e is lr * lr_gamma ** (number of
    # milestones <= e). Empty = constant lr (MTT/DATM). DANCE's pre-training uses [2N//3, 5N//6], 0.2.
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1  # factor per milestone; unused (and not in the cache key) without milestones
    # Sharpness-aware (GSAM) steps, FTD's "flat trajectory" training: see TrainConfig.sam_* and FTD.
    sam_rho: float = 0.0  # 0 = plain SGD; FTD: 0.01
    sam_alpha: float = 0.0  # FTD (the study): 0.3
    sam_adaptive: bool = False  # FTD: True
    # Forward-corrected training (ddlnl.correction.forward_corrected_ce; DATM's noise_correction):
    # the K x K transition matrix T[i][j] = P(noisy = j | true = i) whose forward correction
    # replaces the cross-entropy; () = plain cross-entropy (the reference).
    forward_transition: tuple[tuple[float, ...], ...] = ()

    # A 2-core CPU: 2 experts of 8 epochs at width 32, as DATMConfig.PRESETS["cpu"].
    PRESETS: ClassVar[dict[str, dict]] = {"cpu": {"num_experts": 2, "epochs": 8, "width": 32}}

    def check(self) -> None:
        if self.num_experts < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("experts: num_experts, epochs and batch_size must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"experts: lr must be > 0, got {self.lr}")
        if self.norm == "batch":
            raise ConfigError("experts: norm=batch is not supported for trajectory matching (BatchNorm "
                              "running statistics are buffers that a flat parameter trajectory does not "
                              "hold); use norm=instance (the reference ConvNetIN) or none")
        if any(m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ConfigError(f"experts: lr_milestones must be increasing epochs >= 1, got {self.lr_milestones}")
        if self.lr_gamma <= 0:
            raise ConfigError(f"experts: lr_gamma must be > 0, got {self.lr_gamma}")
        if self.storage_dtype not in _STORAGE_DTYPES:
            raise ConfigError(f"experts: storage_dtype {self.storage_dtype!r}: use float32 or float16")
        if self.dsa_mode not in ("single", "idc"):
            raise ConfigError(f"experts: dsa_mode {self.dsa_mode!r}: use single or idc")
        if self.forward_transition:
            t = self.forward_transition
            k = len(t)
            if any(len(row) != k for row in t) or any(v < 0 for row in t for v in row) or \
                    any(abs(sum(row) - 1.0) > 1e-6 for row in t):
                raise ConfigError("experts: forward_transition must be a K x K matrix of probability rows "
                                  "(T[i][j] = P(noisy = j | true = i))")
        self.train_config().check()

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` of ONE expert epoch (constant lr, no momentum, no decay)."""
        return TrainConfig(model=self.model, depth=self.depth, width=self.width, norm=self.norm,
                           activation=self.activation, pooling=self.pooling, epochs=1,
                           batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, schedule="constant", augment=self.augment,
                           dsa_strategy=self.dsa_strategy, dsa_mode=self.dsa_mode, cutmix_prob=self.cutmix_prob,
                           cutmix_beta=self.cutmix_beta, sam_rho=self.sam_rho, sam_alpha=self.sam_alpha,
                           sam_adaptive=self.sam_adaptive)

    def epoch_lr(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``: ``lr`` times ``lr_gamma`` per milestone reached."""
        return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)

    def key_fields(self) -> dict[str, Any]:
        """Every field that changes what expert ``i`` is (all but ``num_experts``)."""
        fields = asdict(self)
        fields.pop("num_experts")
        # Added after experts were cached: without milestones neither field changes an expert, so
        # they stay out of the key and keys made before they existed remain valid.
        if not self.lr_milestones:
            fields.pop("lr_milestones")
            fields.pop("lr_gamma")
        # Likewise for sharpness-aware training: with rho 0 the other two fields are unused.
        if self.sam_rho == 0:
            for name in ("sam_rho", "sam_alpha", "sam_adaptive"):
                fields.pop(name)
        # Likewise for the DSA mode and CutMix (added for DANCE's pre-training).
        if self.dsa_mode == "single":
            fields.pop("dsa_mode")
        if self.cutmix_prob == 0:
            fields.pop("cutmix_prob")
            fields.pop("cutmix_beta")
        # With momentum the optimiser's buffer now carries over epoch boundaries (it restarted at
        # every epoch before): such experts are other experts, so they get another key.
        if self.momentum > 0:
            fields["momentum_across_epochs"] = True
        # Forward-corrected experts are other experts; plain ones keep the keys they had.
        if not self.forward_transition:
            fields.pop("forward_transition")
        else:
            fields["forward_transition"] = [list(map(float, row)) for row in self.forward_transition]
        return fields
