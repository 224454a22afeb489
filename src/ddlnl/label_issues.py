"""Label issues found the distillation way: score every training label with models that were trained
only on a synthetic set, flag the likely wrong ones, suggest a label, and write cleaned labels.

Why this works without ever training on the noisy labels: distillation already averaged the noisy
labels into a small synthetic set (a DM class mean is dominated by the correctly labelled majority),
so a model trained on that set is a *teacher* whose predictions are independent of any single
sample's label flip. Two things are read from the teachers:

1. **their class probabilities** (ensemble mean over ``n_models`` seeds), an estimate of
   ``P(true | x)``; they feed the noise-rate estimate (:func:`ddlnl.estimate.estimate_noise`,
   anchor points);
2. **their feature space**: for every sample the ``k`` nearest other samples (cosine distance on
   the concatenated, PCA-reduced teacher features) vote with their *given* labels. Averaging many
   noisy labels of similar images denoises them for the same reason a DM class mean does, but
   locally. The vote estimates ``P(given | x)``, not ``P(true | x)``: it is turned into the latter
   by inverting the noise model (:func:`deconvolve_votes`) before it is combined with the
   teachers. A sample never votes for itself, so no sample is scored by its own label.

Scores, flags, suggestions (:class:`IssuesConfig`, derivation in :func:`find_issues`):

* prior ``pi = (1 - w) * deconvolved votes + w * calibrated teachers`` (``w = teacher_weight``;
  ``neighbours = 0`` uses the teachers alone); posterior ``P(true | x, given) ∝ pi_j T[j, given]``;
* quality ``posterior`` (default): ``P(true = given | x, given)``; or ``self-confidence``:
  ``pi[n, given_n]``;
* threshold ``estimated`` (default, chosen without any test data): in each given class ``k`` flag
  the ``m_k`` lowest-quality samples, ``m_k`` = the expected number of wrong labels in class ``k``
  under the fitted noise model, so the number of flags agrees with the noise-rate estimate. The
  per-class thresholds are the midpoints between the ``m_k``-th and ``(m_k + 1)``-th lowest
  qualities, and ``is_issue = quality < threshold[given]`` exactly. ``per-class``: cleanlab's
  confident-learning rule on ``pi`` (:func:`confident_learning_issues`). A number: one fixed
  threshold for all classes.
* suggested label: the argmax of the posterior.

Transition matrices follow ``T[i, j] = P(noisy = j | true = i)`` (rows sum to 1).

Defining steps (pinned by ``tests/test_label_issues.py``):

1. teachers trained only on the synthetic set; neighbours never vote for themselves;
2. the vote (evidence about the GIVEN label) is deconvolved through ``T`` before it is mixed with
   the teachers;
3. posterior ``P(true | x, given) ∝ pi_j T[j, given]``; suggested label = its argmax;
4. ``estimated`` threshold: ``m_k`` flags in given class ``k``, the expected number of wrong labels;
   ``per-class``: cleanlab's confident learning.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import LabeledTensors
from .errors import ConfigError, UserError
from .estimate import DEFAULT_ANCHOR_FRACTION, NoiseEstimate, estimate_noise, sharpen
from .synthetic import SyntheticSet, to_set_space
from .train import BaselineConfig, EvalResult, TrainConfig, build_model, run_baseline, train
from .utils import derive_seed

__all__ = [
    "IssuesConfig",
    "TeacherOutputs",
    "LabelIssues",
    "train_teachers",
    "teacher_outputs",
    "neighbour_votes",
    "deconvolve_votes",
    "confident_learning_issues",
    "find_issues",
    "score_labels",
    "detection_metrics",
    "cleaned_accuracy",
    "save_cleaned_labels",
    "train_on_cleaned",
]

SCORES = ("self-confidence", "posterior")
THRESHOLDS = ("estimated", "per-class")


@dataclass(frozen=True)
class IssuesConfig:
    """How labels are scored and flagged (``--set issues.<field>=...``)."""

    n_models: int = 3  # teachers trained on the synthetic set (different seeds); their mean is used
    neighbours: int = 50  # k of the neighbour vote in the teachers' feature space; 0 = teachers only
    teacher_weight: float = 0.2  # weight of the teachers' probabilities in the blend with the vote
    embed_dim: int = 128  # PCA dimensions of the concatenated teacher features (0 = no reduction)
    score: str = "posterior"  # posterior | self-confidence (see find_issues)
    threshold: str = "estimated"  # estimated | per-class (cleanlab's confident learning) | a number in (0, 1)
    anchor_fraction: float = DEFAULT_ANCHOR_FRACTION  # anchors per class / (N / K) for the noise estimate

    def check(self) -> None:
        if self.n_models < 1:
            raise ConfigError(f"issues.n_models must be >= 1, got {self.n_models}")
        if self.neighbours < 0 or self.embed_dim < 0:
            raise ConfigError("issues.neighbours and issues.embed_dim must be >= 0")
        if not 0.0 < self.anchor_fraction <= 1.0:
            raise ConfigError(f"issues.anchor_fraction must be in (0, 1], got {self.anchor_fraction}")
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise ConfigError(f"issues.teacher_weight must be in [0, 1], got {self.teacher_weight}")
        if self.score not in SCORES:
            raise ConfigError(f"issues.score {self.score!r}: use {' or '.join(SCORES)}")
        self.fixed_threshold()  # validates a numeric threshold

    def fixed_threshold(self) -> float | None:
        """The threshold as a number, or None for ``estimated`` / ``per-class``."""
        if self.threshold in THRESHOLDS:
            return None
        try:
            value = float(self.threshold)
        except ValueError:
            raise ConfigError(f"issues.threshold {self.threshold!r}: use estimated, per-class or a "
                              "number in (0, 1)") from None
        if not 0.0 < value < 1.0:
            raise ConfigError(f"issues.threshold must be in (0, 1), got {value}")
        return value


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


# ---------------------------------------------------------------------------------------------
# Neighbour vote
# ---------------------------------------------------------------------------------------------


def _pca(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Centred features projected on their top ``dim`` principal axes (exact eigendecomposition of
    the covariance, so no random projection and no hidden generator)."""
    x = features.double()
    x = x - x.mean(dim=0, keepdim=True)
    if dim <= 0 or dim >= x.shape[1]:
        return x.float()
    cov = x.T @ x / max(1, x.shape[0] - 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    return (x @ vecs[:, -dim:].flip(1)).float()


def neighbour_votes(features: torch.Tensor, labels: np.ndarray | torch.Tensor, num_classes: int,
                    k: int, *, embed_dim: int = 128, chunk: int = 1024) -> np.ndarray:
    """For each sample, the fraction of its ``k`` nearest other samples carrying each given label.

    Args:
        features: ``N x D`` float tensor (e.g. teachers' embeddings).
        labels: ``N`` given labels in ``[0, K)``.
        num_classes: ``K``.
        k: neighbours per sample (capped at ``N - 1``); a sample is never its own neighbour.
        embed_dim: PCA dimensions before the search (0 = none); cosine similarity after centring.
        chunk: rows of the similarity matrix held at once (memory ``chunk x N`` floats).

    Returns:
        ``N x K`` float64 array; rows sum to 1.
    """
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = features.shape[0]
    if n < 2:
        raise UserError("the neighbour vote needs at least 2 samples")
    k = min(int(k), n - 1)
    z = torch.nn.functional.normalize(_pca(features, embed_dim), dim=1)
    votes = torch.zeros(n, num_classes, dtype=torch.float64)
    for start in range(0, n, chunk):
        sim = z[start:start + chunk] @ z.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = -float("inf")  # never one's own neighbour
        idx = sim.topk(k, dim=1).indices
        votes[start:start + chunk].scatter_add_(1, y[idx], torch.ones(idx.shape, dtype=torch.float64))
    return (votes / k).numpy()


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
        from .utils import atomic_output

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

        from .utils import atomic_output

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
        teachers = teacher_outputs(models, to_set_space(syn, data.images), batch_size=train_cfg.eval_batch_size,
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
    from .noise import NoiseSpec, NoisyLabels, realized_noise_rate, realized_transition

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
                     protocol: BaselineConfig = BaselineConfig(), *, mode: str = "relabel", num_classes: int,
                     n_runs: int = 1, seed: int = 0, device: torch.device | str = "cpu",
                     show_progress: bool = False) -> EvalResult:
    """The downstream step: train the baseline recipe on the cleaned set; clean-test accuracy.

    Args:
        data: the training images (labels are replaced).
        issues: the scored labels.
        test: the clean test split.
        cfg, protocol: the training recipe and protocol of the full-noisy baseline
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
    return run_baseline(cleaned, test, cfg, protocol, num_classes=num_classes, n_runs=n_runs, seed=seed,
                        device=device, show_progress=show_progress)


# ---------------------------------------------------------------------------------------------
# The `ddlnl issues` / `ddlnl estimate` jobs (used by the CLI)
# ---------------------------------------------------------------------------------------------


def split_issues_overrides(overrides: list[str] | None) -> tuple[list[str], IssuesConfig]:
    """Take the ``issues.*`` keys out of ``--set`` overrides; the rest go to ``resolve_job``."""
    from .config import apply_overrides

    rest, mine = [], []
    for item in overrides or []:
        (mine if item.startswith("issues.") else rest).append(item)
    cfg = apply_overrides(IssuesConfig(), [m[len("issues."):] for m in mine])
    cfg.check()
    return rest, cfg


def issues_text(summary: dict[str, Any], out: Path) -> str:
    """What ``ddlnl issues`` prints."""
    lines = [f"{summary['flagged']} of {summary['samples']} labels flagged ({100 * summary['flagged_fraction']:.1f}%), "
             f"{summary['relabelled']} relabelled; estimated noise rate {summary['estimated_noise_rate']:.3f}"]
    known = summary.get("against_known_noise")
    if known:
        lines.append(f"against the injected noise (realized rate {known['realized_rate']:.3f}): AUROC {known['auroc']:.3f}, "
                     f"precision {known['precision']:.3f}, recall {known['recall']:.3f}; correct labels "
                     f"{100 * known['given_correct']:.1f}% -> {100 * known['relabelled_correct']:.1f}% after relabelling")
    down = summary.get("downstream")
    if down:
        accs = ", ".join(f"{100 * a:.2f}" for a in down["accs"])
        lines.append(f"downstream ({down['mode']}, {down['protocol']}): clean-test accuracy "
                     f"{100 * down['mean']:.2f} +- {100 * down['std']:.2f} (runs: {accs})")
    lines.append(f"written: {out / 'issues.csv'}, {out / 'pred_probs.npy'}, {out / 'cleaned_labels.npz'}, "
                 f"{out / 'issues.json'}")
    lines.append(f"reuse the cleaned labels: ddlnl baseline --noise file:{out / 'cleaned_labels.npz'} "
                 "(with the same --dataset/--train-subset/--seed)")
    return "\n".join(lines)


