"""``random``: a random real subset with its noisy labels, the reference every distiller must beat.

If a distiller does not beat this at the same IPC, "distillation helped" cannot be told apart from
"fewer samples helped".

Defining steps (pinned by ``tests/test_defining_random.py``):

1. ``ipc`` distinct images are drawn uniformly without replacement from every class of the
   *noisy* labels (each image of a class equally likely), class-major;
2. images and their noisy labels are returned unchanged (no learning of any kind);
3. the draw is a function of the seed (same seed, same subset).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Sequence

import torch

from ..data import LabeledTensors
from ..synthetic import SyntheticSet
from ..utils import derive_seed, generator
from .common import class_indices, sample_per_class


@dataclass(frozen=True)
class RandomConfig:
    """No hyperparameters: ``ipc`` images drawn uniformly from each noisy class."""

    PRESETS: ClassVar[dict[str, dict]] = {"cpu": {}}


def distill(train: LabeledTensors, ipc: int | Sequence[int], cfg: RandomConfig = RandomConfig(), *, seed: int,
            num_classes: int, device: torch.device | str = "cpu", progress: bool = False) -> SyntheticSet:
    """``ipc`` random real images per noisy class (or ``ipc[c]`` of class ``c``), with their noisy labels.

    Raises:
        ConfigError: ``ipc`` larger than the smallest noisy class.
    """
    g = generator(derive_seed(seed, "random-subset"))
    idx = sample_per_class(class_indices(train.labels, num_classes), ipc, g)
    return SyntheticSet(images=train.images[idx].clone().float(), labels=train.labels[idx].clone(),
                        meta={"method": "random", "config": asdict(cfg), "ipc": ipc, "seed": seed,
                              "num_classes": num_classes, "source_indices": idx.tolist()})
