"""DATM's initialisation (``pix_init: samples_predicted_correctly`` and the expert-logit soft
labels), as read from NUS-HPC-AI-Lab/DATM ``distill/DATM_tesla.py``; see :mod:`ddlnl.methods.datm`,
"Initialisation" and "Label initialisation epoch", for what the study runs."""

from __future__ import annotations

from typing import Protocol

import torch

from ..data import LabeledTensors
from ..experts import ParamLayout, Trajectories, functional_forward
from .common import check_ipc, class_indices


class Student(Protocol):
    """What the initialisation needs of DATM's student (:class:`ddlnl.methods.datm.Student`): the
    network a flat parameter vector is run through."""

    model: torch.nn.Module
    layout: ParamLayout


@torch.no_grad()
def _expert_logits(student: Student, theta: torch.Tensor, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    outs = [functional_forward(student.model, student.layout, theta, images[i:i + batch])
            for i in range(0, images.shape[0], batch)]
    return torch.cat(outs) if outs else torch.empty(0)


def select_correct(train: LabeledTensors, ipc: int, experts: Trajectories, student: Student, *,
                   num_classes: int, label_epoch: int, g: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, int]:
    """DATM ``samples_predicted_correctly``: ``ipc`` images per class that an expert classifies as
    their (noisy) label.

    For each class, the class's images in a random order are scanned by expert 0 at
    ``label_epoch``, then by expert 1, ... until ``ipc`` are found. If every expert leaves the
    class short (the reference would loop forever), the rest is filled with the class's next
    unselected images in that order.

    Returns:
        ``(indices, filled)``: ``int64`` indices into ``train``, class-major (``num_classes * ipc``),
        and how many slots had to be filled with images no expert predicted correctly.
    """
    indices = class_indices(train.labels, num_classes)
    check_ipc(indices, ipc)
    thetas: dict[int, torch.Tensor] = {}
    picks, filled = [], 0
    for c in range(num_classes):
        order = indices[c][torch.randperm(indices[c].numel(), generator=g)]
        chosen: list[int] = []
        for e in range(experts.num_experts):
            if e not in thetas:
                thetas[e] = experts.params(e, label_epoch, device=device)
            taken = set(chosen)
            for lo in range(0, order.numel(), 256):
                chunk = [int(i) for i in order[lo:lo + 256] if int(i) not in taken]
                if not chunk:
                    continue
                pred = _expert_logits(student, thetas[e], train.images[chunk].to(device)).argmax(1).cpu()
                for i, p in zip(chunk, pred.tolist()):
                    if p == c and len(chosen) < ipc:
                        chosen.append(i)
                if len(chosen) == ipc:
                    break
            if len(chosen) == ipc:
                break
        if len(chosen) < ipc:
            taken = set(chosen)
            rest = [int(i) for i in order if int(i) not in taken][:ipc - len(chosen)]
            filled += len(rest)
            chosen += rest
        picks.append(torch.tensor(chosen, dtype=torch.int64))
    return torch.cat(picks), filled


def initial_label_logits(images: torch.Tensor, slot_classes: torch.Tensor, experts: Trajectories,
                         student: Student, *, label_epoch: int, device: torch.device,
                         only_first: bool = False) -> tuple[torch.Tensor, int]:
    """DATM's label initialisation: for every synthetic image, the mean of the logits of the
    experts (at ``label_epoch``) that predict its slot class.

    With ``only_first`` (DATM's ``pix_init: real``) the logits of expert 0 alone. An image that
    no expert predicts correctly (possible only for filled slots) gets the mean over all experts
    (the reference would divide by zero).

    Returns:
        ``(logits S x K float32, n_fallback)``.
    """
    if only_first:
        return _expert_logits(student, experts.params(0, label_epoch, device=device), images), 0
    total = None
    count = torch.zeros(images.shape[0], device=device)
    mean_all = None
    target = slot_classes.to(device)
    for e in range(experts.num_experts):
        logits = _expert_logits(student, experts.params(e, label_epoch, device=device), images)
        ok = (logits.argmax(1) == target).float()
        total = logits * ok[:, None] if total is None else total + logits * ok[:, None]
        mean_all = logits if mean_all is None else mean_all + logits
        count += ok
    mean_all = mean_all / experts.num_experts
    none = count == 0
    out = torch.where(none[:, None], mean_all, total / count.clamp_min(1)[:, None])
    return out, int(none.sum())
