"""Per-sample label quality, the issue flag and the suggested label (:class:`LabelIssues`,
:func:`find_issues`, :func:`score_labels`)."""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import LabeledTensors
from ..errors import UserError
from ..estimate import NoiseEstimate, estimate_noise, sharpen
from ..synthetic import SyntheticSet, to_set_space
from ..train import TrainConfig

from .config import IssuesConfig
from . import teachers as _teachers  # teacher_outputs looked up at call time (tests spy on it)
from .teachers import TeacherOutputs, teacher_seeds, train_teachers
from .votes import neighbour_votes


# ---------------------------------------------------------------------------------------------
# Scores, thresholds, flags
# ---------------------------------------------------------------------------------------------


@dataclass
class LabelIssues:
    """Per-sample label quality, flags and suggestions, with the noise estimate behind them.

    Attributes:
        given: ``N`` int64, the labels that were scored.
        suggested: ``N`` int64, the most likely label.
        quality: ``N`` float64 in [0, 1]; low = likely wrong.
        is_issue: ``N`` bool. For ddlnl's route with a count or fixed threshold exactly
            ``quality < thresholds[given]``; with ``per-class``, cleanlab's confident-learning rule.
        thresholds: ``K`` float64 per class, or None where flags come from elsewhere
            (cleanlab's own rule).
        pred_probs: ``N x K`` float64, out-of-sample estimates of ``P(true class | x)`` (ddlnl:
            the prior of :func:`find_issues`; cleanlab: its cross-validated probabilities), rows
            in the order of the samples; written as ``pred_probs.npy`` for cleanlab / Datalab.
        noise_rate: estimated fraction of wrong labels.
        transition: ``K x K`` estimate, ``T[i, j] = P(noisy = j | true = i)``.
        method: short name of the route (e.g. ``"ddlnl"``, ``"cleanlab"``).
        meta: JSON-able facts (configuration, timings, sources).
        estimate: the full noise fit where there is one.
        posterior: ``N x K`` float64, ``P(true | x, given)`` where the route derives one.
    """

    given: np.ndarray
    suggested: np.ndarray
    quality: np.ndarray
    is_issue: np.ndarray
    thresholds: np.ndarray | None
    pred_probs: np.ndarray
    noise_rate: float
    transition: np.ndarray
    method: str = "ddlnl"
    meta: dict[str, Any] = field(default_factory=dict)
    estimate: NoiseEstimate | None = None
    posterior: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.given.shape[0])

    def cleaned_labels(self) -> np.ndarray:
        """The given labels with every flagged one replaced by its suggested label (``int64 N``)."""
        return np.where(self.is_issue, self.suggested, self.given).astype(np.int64)

    def to_csv(self, path: str | Path) -> Path:
        """One row per sample: ``index, given_label, suggested_label, quality, is_issue`` (0/1)."""
        from ..utils import atomic_output

        path = Path(path)
        with atomic_output(path) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["index", "given_label", "suggested_label", "quality", "is_issue"])
                for i in range(len(self)):
                    writer.writerow([i, int(self.given[i]), int(self.suggested[i]),
                                     repr(float(self.quality[i])), int(bool(self.is_issue[i]))])
        return path

    def save_pred_probs(self, path: str | Path) -> Path:
        """Write ``pred_probs`` as a ``.npy`` (``N x K`` float64, row ``n`` = training sample ``n``)
        for cleanlab / Datalab: ``cleanlab.filter.find_label_issues(labels, np.load(path))`` or
        ``Datalab.find_issues(pred_probs=...)``. Atomic."""
        import io

        from ..utils import atomic_output

        path = Path(path)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.pred_probs, dtype=np.float64), allow_pickle=False)
        with atomic_output(path) as tmp:
            tmp.write_bytes(buf.getvalue())
        return path

    def summary(self) -> dict[str, Any]:
        """JSON-able counts and estimates (no per-sample arrays)."""
        out = {"method": self.method, "samples": len(self), "flagged": int(self.is_issue.sum()),
               "flagged_fraction": float(self.is_issue.mean()) if len(self) else 0.0,
               "relabelled": int((self.cleaned_labels() != self.given).sum()),
               "estimated_noise_rate": self.noise_rate,
               "estimated_transition": self.transition.tolist(),
               "thresholds": None if self.thresholds is None else self.thresholds.tolist(),
               "convention": "T[i, j] = P(noisy = j | true = i)", **self.meta}
        if self.estimate is not None:
            out["estimate"] = self.estimate.to_dict()
        return out


def _count_thresholds(quality: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                      num_classes: int) -> np.ndarray:
    """Per-class thresholds that flag the ``counts[k]`` lowest qualities of each given class ``k``."""
    thresholds = np.zeros(num_classes)
    for c in range(num_classes):
        q = np.sort(quality[labels == c])
        m = int(min(max(round(float(counts[c])), 0), q.size))
        if q.size == 0:
            thresholds[c] = 0.0
        elif m == 0:
            thresholds[c] = q[0]  # strict "<": nothing in this class is flagged
        elif m == q.size:
            thresholds[c] = np.nextafter(q[-1], np.inf)
        else:
            thresholds[c] = 0.5 * (q[m - 1] + q[m]) if q[m] > q[m - 1] else q[m]
    return thresholds


def deconvolve_votes(votes: np.ndarray, transition: np.ndarray, *, max_iter: int = 300,
                     tol: float = 1e-6) -> np.ndarray:
    """The true-class distribution of each sample's neighbourhood, from the vote of its given labels.

    The vote ``v_n`` estimates ``P(given | x_n)``; under class-conditional noise
    ``P(given = i | x) = sum_j P(true = j | x) T[j, i]``, i.e. ``v_n ≈ T^T r_n`` with ``r_n`` the
    true-class distribution near ``x_n``. ``r_n`` is the maximum-likelihood solution on the simplex
    of ``max sum_i v_n[i] log (T^T r)_i`` (EM for mixture weights with the rows of ``T`` as fixed
    components: ``r_j <- r_j sum_i v_i T[j, i] / (T^T r)_i``), so a singular ``T`` still gives a
    valid distribution. With an exact vote (``v = T[c]``) and exact ``T`` it returns ``e_c``.

    Args:
        votes: ``N x K`` rows summing to 1 (:func:`neighbour_votes`).
        transition: ``K x K``, ``T[i, j] = P(noisy = j | true = i)``.

    Returns:
        ``N x K`` float64, rows sum to 1: estimates of ``P(true | x)``.
    """
    v = np.asarray(votes, dtype=np.float64)
    t = np.asarray(transition, dtype=np.float64)
    r = np.full_like(v, 1.0 / v.shape[1])
    for _ in range(max_iter):
        model = np.maximum(r @ t, 1e-300)  # N x K: (T^T r_n)_i
        new = r * ((v / model) @ t.T)
        new /= np.maximum(new.sum(axis=1, keepdims=True), 1e-300)
        if np.abs(new - r).max() < tol:
            return new
        r = new
    return r


def confident_learning_issues(pred_probs: np.ndarray, labels: np.ndarray,
                              num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's per-class rule: the off-diagonal samples of the confident joint.

    Confident thresholds ``t_j = mean_{n: y_n = j} pred_probs[n, j]`` (the mean self-confidence of
    the samples labelled ``j``; Northcutt et al. 2021, eq. 2). A sample counts as confidently of
    class ``j`` when ``pred_probs[n, j] >= t_j`` (one such class: that one; several: the row's
    argmax); it is an issue when that class differs from its given label. A sample confident in no
    class is not flagged. This is ``cleanlab.filter.find_label_issues(labels, pred_probs,
    filter_by="confident_learning")`` (the same ``1e-6`` tolerance; a class nobody carries gets a
    threshold no probability reaches).

    Returns:
        ``(is_issue N bool, thresholds K float64)``.
    """
    p = np.asarray(pred_probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    thresholds = np.array([p[y == j, j].mean() if np.any(y == j) else 2.0 for j in range(num_classes)])
    confident = p >= thresholds - 1e-6
    count = confident.sum(axis=1)
    guess = np.where(count > 1, p.argmax(axis=1), confident.argmax(axis=1))
    return (count > 0) & (guess != y), thresholds


def find_issues(teacher_probs: np.ndarray, labels: np.ndarray, num_classes: int,
                cfg: IssuesConfig = IssuesConfig(), *, votes: np.ndarray | None = None,
                estimate: NoiseEstimate | None = None) -> LabelIssues:
    """Score, flag and relabel given the teachers' probabilities (and optionally neighbour votes).

    The derivation (class-conditional noise ``T[i, j] = P(noisy = j | true = i)``; ``y_n`` the
    given label; neither the teachers nor ``x_n``'s vote have seen ``y_n``):

    * the teachers estimate ``P(true | x_n)`` directly; calibrated by the temperature the noise
      fit found (:func:`ddlnl.estimate.estimate_noise`), ``p_n``;
    * the vote estimates ``P(given | x_n) = T^T P(true | x_n)``, evidence about the *given* label,
      so it is first turned into an estimate of ``P(true | x_n)``, ``r_n``, by inverting the noise
      (:func:`deconvolve_votes`); using it as a prior over the true class as it stands would count
      the noise twice;
    * the prior over the true class is ``pi_n = (1 - w) r_n + w p_n`` (``w = teacher_weight``; a
      mixture of the two estimates);
    * Bayes with the sample's own label: ``P(true = j | x_n, y_n) = pi_n[j] T[j, y_n] / sum_k
      pi_n[k] T[k, y_n]``, valid because ``y_n`` is independent of ``pi_n`` given the true class.

    The suggested label is the argmax of that posterior; the quality is ``posterior[n, y_n]``
    (``score="posterior"``, the probability that the given label is right) or ``pi_n[y_n]``
    (``score="self-confidence"``). ``pred_probs`` of the result is ``pi`` (an out-of-sample
    estimate of ``P(true | x)``, what cleanlab's ``pred_probs`` are).

    Args:
        teacher_probs: ``N x K`` probabilities from models that never saw ``labels``.
        labels: ``N`` given labels.
        num_classes: ``K``.
        cfg: score, threshold and blend weight (``neighbours`` only matters through ``votes``).
        votes: ``N x K`` neighbour votes (:func:`neighbour_votes`), or None for teachers only.
        estimate: a noise fit to reuse; default: :func:`ddlnl.estimate.estimate_noise` on
            ``teacher_probs`` with ``cfg.anchor_fraction``.

    Returns:
        :class:`LabelIssues`; with ``threshold`` ``estimated`` or a number, ``is_issue ==
        (quality < thresholds[given])``; with ``per-class``, cleanlab's confident-learning flags on
        ``pred_probs`` (:func:`confident_learning_issues`).
    """
    cfg.check()
    y = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(teacher_probs, dtype=np.float64)
    est = estimate if estimate is not None else estimate_noise(probs, y, num_classes,
                                                               anchor_fraction=cfg.anchor_fraction)
    calibrated = sharpen(probs, est.temperature)
    if votes is not None:
        from_votes = deconvolve_votes(votes, est.transition)
        prior = (1.0 - cfg.teacher_weight) * from_votes + cfg.teacher_weight * calibrated
    else:
        prior = calibrated
    joint = prior * est.transition[:, y].T
    total = joint.sum(axis=1, keepdims=True)
    posterior = np.where(total > 0, joint / np.maximum(total, 1e-300), prior)
    rows = np.arange(len(y))
    quality = (posterior if cfg.score == "posterior" else prior)[rows, y]
    fixed = cfg.fixed_threshold()
    if cfg.threshold == "per-class":
        is_issue, thresholds = confident_learning_issues(prior, y, num_classes)
    else:
        if fixed is not None:
            thresholds = np.full(num_classes, fixed)
        else:
            thresholds = _count_thresholds(quality, y, est.expected_wrong_per_class(y), num_classes)
        is_issue = quality < thresholds[y]
    return LabelIssues(given=y, suggested=posterior.argmax(axis=1).astype(np.int64), quality=quality,
                       is_issue=is_issue, thresholds=thresholds, pred_probs=prior,
                       noise_rate=est.noise_rate, transition=est.transition, method="ddlnl",
                       meta={"issues_config": asdict(cfg)}, estimate=est, posterior=posterior)


def score_labels(syn: SyntheticSet, data: LabeledTensors, cfg: IssuesConfig, train_cfg: TrainConfig, *,
                 seed: int, device: torch.device | str = "cpu", show_progress: bool = False,
                 teachers: TeacherOutputs | None = None) -> LabelIssues:
    """ddlnl's route end to end: train teachers on ``syn``, score ``data``'s (given) labels.

    Args:
        syn: the synthetic set; its images must have ``data``'s shape.
        data: images and the given (hard) labels to score.
        cfg: scoring settings.
        train_cfg: how each teacher is trained.
        seed: teachers' seeds derive from it.
        teachers: reuse already computed teacher outputs (then ``syn`` only names the classes).

    Returns:
        :class:`LabelIssues`; ``meta`` holds ``teacher_seconds``, ``score_seconds``, ``seconds``.
    """
    cfg.check()
    if not data.hard:
        raise UserError("label issues need hard labels (one class index per sample)")
    if tuple(syn.images.shape[1:]) != tuple(data.images.shape[1:]):
        raise UserError(f"the synthetic set holds {tuple(syn.images.shape[1:])} images but the data "
                        f"{tuple(data.images.shape[1:])}: use a set distilled from this dataset")
    t0 = time.perf_counter()
    if teachers is None:
        models = train_teachers(syn, train_cfg, cfg.n_models, seed=seed, device=device,
                                show_progress=show_progress)
        teachers = _teachers.teacher_outputs(models, to_set_space(syn, data.images), batch_size=train_cfg.eval_batch_size,
                                   keep_features=cfg.neighbours > 0)
        teachers.seeds = teacher_seeds(seed, cfg.n_models)
        teachers.seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    k = syn.num_classes
    labels = data.labels.cpu().numpy()
    votes = None
    if cfg.neighbours > 0:
        if teachers.features is None:
            raise UserError("neighbour votes need the teachers' features (keep_features=True)")
        votes = neighbour_votes(teachers.features, labels, k, cfg.neighbours, embed_dim=cfg.embed_dim)
    issues = find_issues(teachers.probs, labels, k, cfg, votes=votes)
    issues.meta.update({"teacher_seconds": teachers.seconds, "score_seconds": time.perf_counter() - t1,
                        "seconds": teachers.seconds + time.perf_counter() - t1,
                        "teacher_seeds": teachers.seeds, "train_config": asdict(train_cfg),
                        "synthetic_size": len(syn)})
    return issues
