"""RCIG's own evaluation recipe (``eval_recipe=own``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ...data import LabeledTensors
from ...synthetic import SyntheticSet
from ...train import TrainConfig

from .solvers import _with_flips


# --------------------------------------------------------------------------------------------
# RCIG's evaluation recipe
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RCIGEvalRecipe:
    """How RCIG trains a network on a distilled set (``eval.py`` of yolky/RCIG, with augmentation).

    The loss is MSE on the *raw* learned labels, ``0.5 * mean((f(x) - y)^2)`` over all ``N x K``
    entries (``get_training_loss_l2`` with ``l2 = 0``), not cross-entropy.
    """

    optimizer: str = "adam"  # optax.adam, default betas/eps
    lr: float = 1e-4  # eval_lr
    warmup_steps: int = 500  # linear 0 -> lr
    steps: int = 2000  # 1000 if the learned set has exactly 10 images, else 2000
    final_lr_fraction: float = 0.01  # cosine decay to lr * 0.01 over steps - warmup_steps
    loss: str = "mse"  # on meta["raw_labels"]
    weight_decay: float = 0.0  # eval_l2
    batch_size: int | None = None  # 256 if the learned set has > 256 images, else full batch
    # augmax ops, one drawn per image: flip_color_crop_rotate_translate_cutout (RGB) or
    # crop_rotate_translate_cutout (MNIST, Fashion-MNIST: depth_3_no_flip.txt)
    augment: str = "flip_color_crop_rotate_translate_cutout"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # our closest DSA tokens
    flip_copies: bool = True  # RGB: train on the set plus its horizontal flips (use_flip)
    activation: str = "relu"  # evaluation nets use ReLU (use_softplus=False)
    norm: str = "none"
    width: int = 128  # first block
    width_multiplier: int = 2  # eval.py builds the same models.Conv: 128, 256, 512


GRAYSCALE_DATASETS = {"mnist", "fashion-mnist", "digits"}


def rcig_eval_recipe(num_images: int, dataset_name: str | None = None) -> RCIGEvalRecipe:
    """The published evaluation recipe for a set of ``num_images`` images (flips not counted).

    Grayscale datasets (MNIST, Fashion-MNIST; digits by analogy) drop flips and colour jitter.
    """
    gray = dataset_name in GRAYSCALE_DATASETS
    # eval.py decides both from the learned set's size, before appending flips.
    return RCIGEvalRecipe(
        steps=1000 if num_images == 10 else 2000,
        batch_size=256 if num_images > 256 else None,
        augment="crop_rotate_translate_cutout" if gray else "flip_color_crop_rotate_translate_cutout",
        dsa_strategy="crop_cutout_scale_rotate" if gray else "color_crop_cutout_flip_scale_rotate",
        flip_copies=not gray)


def rcig_eval_config(base: TrainConfig, *, num_images: int, dataset_name: str | None = None) -> TrainConfig:
    """``base`` changed to RCIG's evaluation recipe, as far as :class:`TrainConfig` can hold it.

    Set here: ConvNet width 128 doubling per block (128, 256, 512), no normalisation, ReLU;
    weight decay 0; the step budget as epochs (``ceil(steps / batches per epoch)``, counted on the
    set plus its flip copies, which :func:`own_recipe` trains on, as ``eval.py`` does); batch
    size; cosine schedule; DSA with the closest tokens to RCIG's augmax ops; ``optimizer="adam"``,
    ``lr=1e-4``, ``loss="mse"`` (on the raw labels, see :func:`own_recipe`), ``warmup_epochs``,
    ``final_lr_fraction``.
    """
    recipe = rcig_eval_recipe(num_images, dataset_name)
    seen = num_images * (2 if recipe.flip_copies else 1)
    batch = recipe.batch_size or seen
    per_epoch = max(1, math.ceil(seen / batch))
    changes: dict[str, object] = dict(
        norm=recipe.norm, activation=recipe.activation, width=recipe.width,
        width_multiplier=recipe.width_multiplier, weight_decay=recipe.weight_decay,
        epochs=math.ceil(recipe.steps / per_epoch), batch_size=batch, schedule="cosine", augment="dsa",
        dsa_strategy=recipe.dsa_strategy)
    changes.update(optimizer=recipe.optimizer, loss=recipe.loss, lr=recipe.lr,
                   warmup_epochs=math.ceil(recipe.warmup_steps / per_epoch),
                   final_lr_fraction=recipe.final_lr_fraction)
    return dataclasses.replace(base, **changes)


def own_recipe(base: TrainConfig, syn: SyntheticSet, dataset_name: str):
    """RCIG's evaluation recipe (:func:`rcig_eval_config`): Adam, MSE on the *raw* learned labels
    (``meta["raw_labels"]``), warm-up then cosine to 1%, its step budget and augmentation, trained
    on the set plus its horizontal flips (labels repeated) where the recipe has flip copies
    (``eval.py``: ``if use_flip: coreset_images = concatenate([images, flip(images)])``), so the
    planned steps are the steps taken (CIFAR-10 IPC 50: 2000, 500 of them warm-up)."""
    cfg = rcig_eval_config(base, num_images=len(syn), dataset_name=dataset_name)
    raw = syn.meta.get("raw_labels")
    labels = torch.tensor(raw, dtype=torch.float32) if raw is not None else syn.labels
    images = syn.images
    if rcig_eval_recipe(len(syn), dataset_name).flip_copies:
        images, labels = _with_flips(images, labels, True)
    return cfg, LabeledTensors(images, labels)
