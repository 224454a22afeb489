"""The data owner's route: a distilled set as the source of clean patterns, the full noisy set for
capacity.

A user who holds the noisy data (not only its distilled set) can do better than train on the
synthetic set alone (the privacy route) or on the noisy labels alone. :func:`denoise` combines both:

1. **Teacher from the synthetic set.** Models trained only on the distilled set never saw any
   single sample's label, so their opinion of it is independent of its flip; their probabilities
   and the neighbour vote in their feature space score every given label
   (:func:`ddlnl.label_issues.score_labels`). This is the clean-teacher setting of Li et al.,
   "Learning from Noisy Labels with Distillation" (ICCV 2017), with the small clean set replaced by
   the distilled one.
2. **Selection** (small-loss / agreement selection, as in Co-teaching, Han et al. 2018, and the
   clean/noisy division of DivideMix, Li, Socher & Hoi 2020): a sample whose given label the
   teacher does not flag is kept with its given label ("agree").
3. **Semi-supervised use of the rest**: a flagged sample whose teacher confidence
   ``max_k pred_probs[n, k]`` reaches ``threshold`` is kept with the teacher's label as a
   pseudo-label (FixMatch's confidence-thresholded pseudo-labels, Sohn et al. 2020); below it the
   sample gets weight 0 (treated as unlabelled and left out of the loss).
4. **Soft targets**: every kept sample's target is ``(1 - mix) * onehot(label) + mix * pred_probs``,
   the mixture of Reed et al.'s soft bootstrapping ("Training deep neural networks on noisy labels
   with bootstrapping", 2015) and Li et al.'s distillation target, with the teacher's (fixed)
   prediction in place of the network's own.
   With ``targets="posterior"`` the student instead learns every sample's posterior over its true
   label given the image *and* the given label, ``P(true = k | x, given) ∝ pi_k(x) T[k, given]``
   (the teachers' prior ``pi`` and the estimated transition matrix ``T`` of
   :func:`ddlnl.label_issues.score_labels`), nothing dropped: the E-step of Xiao et al., "Learning
   from Massive Noisy Labeled Data for Image Classification" (CVPR 2015), with the teachers in place of
   the network being trained. The given label keeps its weight where the noise model says it is
   likely right, whatever the teacher's confidence.
   With ``select="none"`` steps 2-3 are skipped: every sample keeps its given label (its target
   is ``(1 - mix) * onehot(given) + mix * pred_probs``, nothing dropped), so the teacher enters
   only through ``mix`` and the epoch choice of step 5. This is the route that uses the teacher
   only where it helps when its flags are less reliable than a noise-robust loss.
5. **Early stopping on a teacher-cleaned noisy validation split**: ``val_fraction`` of the training
   set (stratified by given label) is held out, its labels replaced by the teacher-cleaned ones
   (:meth:`~ddlnl.label_issues.LabelIssues.cleaned_labels`, the synthetic set's teachers in every
   round), and the epoch with the best accuracy on it is returned. The test set is never looked at.

With ``rounds = 2`` (or more) the trained student becomes the next round's teacher: its
predictions re-score every given label (same scoring, flags and neighbour vote, in its feature
space) and a fresh student trains on the new targets. The student never saw the given label of a
sample its teachers flagged (it learnt the teacher's label there), so its opinion of those labels
stays independent of their flips; this is the iterated relabelling of Tanaka et al., "Joint
Optimization Framework for Learning with Noisy Labels" (CVPR 2018) and of self-training
(Xie et al., "Self-training with Noisy Student", CVPR 2020), with the distilled set's teachers as
the first round.

The student trains in ddlnl's one loop (:func:`ddlnl.train.train`) through its ``loss_fn`` hook,
with the same model, schedule and budget as every baseline. Its loss (``loss``):

* ``ce``: weighted soft cross-entropy ``-sum_k t_k log p_k`` (:func:`weighted_soft_ce`);
* ``gce``: the generalized cross-entropy of Zhang & Sabuncu (NeurIPS 2018) on the soft target,
  ``sum_k t_k (1 - p_k^q) / q`` (:func:`weighted_soft_gce`): for a one-hot target it is their
  ``L_q``; as ``q -> 0`` it tends to ``ce`` (the same student), at the paper's ``q = 0.7`` it
  down-weights samples the network finds unlikely, which is what makes GCE robust;
* ``forward``: forward loss correction (Patrini et al., "Making Deep Neural Networks Robust to
  Label Noise: a Loss Correction Approach", CVPR 2017) with the teachers' *estimated* transition
  matrix ``T`` (``T[i, j] = P(noisy = j | true = i)``, :attr:`LabelIssues.transition`): the
  network's clean-label probabilities ``p`` are pushed through the noise, ``p @ T``, and compared
  with the given labels, ``-log (p @ T)_given`` (:func:`weighted_forward_ce`). It models the given
  labels, so it needs ``select="none"`` and ``mix = 0`` (targets = the given labels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import LabeledTensors
from .errors import ConfigError, UserError
from .label_issues import IssuesConfig, LabelIssues, score_labels, teacher_outputs, teacher_seeds, train_teachers
from .robust import GCE_Q
from .synthetic import SyntheticSet, to_set_space
from .train import TrainConfig, build_model, stratified_split, train
from .utils import derive_seed

__all__ = ["DenoiseConfig", "DenoiseTargets", "DenoiseResult", "denoise_targets", "posterior_targets",
           "weighted_soft_ce", "weighted_soft_gce", "weighted_forward_ce", "clean_accuracy_from_noisy_agreement",
           "score_with_teachers", "denoise", "split_denoise_overrides", "GROUPS"]

GROUPS = ("agree", "pseudo", "dropped")  # codes 0, 1, 2 of DenoiseTargets.group
TARGETS = ("mix", "posterior")  # DenoiseConfig.targets
LOSSES = ("ce", "gce", "forward")  # DenoiseConfig.loss
SELECTS = ("agree", "none")  # DenoiseConfig.select


@dataclass(frozen=True)
class DenoiseConfig:
    """The denoise route's settings (``--set denoise.<field>=...``).

    Defaults (GCE on every given label mixed 0.7/0.3 with the teacher's probabilities, no selection,
    the last epoch) were chosen on a development setting that is not a reported benchmark row, by the
    estimated clean accuracy on a noisy pool (``benchmarks/results/denoise_dev.md``): 75.7 there, level
    with GCE (75.7) and Co-teaching (75.9), above the earlier defaults (soft CE with agreement
    selection and a teacher-cleaned epoch choice, 71.8 with the same teachers).
    """

    mix: float = 0.3  # weight of the teacher's probabilities in each target (0 = hard labels)
    threshold: float = 0.5  # teacher confidence above which a flagged sample keeps the teacher's label
    val_fraction: float = 0.0  # share held out (labels teacher-cleaned) to choose the epoch; 0 = last epoch
    targets: str = "mix"  # mix: selection + pseudo-labels + soft mix (steps 2-4); posterior: P(true | x, given)
    rounds: int = 1  # >= 2: each trained student re-scores the labels as the next round's teacher
    loss: str = "gce"  # ce: soft cross-entropy; gce: generalized CE (q = gce_q); forward: Patrini's correction
    gce_q: float = GCE_Q  # GCE's q in (0, 1] (Zhang & Sabuncu's 0.7); q -> 0 is the ce loss
    select: str = "none"  # agree: steps 2-3 (keep agreed labels, pseudo-label / drop flags); none: keep every
    # label (targets=mix only: the posterior targets keep every sample anyway)

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"denoise.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.select not in SELECTS:
            raise ConfigError(f"denoise.select must be one of {', '.join(SELECTS)}, got {self.select!r}")
        if not 0.0 < self.gce_q <= 1.0:
            raise ConfigError(f"denoise.gce_q must be in (0, 1], got {self.gce_q}")
        if self.loss == "forward" and (self.select != "none" or self.mix != 0.0 or self.targets != "mix"):
            raise ConfigError("denoise.loss=forward models the given labels: it needs denoise.select=none, "
                              "denoise.mix=0 and denoise.targets=mix")
        if not isinstance(self.rounds, int) or isinstance(self.rounds, bool) or not 1 <= self.rounds <= 10:
            raise ConfigError(f"denoise.rounds must be an integer in 1..10, got {self.rounds!r}")
        if self.targets not in TARGETS:
            raise ConfigError(f"denoise.targets must be one of {', '.join(TARGETS)}, got {self.targets!r}")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"denoise.mix must be in [0, 1], got {self.mix}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"denoise.threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"denoise.val_fraction must be in [0, 0.5), got {self.val_fraction}")


@dataclass
class DenoiseTargets:
    """Per-sample training targets of the student.

    Attributes:
        targets: ``N x K`` float32, rows sum to 1 (zero-weight rows hold the teacher's probabilities).
        weights: ``N`` float32, 1 for kept samples, 0 for dropped ones.
        group: ``N`` int64, index into :data:`GROUPS` (agree / pseudo / dropped).
        labels: ``N`` int64, the hard label each target is built around (given or teacher's).
    """

    targets: torch.Tensor
    weights: torch.Tensor
    group: torch.Tensor
    labels: torch.Tensor

    def counts(self) -> dict[str, int]:
        return {name: int((self.group == i).sum()) for i, name in enumerate(GROUPS)}


def denoise_targets(pred_probs: np.ndarray, given: np.ndarray, is_issue: np.ndarray, *, mix: float,
                    threshold: float, select: str = "agree") -> DenoiseTargets:
    """Selection and soft targets from the teacher's view of each given label.

    Args:
        pred_probs: ``N x K`` teacher probabilities (rows sum to 1), from models that never saw ``given``.
        given: ``N`` int64 given (noisy) labels.
        is_issue: ``N`` bool, the teacher's flags.
        mix: weight of ``pred_probs`` in the target.
        threshold: a flagged sample with ``max_k pred_probs[n, k] >= threshold`` becomes a
            pseudo-labelled one (label ``argmax_k pred_probs[n, k]``), otherwise it is dropped.
        select: ``"agree"`` (the above) or ``"none"``: no selection, every sample keeps its given
            label (group ``agree``, weight 1) whatever the flags and ``threshold``.

    Returns:
        :class:`DenoiseTargets`.
    """
    p = torch.as_tensor(np.asarray(pred_probs), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(given), dtype=torch.int64)
    flagged = torch.as_tensor(np.asarray(is_issue), dtype=torch.bool)
    if select not in SELECTS:
        raise ConfigError(f"select must be one of {', '.join(SELECTS)}, got {select!r}")
    if select == "none":
        flagged = torch.zeros_like(flagged)
    conf, teacher_label = p.max(dim=1)
    pseudo = flagged & (conf >= threshold)
    dropped = flagged & ~pseudo
    labels = torch.where(pseudo, teacher_label, y)
    onehot = torch.nn.functional.one_hot(labels, p.shape[1]).double()
    targets = (1.0 - mix) * onehot + mix * p
    targets = targets / targets.sum(dim=1, keepdim=True)
    group = torch.zeros_like(y)
    group[pseudo] = 1
    group[dropped] = 2
    return DenoiseTargets(targets=targets.float(), weights=(~dropped).float(), group=group, labels=labels)


def posterior_targets(posterior: np.ndarray, given: np.ndarray) -> DenoiseTargets:
    """``targets="posterior"``: every sample kept, its target ``P(true | x, given)`` (rows of
    ``posterior``); group ``agree`` where the posterior's argmax is the given label, else ``pseudo``."""
    p = torch.as_tensor(np.asarray(posterior), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(given), dtype=torch.int64)
    p = p / p.sum(dim=1, keepdim=True)
    labels = p.argmax(dim=1)
    group = (labels != y).long()
    return DenoiseTargets(targets=p.float(), weights=torch.ones(len(y)), group=group, labels=labels)


def weighted_soft_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_n w_n CE(logits_n, targets_n) / sum_n w_n`` (0 when every weight is 0)."""
    ce = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    total = weights.sum()
    return (weights * ce).sum() / total.clamp_min(1e-12) if total > 0 else (ce * 0.0).sum()


def weighted_soft_gce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                      q: float = GCE_Q) -> torch.Tensor:
    """``sum_n w_n sum_k t_nk (1 - p_nk^q) / q / sum_n w_n``, ``p = softmax(logits)`` (GCE on soft targets).

    ``(1 - p^q) / q`` is computed as ``-expm1(q log p) / q``: in float32 the direct form loses every
    digit as ``q -> 0``, where the loss must become :func:`weighted_soft_ce`.
    """
    if not 0.0 < q <= 1.0:
        raise ConfigError(f"GCE q must be in (0, 1], got {q}")
    per = (targets * -torch.expm1(q * torch.log_softmax(logits, dim=1)) / q).sum(dim=1)
    total = weights.sum()
    return (weights * per).sum() / total.clamp_min(1e-12) if total > 0 else (per * 0.0).sum()


def weighted_forward_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                        transition: torch.Tensor) -> torch.Tensor:
    """Forward-corrected cross-entropy (Patrini et al. 2017): ``-sum_k t_nk log (p_n @ T)_k``, weighted.

    Args:
        logits: ``B x K``; ``p = softmax(logits)`` are the clean-label probabilities.
        targets: ``B x K`` distributions over the *given* (noisy) labels (one-hot for hard labels).
        weights: ``B``.
        transition: ``K x K``, ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1; ``T = I`` gives
            :func:`weighted_soft_ce`.
    """
    noisy_probs = torch.softmax(logits, dim=1) @ transition.to(logits.dtype)
    per = -(targets * torch.log(noisy_probs.clamp_min(1e-12))).sum(dim=1)
    total = weights.sum()
    return (weights * per).sum() / total.clamp_min(1e-12) if total > 0 else (per * 0.0).sum()


def clean_accuracy_from_noisy_agreement(agreement: float, rate: float, num_classes: int) -> float:
    """A model's clean accuracy from its agreement with *noisy* labels, under symmetric noise.

    With class-conditional symmetric noise (ddlnl's ``symmetric``: a label flips with probability
    ``r`` to one of the other ``K - 1`` classes, ``T[i, i] = 1 - r``, ``T[i, j] = r / (K - 1)``) drawn
    independently of the model, a prediction that is right (probability ``c``) matches the noisy
    label when the label was not flipped, and a wrong one when the label flipped to exactly that
    class::

        a = P(pred = noisy) = c (1 - r) + (1 - c) r / (K - 1)
        =>  c = (a - r / (K - 1)) / (1 - r - r / (K - 1))

    whichever wrong classes the model predicts. The map is increasing in ``a`` for
    ``r < (K - 1) / K``, so it ranks models as the raw agreement does; it makes the number readable
    as a clean accuracy. Use it only on labels the model never trained on.

    Args:
        agreement: fraction of samples whose prediction equals their noisy label.
        rate: the symmetric noise rate ``r`` of those labels, in ``[0, (K - 1) / K)``.
        num_classes: ``K >= 2``.
    """
    k = int(num_classes)
    if k < 2 or not 0.0 <= rate < (k - 1) / k:
        raise ConfigError(f"symmetric noise rate must be in [0, {(k - 1) / k:.3f}) for {k} classes, got {rate}")
    off = rate / (k - 1)
    return float((agreement - off) / (1.0 - rate - off))


@dataclass
class DenoiseResult:
    """What :func:`denoise` leaves.

    Attributes:
        model: the student (weights of the selected epoch).
        teachers: the models trained on the synthetic set only (the privacy route's models).
        issues: the teacher's scores of every given label.
        targets: the student's targets (training part only: ``train_index``).
        train_index, val_index: positions in the input of the student's training and validation samples.
        history: the student's curve (``cleaned_val_acc`` per epoch).
        seconds: ``teacher`` (teachers + scoring), ``student`` and ``total`` wall times.
    """

    model: nn.Module
    teachers: list[nn.Module]
    issues: LabelIssues
    targets: DenoiseTargets
    train_index: torch.Tensor
    val_index: torch.Tensor
    history: list[dict[str, float]]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        sel = [h for h in self.history if "cleaned_val_acc" in h]
        best = max(sel, key=lambda h: h["cleaned_val_acc"]) if sel else None
        return {"counts": self.targets.counts(), "estimated_noise_rate": self.issues.noise_rate,
                "flagged": int(self.issues.is_issue.sum()), "selected_epoch": best["epoch"] if best else None,
                "seconds": self.seconds}


def score_with_teachers(noisy: LabeledTensors, syn: SyntheticSet, teacher_cfg: TrainConfig,
                        issues_cfg: IssuesConfig = IssuesConfig(), *, seed: int, device: torch.device | str = "cpu",
                        show_progress: bool = False) -> tuple[list[nn.Module], LabelIssues]:
    """Step 1 of :func:`denoise`: teachers trained on ``syn`` only (seeds from
    ``derive_seed(seed, "denoise-teachers")``) and their scores of ``noisy``'s given labels."""
    t0 = time.perf_counter()
    teacher_seed = derive_seed(seed, "denoise-teachers")
    teachers = train_teachers(syn, teacher_cfg, issues_cfg.n_models, seed=teacher_seed, device=device,
                              show_progress=show_progress)
    outs = teacher_outputs(teachers, to_set_space(syn, noisy.images), batch_size=teacher_cfg.eval_batch_size,
                           keep_features=issues_cfg.neighbours > 0)
    outs.seeds = teacher_seeds(teacher_seed, issues_cfg.n_models)
    outs.seconds = time.perf_counter() - t0
    issues = score_labels(syn, noisy, issues_cfg, teacher_cfg, seed=teacher_seed, device=device, teachers=outs)
    return teachers, issues


def denoise(noisy: LabeledTensors, syn: SyntheticSet, cfg: DenoiseConfig, train_cfg: TrainConfig,
            teacher_cfg: TrainConfig, issues_cfg: IssuesConfig = IssuesConfig(), *, seed: int,
            device: torch.device | str = "cpu", show_progress: bool = False,
            scored: tuple[list[nn.Module], LabelIssues] | None = None) -> DenoiseResult:
    """Train a student on the full noisy set guided by teachers trained on ``syn`` (module docstring).

    Args:
        noisy: training images with their given (noisy, hard) labels, ``N x C x H x W`` / ``N``.
        syn: a synthetic set distilled from ``noisy`` (same image shape and classes).
        cfg: mixing weight, confidence threshold, validation share.
        train_cfg: the student's model and schedule (the same as the baselines').
        teacher_cfg: how each teacher is trained on ``syn``.
        issues_cfg: how labels are scored (teachers, neighbour vote, flags).
        seed: teachers, validation split and student derive their seeds from it.
        scored: ``(teachers, issues)`` from an earlier call with the same inputs, to train another
            student (other ``cfg``) without retraining the teachers.

    Returns:
        :class:`DenoiseResult`.
    """
    cfg.check()
    if not noisy.hard:
        raise UserError("denoise needs hard given labels (one class index per sample)")
    t0 = time.perf_counter()
    if scored is None:
        teachers, issues = score_with_teachers(noisy, syn, teacher_cfg, issues_cfg, seed=seed, device=device,
                                               show_progress=show_progress)
    else:
        teachers, issues = scored
    t_teacher = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = len(noisy)
    if cfg.val_fraction > 0:
        tr, va = stratified_split(noisy.labels.cpu(), cfg.val_fraction, derive_seed(seed, "denoise-val"))
    else:
        tr, va = torch.arange(n), torch.zeros(0, dtype=torch.int64)
    # Every round chooses its epoch on the same yardstick: the validation labels the synthetic set's
    # teachers cleaned (a later round's own scores would favour a student that agrees with its predecessor).
    val_labels = torch.from_numpy(issues.cleaned_labels()[va.numpy()])
    model: nn.Module | None = None
    for r in range(cfg.rounds):
        if model is not None:  # the previous student is this round's teacher
            outs = teacher_outputs([model], noisy.images, batch_size=teacher_cfg.eval_batch_size,
                                   keep_features=issues_cfg.neighbours > 0)
            issues = score_labels(syn, noisy, issues_cfg, teacher_cfg, seed=seed, device=device, teachers=outs)
        tg = _targets(cfg, issues, noisy.labels.cpu().numpy(), tr.numpy())
        loss_fn = _student_loss(cfg, issues)
        model, history = _train_student(noisy, tr, va, val_labels, tg, train_cfg, loss_fn, num_classes=syn.num_classes,
                                        seed=derive_seed(seed, "denoise-student", *([r] if r else [])),
                                        device=device, show_progress=show_progress)
    seconds = {"teacher": t_teacher, "student": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    return DenoiseResult(model=model, teachers=teachers, issues=issues, targets=tg, train_index=tr, val_index=va,
                         history=history, seconds=seconds)


def _targets(cfg: DenoiseConfig, issues: LabelIssues, given: np.ndarray, tr: np.ndarray) -> DenoiseTargets:
    if cfg.targets == "posterior":
        if issues.posterior is None:
            raise ConfigError("denoise.targets=posterior needs scores with a posterior (ddlnl's label issues); "
                              "use denoise.targets=mix")
        return posterior_targets(issues.posterior[tr], given[tr])
    return denoise_targets(issues.pred_probs[tr], given[tr], issues.is_issue[tr], mix=cfg.mix,
                           threshold=cfg.threshold, select=cfg.select)


def _student_loss(cfg: DenoiseConfig, issues: LabelIssues):
    """``(logits, targets, weights) -> loss`` for ``cfg.loss``."""
    if cfg.loss == "gce":
        return lambda logits, t, w: weighted_soft_gce(logits, t, w, cfg.gce_q)
    if cfg.loss == "forward":
        T = torch.as_tensor(np.asarray(issues.transition), dtype=torch.float32)
        return lambda logits, t, w: weighted_forward_ce(logits, t, w, T.to(logits.device))
    return weighted_soft_ce


def _train_student(noisy: LabeledTensors, tr: torch.Tensor, va: torch.Tensor, val_labels: torch.Tensor,
                   tg: DenoiseTargets, train_cfg: TrainConfig, loss_fn, *, num_classes: int, seed: int,
                   device: torch.device | str, show_progress: bool) -> tuple[nn.Module, list[dict[str, float]]]:
    """One student on ``tg`` (the training part ``tr``), the epoch chosen on ``va`` with ``val_labels``."""
    student_data = LabeledTensors(noisy.images[tr], tg.targets)
    weights = tg.weights.to(device)
    monitor, select = None, None
    if va.numel():
        monitor, select = {"cleaned_val": LabeledTensors(noisy.images[va], val_labels)}, "cleaned_val"
    c, h, w = noisy.images.shape[1:]
    model = build_model(train_cfg, channels=c, num_classes=num_classes, image_size=(h, w), seed=seed, device=device)
    res = train(model, student_data, train_cfg, seed=seed, monitor=monitor, record_every=1 if monitor else 0,
                select=select, show_progress=show_progress, desc="denoise student",
                loss_fn=lambda logits, target, idx, epoch: loss_fn(logits, target, weights[idx]))
    return model, res.history


# ---------------------------------------------------------------------------------------------
# The `ddlnl denoise` job (used by the CLI)
# ---------------------------------------------------------------------------------------------


def split_denoise_overrides(overrides: list[str] | None) -> tuple[list[str], DenoiseConfig]:
    """Take the ``denoise.*`` keys out of ``--set`` overrides; the rest go on (``issues.*``, jobs)."""
    from .config import apply_overrides

    rest, mine = [], []
    for item in overrides or []:
        (mine if item.startswith("denoise.") else rest).append(item)
    cfg = apply_overrides(DenoiseConfig(), [m[len("denoise."):] for m in mine])
    cfg.check()
    return rest, cfg


def denoise_text(summary: dict[str, Any], out: Path) -> str:
    """What ``ddlnl denoise`` prints."""
    c = summary["counts"]
    syn = summary["synthetic_only_accuracies"]
    lines = [f"teachers: estimated noise rate {summary['estimated_noise_rate']:.3f}; student targets: {c['agree']} "
             f"kept with their label, {c['pseudo']} pseudo-labelled, {c['dropped']} dropped"
             + (f" (kept labels correct: {100 * summary['kept_labels_correct']:.1f}%)" if "kept_labels_correct" in summary
                else ""),
             f"clean-test accuracy: denoise {100 * summary['accuracy']:.2f} ("
             + (f"epoch {summary['selected_epoch']} chosen on the teacher-cleaned validation split"
                if summary.get("selected_epoch") is not None else "last epoch")
             + f"); synthetic set only {100 * float(np.mean(syn)):.2f} "
             f"(mean of {len(syn)} models)",
             f"written: {out / 'denoise.json'}, {out / 'student.safetensors'}"]
    return "\n".join(lines)
