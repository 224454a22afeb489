"""The comparison route: cleanlab's confident learning on cross-validated predicted probabilities.

This is what a practitioner does first: K-fold cross-validation of a model trained **on the noisy
labels** gives out-of-sample ``pred_probs`` (``N x K``, estimates of ``P(given label | x)``), then
``cleanlab.filter.find_label_issues(labels, pred_probs)`` flags issues and
``cleanlab.count.estimate_py_and_noise_matrices_from_probabilities`` estimates the noise. The
model here is the same ConvNet trained by ddlnl's one training loop, so the two routes differ only
in how the labels are scored.

cleanlab is an optional extra (``pip install 'ddlnl[compare]'``), imported only when this route
runs; the core never needs it.

Orientation: cleanlab's ``noise_matrix[i][j] = P(given = i | true = j)`` is the **transpose** of
ddlnl's ``T[i, j] = P(noisy = j | true = i)``; :func:`cleanlab_issues` converts with ``T =
noise_matrix.T`` explicitly.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from .data import LabeledTensors
from .errors import UserError
from .label_issues import LabelIssues
from .train import TrainConfig, build_model, predict_logits, train
from .utils import derive_seed, generator

__all__ = ["require_cleanlab", "stratified_folds", "cross_val_pred_probs", "cleanlab_issues", "cleanlab_route"]


def require_cleanlab() -> Any:
    """Import cleanlab, or raise a one-line :class:`UserError` saying how to install it."""
    try:
        import cleanlab
        import cleanlab.count  # noqa: F401  (submodules used below)
        import cleanlab.filter  # noqa: F401
        import cleanlab.rank  # noqa: F401
    except ImportError:
        raise UserError("the cleanlab comparison needs cleanlab: pip install 'ddlnl[compare]' "
                        "(or pip install cleanlab)") from None
    return cleanlab


def stratified_folds(labels: torch.Tensor | np.ndarray, folds: int, seed: int) -> np.ndarray:
    """``N`` int64 fold ids: each class's samples are shuffled and dealt round-robin into folds."""
    y = torch.as_tensor(np.asarray(labels))
    if folds < 2:
        raise UserError(f"cross-validation needs at least 2 folds, got {folds}")
    g = generator(derive_seed(seed, "folds"))
    fold = np.zeros(len(y), dtype=np.int64)
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)].numpy()
        fold[idx] = np.arange(idx.size) % folds
    return fold


def cross_val_pred_probs(data: LabeledTensors, cfg: TrainConfig, *, num_classes: int, folds: int = 2,
                         seed: int = 0, device: torch.device | str = "cpu", show_progress: bool = False,
                         vote_k: int = 0, embed_dim: int = 128) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Out-of-sample softmax probabilities by K-fold cross-validation on the given labels.

    Fold ``f``'s model (seed ``derive_seed(seed, "fold", f)``) is trained on the other folds with
    ``cfg`` and predicts fold ``f``; every sample is predicted by a model that never saw it.

    With ``vote_k > 0`` it also returns the neighbour vote offered to this route: within each
    held-out fold, every sample's ``vote_k`` nearest other samples of the same fold, in that fold
    model's feature space, vote with their given labels (:func:`ddlnl.label_issues.neighbour_votes`).
    Only held-out samples are embedded, so neither a sample's own label nor its neighbours' labels
    shaped the space it is compared in (the same guarantee the teachers' vote has).

    Returns:
        ``N x K`` float64 probabilities (rows sum to 1); with ``vote_k``, ``(probs, votes)`` with
        ``votes`` ``N x K`` float64 (rows sum to 1).
    """
    from .label_issues import neighbour_votes

    fold = stratified_folds(data.labels, folds, seed)
    channels, h, w = data.images.shape[1:]
    probs = np.zeros((len(data), num_classes))
    votes = np.zeros((len(data), num_classes))
    for f in range(folds):
        held = torch.from_numpy(np.flatnonzero(fold == f))
        rest = torch.from_numpy(np.flatnonzero(fold != f))
        s = derive_seed(seed, "fold", f)
        model = build_model(cfg, channels=channels, num_classes=num_classes, image_size=(h, w), seed=s, device=device)
        train(model, data.subset(rest), cfg, seed=s, show_progress=show_progress, desc=f"fold {f + 1}/{folds}")
        logits = predict_logits(model, data.images[held], cfg.eval_batch_size)
        probs[held.numpy()] = torch.softmax(logits.double(), dim=1).numpy()
        if vote_k > 0:
            with torch.no_grad():
                model.eval()
                feats = torch.cat([model.embed(data.images[held][i:i + cfg.eval_batch_size].to(next(model.parameters()).device)).float().cpu()
                                   for i in range(0, len(held), cfg.eval_batch_size)])
            votes[held.numpy()] = neighbour_votes(feats, data.labels[held].cpu().numpy(), num_classes, vote_k,
                                                  embed_dim=embed_dim)
    return (probs, votes) if vote_k > 0 else probs


def cleanlab_issues(labels: np.ndarray, pred_probs: np.ndarray, *,
                    filter_by: str = "prune_by_noise_rate", n_jobs: int | None = 1) -> LabelIssues:
    """cleanlab's issues and noise estimate, in ddlnl's conventions.

    Args:
        labels: ``N`` given labels.
        pred_probs: ``N x K`` out-of-sample probabilities (e.g. :func:`cross_val_pred_probs`).
        filter_by: cleanlab's ``find_label_issues`` rule (its default, ``prune_by_noise_rate``).
        n_jobs: cleanlab's worker processes (1: in this process, so timings compare at one
            thread and it runs inside a spawned worker; None: cleanlab's default, all cores).

    Returns:
        :class:`~ddlnl.label_issues.LabelIssues` with ``method="cleanlab"``: ``is_issue`` is
        cleanlab's mask (so ``thresholds`` is None), ``quality`` its self-confidence score,
        ``suggested`` the argmax of ``pred_probs``, ``transition`` = ``noise_matrix.T``
        (``T[i, j] = P(noisy = j | true = i)``) and ``noise_rate = sum_j py_j (1 - T[j, j])``.
    """
    require_cleanlab()
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(pred_probs, dtype=np.float64)
    mask = np.asarray(find_label_issues(y, probs, filter_by=filter_by, n_jobs=n_jobs), dtype=bool)
    quality = np.asarray(get_label_quality_scores(y, probs, method="self_confidence"), dtype=np.float64)
    py, noise_matrix, _, _ = estimate_py_and_noise_matrices_from_probabilities(y, probs)
    # cleanlab: noise_matrix[i][j] = P(given = i | true = j). ddlnl: T[j, i] = P(noisy = i | true = j).
    transition = np.asarray(noise_matrix, dtype=np.float64).T.copy()
    rate = float(np.sum(np.asarray(py) * (1.0 - np.diag(transition))))
    return LabelIssues(given=y, suggested=probs.argmax(axis=1).astype(np.int64), quality=quality, is_issue=mask,
                       thresholds=None, pred_probs=probs, noise_rate=rate, transition=transition,
                       method="cleanlab", meta={"filter_by": filter_by})


def cleanlab_route(data: LabeledTensors, cfg: TrainConfig, *, num_classes: int, folds: int = 2, seed: int = 0,
                   device: torch.device | str = "cpu", show_progress: bool = False) -> LabelIssues:
    """Cross-validated probabilities with ddlnl's loop, then :func:`cleanlab_issues`; timed.

    ``meta`` records ``folds``, ``train_config``, ``cv_seconds`` and ``seconds`` (the whole route).
    """
    require_cleanlab()  # fail before minutes of training, not after
    t0 = time.perf_counter()
    probs = cross_val_pred_probs(data, cfg, num_classes=num_classes, folds=folds, seed=seed, device=device,
                                 show_progress=show_progress)
    cv_seconds = time.perf_counter() - t0
    issues = cleanlab_issues(data.labels.cpu().numpy(), probs)
    issues.meta.update({"folds": folds, "train_config": asdict(cfg), "cv_seconds": cv_seconds,
                        "seconds": time.perf_counter() - t0})
    return issues
