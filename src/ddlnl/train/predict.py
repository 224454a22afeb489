"""A trained model's predictions and accuracy (eval mode, batched)."""

from __future__ import annotations

import torch
from torch import nn

from ..data import LabeledTensors


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
