"""Teachers: models trained only on the synthetic set, and their calibrated outputs (and features)
on the real training images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..synthetic import SyntheticSet
from ..train import TrainConfig, build_model, train
from ..utils import derive_seed


# ---------------------------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------------------------


@dataclass
class TeacherOutputs:
    """What the teachers say about a set of images.

    Attributes:
        probs: ``N x K`` float64, mean over teachers of their softmax probabilities.
        features: ``N x D`` float32 tensor, the teachers' embeddings concatenated (None if not kept).
        seeds: the teachers' seeds.
        seconds: wall time of training plus inference.
    """

    probs: np.ndarray
    features: torch.Tensor | None
    seeds: list[int] = field(default_factory=list)
    seconds: float = 0.0


def teacher_seeds(seed: int, n_models: int) -> list[int]:
    """The seeds of :func:`train_teachers`' models (weights, batch order, augmentation)."""
    return [derive_seed(seed, "teacher", i) for i in range(n_models)]


def train_teachers(syn: SyntheticSet, cfg: TrainConfig, n_models: int, *, seed: int,
                   device: torch.device | str = "cpu", show_progress: bool = False) -> list[nn.Module]:
    """``n_models`` fresh models trained on the synthetic set only (its learned lr when it has one).

    Model ``i`` uses seed ``derive_seed(seed, "teacher", i)`` for its weights, batch order and
    augmentation.
    """
    data = syn.as_labeled()
    channels, h, w = data.images.shape[1:]
    lr = syn.lr if (syn.lr is not None and cfg.use_learned_lr) else None
    models = []
    for i, s in enumerate(teacher_seeds(seed, n_models)):
        model = build_model(cfg, channels=channels, num_classes=syn.num_classes, image_size=(h, w),
                            seed=s, device=device)
        train(model, data, cfg, seed=s, lr=lr, show_progress=show_progress,
              desc=f"teacher {i + 1}/{n_models}")
        models.append(model)
    return models


@torch.no_grad()
def teacher_outputs(models: list[nn.Module], images: torch.Tensor, *, batch_size: int = 1024,
                    keep_features: bool = True) -> TeacherOutputs:
    """Ensemble-mean probabilities and concatenated features of ``images`` (``N x C x H x W``).

    Features come from the model's ``embed`` (the ConvNet's flattened penultimate layer); a model
    without one contributes its logits instead.
    """
    probs = None
    feats = []
    for model in models:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        p_parts, f_parts = [], []
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(device)
            emb = model.embed(x) if hasattr(model, "embed") else None
            logits = model.classifier(emb) if emb is not None and hasattr(model, "classifier") else model(x)
            p_parts.append(torch.softmax(logits.float(), dim=1).double().cpu())
            if keep_features:
                f_parts.append((emb if emb is not None else logits).float().cpu())
        model.train(was_training)
        p = torch.cat(p_parts).numpy()
        probs = p if probs is None else probs + p
        if keep_features:
            feats.append(torch.cat(f_parts))
    if probs is None:
        raise UserError("no teacher models to ask")
    return TeacherOutputs(probs=probs / len(models), features=torch.cat(feats, dim=1) if keep_features else None)
