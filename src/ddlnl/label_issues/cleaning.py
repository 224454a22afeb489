"""What follows the flags: detection metrics against known noise, the cleaned-label file, and a
model trained on the cleaned labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import LabeledTensors
from ..errors import UserError
from ..train import BaselineConfig, EvalResult, TrainConfig, run_baseline

from .finder import LabelIssues


# ---------------------------------------------------------------------------------------------
# Measuring, saving, using
# ---------------------------------------------------------------------------------------------


def detection_metrics(issues: LabelIssues, truly_wrong: np.ndarray | torch.Tensor) -> dict[str, float]:
    """How well the flags and scores find the truly wrong labels (known when noise was injected).

    Args:
        issues: the scored labels.
        truly_wrong: ``N`` bool, True where the given label differs from the true one.

    Returns:
        ``auroc`` (of ``1 - quality`` as a detector of wrong labels; threshold-free),
        ``precision``, ``recall`` and ``f1`` of ``is_issue``, ``flagged_fraction``, the
        ``realized_rate`` and the ``estimated_rate``.
    """
    from sklearn.metrics import roc_auc_score

    wrong = np.asarray(truly_wrong, dtype=bool)
    flagged = np.asarray(issues.is_issue, dtype=bool)
    tp = int((wrong & flagged).sum())
    precision = tp / flagged.sum() if flagged.any() else float("nan")
    recall = tp / wrong.sum() if wrong.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    auroc = float(roc_auc_score(wrong, -issues.quality)) if 0 < wrong.sum() < len(wrong) else float("nan")
    return {"auroc": auroc, "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "flagged_fraction": float(flagged.mean()), "realized_rate": float(wrong.mean()),
            "estimated_rate": float(issues.noise_rate)}


def cleaned_accuracy(issues: LabelIssues, true_labels: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Fraction of correct labels before and after cleaning (relabelled), and after filtering."""
    true = np.asarray(true_labels, dtype=np.int64)
    cleaned = issues.cleaned_labels()
    kept = ~issues.is_issue
    return {"given_correct": float((issues.given == true).mean()),
            "relabelled_correct": float((cleaned == true).mean()),
            "filtered_correct": float((issues.given[kept] == true[kept]).mean()) if kept.any() else float("nan"),
            "filtered_kept": float(kept.mean())}


def save_cleaned_labels(issues: LabelIssues, path: str | Path, *, reference_labels: np.ndarray | torch.Tensor,
                        dataset: str, seed: int) -> Path:
    """Write the cleaned labels as a label file that ``--noise file:PATH`` accepts.

    The format is :meth:`ddlnl.noise.NoisyLabels.save` (``noisy`` = the cleaned labels, ``clean`` =
    the dataset's own training labels, a summary naming the dataset and the training-set size), so
    ``ddlnl noise/run/baseline --noise file:PATH`` refuse it for another dataset, split or length.

    Args:
        issues: the scored labels.
        path: the ``.npz`` to write (atomically).
        reference_labels: the dataset's stored training labels, in the same order (what the loader
            calls clean; with injected noise, the pre-noise labels).
        dataset: the dataset's registry name.
        seed: recorded in the file.
    """
    from ..noise import NoiseSpec, NoisyLabels, realized_noise_rate, realized_transition

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise UserError(f"cleaned labels are written as .npz, got {path}")
    reference = torch.as_tensor(np.asarray(reference_labels), dtype=torch.int64)
    cleaned = torch.from_numpy(issues.cleaned_labels())
    if reference.shape != cleaned.shape:
        raise UserError(f"{len(cleaned)} scored labels but {len(reference)} reference labels")
    k = issues.transition.shape[0]
    labels = NoisyLabels(noisy=cleaned, clean=reference, spec=NoiseSpec("file", path=str(path)), seed=int(seed),
                         transition_true=None, realized_rate=realized_noise_rate(reference, cleaned),
                         realized_T=realized_transition(reference, cleaned, k), dataset=dataset)
    return labels.save(path)


def train_on_cleaned(data: LabeledTensors, issues: LabelIssues, test: LabeledTensors, cfg: TrainConfig,
                     bcfg: BaselineConfig = BaselineConfig(), *, mode: str = "relabel", num_classes: int,
                     n_runs: int = 1, seed: int = 0, device: torch.device | str = "cpu",
                     show_progress: bool = False) -> EvalResult:
    """The downstream step: train the baseline recipe on the cleaned set; clean-test accuracy.

    Args:
        data: the training images (labels are replaced).
        issues: the scored labels.
        test: the clean test split.
        cfg, bcfg: the training recipe and protocol (stopping rule, validation split) of the full-noisy baseline
            (:func:`ddlnl.train.run_baseline`), so the result compares with it directly.
        mode: ``relabel`` (flagged samples take their suggested label) or ``filter`` (flagged
            samples are dropped).
    """
    if mode == "relabel":
        cleaned = data.with_labels(torch.from_numpy(issues.cleaned_labels()))
    elif mode == "filter":
        keep = torch.from_numpy(np.flatnonzero(~issues.is_issue))
        if keep.numel() == 0:
            raise UserError("every sample was flagged: nothing left to train on (use relabel)")
        cleaned = data.with_labels(torch.from_numpy(issues.given)).subset(keep)
    else:
        raise UserError(f"cleaning mode {mode!r}: use relabel or filter")
    return run_baseline(cleaned, test, cfg, bcfg, num_classes=num_classes, n_runs=n_runs, seed=seed,
                        device=device, show_progress=show_progress)
