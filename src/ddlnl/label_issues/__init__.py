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

The package: :mod:`.config` (:class:`IssuesConfig`), :mod:`.teachers` (models trained on the
synthetic set and their outputs on the real images), :mod:`.votes` (neighbour votes),
:mod:`.finder` (scores, thresholds, :func:`find_issues`, :func:`score_labels`), :mod:`.cleaning`
(detection metrics, the cleaned-label file, training on the cleaned labels); every name is
re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import IssuesConfig

# Re-exported: ``ddlnl.label_issues.X`` keeps working for every name of the former module.
from .config import (  # noqa: F401
    SCORES, THRESHOLDS,
)
from .teachers import (  # noqa: F401
    TeacherOutputs, teacher_outputs, teacher_seeds, train_teachers,
)
from .votes import (  # noqa: F401
    _pca, neighbour_votes,
)
from .finder import (  # noqa: F401
    LabelIssues, _count_thresholds, confident_learning_issues, deconvolve_votes, find_issues, score_labels,
)
from .cleaning import (  # noqa: F401
    cleaned_accuracy, detection_metrics, save_cleaned_labels, train_on_cleaned,
)


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
# ---------------------------------------------------------------------------------------------
# The `ddlnl issues` / `ddlnl estimate` jobs (used by the CLI)
# ---------------------------------------------------------------------------------------------


def split_issues_overrides(overrides: list[str] | None) -> tuple[list[str], IssuesConfig]:
    """Take the ``issues.*`` keys out of ``--set`` overrides; the rest go to ``resolve_job``."""
    from ..config import apply_overrides

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
        lines.append(f"downstream ({down['mode']}, {down.get('stopping', down.get('protocol'))}): clean-test accuracy "
                     f"{100 * down['mean']:.2f} +- {100 * down['std']:.2f} (runs: {accs})")
    lines.append(f"written: {out / 'issues.csv'}, {out / 'pred_probs.npy'}, {out / 'cleaned_labels.npz'}, "
                 f"{out / 'issues.json'}")
    lines.append(f"reuse the cleaned labels: ddlnl baseline --noise file:{out / 'cleaned_labels.npz'} "
                 "(with the same --dataset/--train-subset/--seed)")
    return "\n".join(lines)
