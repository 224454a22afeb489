"""Noise-rate and IPC estimates: the study's two corollaries, and a direct estimate from a synthetic set.

Conventions: ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1; the noise rate is
the fraction of training labels that differ from the true class.

Three pieces:

* :func:`ipc_upper_bound` and :func:`noise_rate_lower_bound`: the study's corollaries, pure
  arithmetic on ``|S|`` (training-set size), ``C`` (classes), ``tau`` (noise rate) and IPC.
* :func:`estimate_noise`: a direct estimate of ``T`` and of the noise rate from predicted class
  probabilities of models trained **only on a synthetic set** (they never saw a noisy label),
  scoring the given training labels. Estimator: anchor points (below).
* :func:`advise_ipc`: IPC advice that combines both, with the numbers it rests on
  (:func:`advice_text` prints them), never using a rate outside the valid range.

The direct estimator
--------------------
The teachers' probabilities ``p_n`` estimate ``P(true | x_n)``; the given label is drawn from row
``true`` of ``T`` (class-conditional noise), so ``P(y_n | x_n) = sum_j p_n[j] T[j, y_n]``. Fitting
``T`` *and* the teachers' calibration to the given labels alone is not identifiable: a
miscalibrated teacher and label noise explain the labels equally well. So ``T`` is read off
**anchor points** (:func:`anchor_transition`): the samples the teachers rank most confidently as
class ``i`` are taken to be truly of class ``i``, and their given labels are draws from row ``i``
of ``T``. That uses only the ranking of the teachers' scores, not their calibration. The class
prior ``pi`` is then the one whose label marginal ``T^T pi`` matches the given labels, and the
rate is ``1 - sum_i pi_i T[i, i]``. With ``T`` fixed, one temperature calibrates the teachers
(maximum likelihood of the given labels, now identifiable) for the per-sample posterior
``P(true | x, given)``. Where trusted labels exist, ``estimate_noise(..., calibration=...)`` fits
the temperature on them instead and ``T`` by EM.

Assumptions, and what breaks them: (1) noise is class-conditional (instance-dependent noise is
averaged into ``T``); (2) the teachers' prediction for a sample is independent of whether that
sample's label was flipped, given its true class -- true by construction, since the teachers were
trained on the synthetic set and not on the labels being scored; (3) the anchor-point assumption:
the most confident samples per class are right. Where (3) fails (a teacher confidently wrong, e.g.
shirt vs T-shirt), impure anchors move mass off the diagonal and the rate is over-estimated. With
a perfect teacher (one-hot ``p_n`` equal to the true class) each row is a sample of the realized
transition matrix's row.

Defining steps (pinned by ``tests/test_estimate.py``):

1. the corollaries' arithmetic (:func:`ipc_upper_bound`, :func:`noise_rate_lower_bound`);
2. anchor points: row ``i`` of ``T`` is the given-label histogram of the samples ranked most
   confidently as class ``i``;
3. the class prior whose label marginal ``T^T pi`` matches the given labels; the rate
   ``1 - sum_i pi_i T[i, i]``;
4. one temperature fitted by maximum likelihood with ``T`` fixed (or on trusted labels);
5. advice never uses a rate outside the valid range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import UserError

__all__ = [
    "ipc_upper_bound",
    "RateBound",
    "noise_rate_lower_bound",
    "NoiseEstimate",
    "estimate_noise",
    "anchor_transition",
    "class_prior_from_labels",
    "fit_temperature",
    "calibration_temperature",
    "sharpen",
    "max_valid_rate",
    "IPCAdvice",
    "advise_ipc",
    "advice_text",
    "RunRecord",
    "estimate_text",
]

# Probabilities are clipped here before taking logs: a teacher's softmax can underflow to 0 and a
# one-hot "perfect teacher" is exactly 0 off its class; 1e-12 keeps EM finite without moving mass.
_PROB_FLOOR = 1e-12
# Default anchors per class as a share of N / K: on constructed cases 0.1 trades anchor purity
# against the binomial noise of ~100-anchor rows better than 0.05 or 0.2 (tests/test_estimate.py);
# benchmarks/bench_label_issues.py re-chooses it on its development setting, never on a reported row.
DEFAULT_ANCHOR_FRACTION = 0.1
# Temperatures searched for the teachers' calibration (log-spaced, then refined by golden section).
_TEMPERATURE_GRID = tuple(float(t) for t in np.exp(np.linspace(math.log(0.02), math.log(20.0), 16)))


# ---------------------------------------------------------------------------------------------
# The study's corollaries
# ---------------------------------------------------------------------------------------------


def _check_sizes(train_size: int, num_classes: int) -> None:
    if int(train_size) < 1 or int(num_classes) < 2:
        raise UserError(f"need |S| >= 1 training samples and C >= 2 classes, got |S|={train_size}, "
                        f"C={num_classes}")


def ipc_upper_bound(train_size: int, num_classes: int, noise_rate: float) -> float:
    """The study's IPC bound: ``IPC <= |S| (1 - tau) / C``.

    Assumptions: only the ``|S| (1 - tau)`` correctly labelled samples carry information about
    the clean classes, and a distilled image summarises at least one of them; so a synthetic set
    with more than ``|S| (1 - tau)`` images in total (``C`` classes x IPC) must spend the excess on
    the noise. Balanced classes are assumed (the bound is per class on average).

    Args:
        train_size: ``|S|``, the number of (noisy) training samples distilled.
        num_classes: ``C``.
        noise_rate: ``tau`` in ``[0, 1]``, fraction of wrong labels.

    Returns:
        The largest IPC (a float; floor it for a count) that the bound allows.

    Example: ``ipc_upper_bound(60000, 10, 0.6) == 2400.0``.
    """
    _check_sizes(train_size, num_classes)
    if not 0.0 <= float(noise_rate) <= 1.0:
        raise UserError(f"noise rate must lie in [0, 1], got {noise_rate}")
    return float(train_size) * (1.0 - float(noise_rate)) / float(num_classes)


@dataclass(frozen=True)
class RateBound:
    """The noise-rate lower bound read from accuracy-vs-IPC results.

    Attributes:
        ipc: the smallest IPC whose accuracy reaches the full-noisy baseline.
        accuracy: its accuracy.
        baseline_accuracy: the full-noisy baseline it was compared with.
        lower_bound: ``max(0, 1 - C * ipc / |S|)``.
    """

    ipc: int
    accuracy: float
    baseline_accuracy: float
    lower_bound: float


def noise_rate_lower_bound(results: Sequence[tuple[int, float]], baseline_accuracy: float,
                           train_size: int, num_classes: int) -> RateBound | None:
    """The study's noise-rate bound: ``tau >= 1 - C * IPC / |S|`` at the smallest IPC that
    reaches the full-noisy baseline.

    Assumptions: the full noisy set is worth its ``|S| (1 - tau)`` clean samples (mislabelled
    samples add nothing), and ``C * IPC`` distilled images are worth at least as many clean real
    images. If ``C * IPC`` synthetic images already match the full noisy set, then
    ``|S| (1 - tau) <= C * IPC``, i.e. ``tau >= 1 - C * IPC / |S|``. Only the *smallest* such IPC
    gives the tightest bound. The bound is clipped at 0 (a vacuous bound says nothing).

    Args:
        results: ``(ipc, accuracy)`` pairs (e.g. one method's cells of a run; any order; accuracy
            as a fraction, like the baseline).
        baseline_accuracy: accuracy of the same architecture trained on the full noisy set.
        train_size: ``|S|``.
        num_classes: ``C``.

    Returns:
        :class:`RateBound`, or ``None`` when no IPC reaches the baseline (then the corollary gives
        no bound).

    Example: ``noise_rate_lower_bound([(10, 0.7), (50, 0.86)], 0.85, 5000, 10).lower_bound == 0.9``.
    """
    _check_sizes(train_size, num_classes)
    reached = sorted((int(ipc), float(acc)) for ipc, acc in results if float(acc) >= float(baseline_accuracy))
    if not reached:
        return None
    ipc, acc = reached[0]
    bound = max(0.0, 1.0 - float(num_classes) * ipc / float(train_size))
    return RateBound(ipc=ipc, accuracy=acc, baseline_accuracy=float(baseline_accuracy), lower_bound=bound)


# ---------------------------------------------------------------------------------------------
# Direct estimate: anchor points (calibration-free), then the teachers' temperature given T
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseEstimate:
    """A fitted noise model.

    Attributes:
        transition: ``K x K`` float64, ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1 (a class
            without anchors has an identity row).
        noise_rate: estimated fraction of wrong labels, ``1 - sum_i pi_i T[i, i]``.
        class_prior: ``K`` float64, estimated ``P(true = i)`` (``pi``).
        posterior: ``N x K`` float64, ``P(true = j | x_n, y_n)`` with the temperature-calibrated
            teachers as the prior and ``transition`` as the noise model.
        temperature: the teachers' calibration temperature (``p^(1/t)``) fitted with ``T`` fixed;
            1 = as predicted.
        log_likelihood: ``sum_n log P(y_n | x_n)`` at that temperature.
        iterations: iterations of the class-prior fit.
        method: ``"anchors"`` or ``"calibrated-em"``.
        anchors: per class, the number of anchor samples the row of ``T`` was read from (0 for
            ``calibrated-em``).
    """

    transition: np.ndarray
    noise_rate: float
    class_prior: np.ndarray
    posterior: np.ndarray = field(repr=False)
    temperature: float
    log_likelihood: float
    iterations: int
    method: str = "anchors"
    anchors: tuple[int, ...] = ()

    def joint(self) -> np.ndarray:
        """``K x K`` float64, ``Q[i, j] = P(true = i, noisy = j) = pi_i T[i, j]``."""
        return self.class_prior[:, None] * self.transition

    def expected_wrong_per_class(self, labels: np.ndarray) -> np.ndarray:
        """``K`` floats: for each given class ``k``, the expected number of wrong labels among the
        ``n_k`` samples labelled ``k``: ``n_k (1 - Q[k, k] / sum_i Q[i, k])`` (the fitted model's
        share of wrong labels in that given class; they add up to ``N * noise_rate`` when the
        model's label marginal matches the data's, which the class-prior fit ensures)."""
        labels = np.asarray(labels, dtype=np.int64)
        k = self.transition.shape[0]
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        q = self.joint()
        given = q.sum(axis=0)
        right = np.divide(np.diag(q), given, out=np.ones(k), where=given > 0)
        return counts * (1.0 - np.clip(right, 0.0, 1.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-sample posterior)."""
        return {"method": self.method, "noise_rate": self.noise_rate, "temperature": self.temperature,
                "log_likelihood": self.log_likelihood, "iterations": self.iterations,
                "anchors": list(self.anchors), "transition": self.transition.tolist(),
                "class_prior": self.class_prior.tolist(), "convention": "T[i, j] = P(noisy = j | true = i)"}


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of ``probs`` raised to ``1 / temperature`` and renormalised (``t < 1`` sharpens).

    Args:
        probs: ``N x K`` non-negative rows (probabilities).
        temperature: ``> 0``.
    """
    logp = np.log(np.clip(probs, _PROB_FLOOR, 1.0)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def _check_inputs(pred_probs: np.ndarray, labels: np.ndarray, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    probs = np.asarray(pred_probs, dtype=np.float64)
    y = np.asarray(labels)
    if probs.ndim != 2 or y.ndim != 1 or probs.shape[0] != y.shape[0]:
        raise UserError(f"pred_probs must be N x K and labels N, got {probs.shape} and {y.shape}")
    k = int(num_classes or probs.shape[1])
    if probs.shape[1] != k:
        raise UserError(f"pred_probs has {probs.shape[1]} columns, expected K={k}")
    if y.size == 0:
        raise UserError("no labels to estimate noise from")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
        raise UserError(f"labels must be integers in [0, {k - 1}]")
    return probs, y.astype(np.int64), k


def anchor_transition(pred_probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None, *,
                      anchor_fraction: float = DEFAULT_ANCHOR_FRACTION,
                      min_anchors: int = 10) -> tuple[np.ndarray, tuple[int, ...]]:
    """``T`` read off anchor points: row ``i`` is the histogram of the given labels of the samples
    the teachers rank most confidently as class ``i``.

    Assumption (the anchor-point assumption, Liu & Tao 2016; Patrini et al. 2017; Xia et al.
    2019): among the ``m`` samples with the highest ``pred_probs[:, i]`` (almost) all are truly of
    class ``i``; and noise is class-conditional, independent of the teachers' prediction given the
    true class (true when the teachers never saw these labels). Then the given labels of those
    samples are draws from row ``i`` of ``T``. Only the *ranking* of the teachers' scores within a
    column is used, so any calibration error that keeps the most confident samples right leaves
    the estimate unbiased; anchors that are not truly of class ``i`` (a teacher confidently wrong)
    move mass off the diagonal, i.e. over-estimate the rate.

    Args:
        pred_probs: ``N x K`` teachers' probabilities of the true class (models that never saw
            ``labels``).
        labels: ``N`` given labels in ``[0, K)``.
        num_classes: ``K`` (default ``pred_probs.shape[1]``).
        anchor_fraction: ``m = max(min_anchors, ceil(anchor_fraction * N / K))`` anchors per class
            (capped at ``N``): smaller = purer anchors, noisier rows.
        min_anchors: the least number of anchors per class.

    Returns:
        ``(T, anchors)``: ``K x K`` float64 with ``T[i, j] = P(noisy = j | true = i)`` (rows sum
        to 1) and the number of anchors per class.
    """
    probs, y, k = _check_inputs(pred_probs, labels, num_classes)
    if not 0.0 < float(anchor_fraction) <= 1.0:
        raise UserError(f"anchor_fraction must be in (0, 1], got {anchor_fraction}")
    n = len(y)
    m = int(min(n, max(int(min_anchors), math.ceil(float(anchor_fraction) * n / k))))
    transition = np.zeros((k, k))
    for i in range(k):
        # Stable sort on the negated score: ties keep the data order, so the result is deterministic.
        top = np.argsort(-probs[:, i], kind="stable")[:m]
        transition[i] = np.bincount(y[top], minlength=k) / m
    return transition, tuple([m] * k)


def class_prior_from_labels(transition: np.ndarray, labels: np.ndarray, *, max_iter: int = 5000,
                            tol: float = 1e-12) -> tuple[np.ndarray, int]:
    """``pi = P(true = i)`` such that the labels' marginal ``q = T^T pi`` matches the given labels.

    Maximum likelihood of the given labels' histogram over the simplex (EM for mixture weights:
    ``pi_i <- pi_i sum_j q_j T[i, j] / (T^T pi)_j``), so a singular or poorly estimated ``T``
    still gives a valid prior.

    Returns:
        ``(pi, iterations)``; ``pi`` is ``K`` float64 summing to 1.
    """
    t = np.asarray(transition, dtype=np.float64)
    k = t.shape[0]
    q = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k).astype(np.float64)
    q /= q.sum()
    pi = np.full(k, 1.0 / k)
    it = 0
    for it in range(1, max_iter + 1):
        model = np.maximum(t.T @ pi, 1e-300)
        new = pi * (t @ (q / model))
        new /= new.sum()
        if np.abs(new - pi).max() < tol:
            pi = new
            break
        pi = new
    return pi, it


def _log_likelihood(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray, temperature: float) -> float:
    """``sum_n log sum_j p_t[n, j] T[j, y_n]``: the given labels' likelihood with ``T`` fixed."""
    evidence = (sharpen(probs, temperature) * transition[:, labels].T).sum(axis=1)
    return float(np.log(np.maximum(evidence, 1e-300)).sum())


def fit_temperature(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray) -> tuple[float, float]:
    """The temperature maximising the given labels' likelihood with ``T`` held fixed.

    With ``T`` known the temperature is identifiable (what made the joint fit of both ambiguous is
    gone): grid over ``_TEMPERATURE_GRID`` then golden section on ``log t``.

    Returns:
        ``(temperature, log_likelihood)``.
    """
    def ll(log_t: float) -> float:
        return _log_likelihood(probs, labels, transition, math.exp(log_t))

    logs = [math.log(t) for t in _TEMPERATURE_GRID]
    values = [ll(v) for v in logs]
    i = int(np.argmax(values))
    lo, hi = logs[max(i - 1, 0)], logs[min(i + 1, len(logs) - 1)]
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = ll(a), ll(b)
    for _ in range(20):
        if fa >= fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = ll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = ll(b)
    best_log, best = max([(logs[i], values[i]), (a, fa), (b, fb)], key=lambda c: c[1])
    return float(math.exp(best_log)), float(best)


def calibration_temperature(probs: np.ndarray, true_labels: np.ndarray) -> float:
    """Temperature scaling fitted on samples whose labels are known to be right.

    Maximises ``sum_n log p_t[n, y_n]`` (no noise model: the labels are trusted), i.e. fits the
    teachers' calibration on a trusted set instead of on the noisy labels being scored.
    """
    probs, y, k = _check_inputs(probs, true_labels, None)
    return fit_temperature(probs, y, np.eye(k))[0]


def _posterior(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """``P(true = j | x_n, y_n) ∝ p[n, j] T[j, y_n]`` (Bayes with ``p`` as the prior)."""
    joint = probs * transition[:, labels].T
    total = joint.sum(axis=1, keepdims=True)
    return np.where(total > 0, joint / np.maximum(total, 1e-300), probs)


def _em(prior: np.ndarray, labels: np.ndarray, num_classes: int, transition: np.ndarray,
        max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, float, int]:
    """EM for ``T`` with fixed per-sample priors; returns ``(T, posterior, loglik, iterations)``."""
    t = transition.copy()
    onehot = np.eye(num_classes)[labels]  # N x K, so the M-step is one matrix product
    previous = -np.inf
    loglik = -np.inf
    posterior = prior
    it = 0
    for it in range(1, max_iter + 1):
        joint = prior * t[:, labels].T  # N x K: p_n[j] * T[j, y_n]
        evidence = np.maximum(joint.sum(axis=1), 1e-300)
        posterior = joint / evidence[:, None]
        loglik = float(np.log(evidence).sum())
        counts = posterior.T @ onehot  # expected (true, given) counts
        mass = counts.sum(axis=1, keepdims=True)
        # A class with no posterior mass has no evidence: keep an identity row (rows must sum to 1).
        t = np.where(mass > 0, counts / np.maximum(mass, 1e-300), np.eye(num_classes))
        if loglik - previous <= tol * abs(loglik):
            break
        previous = loglik
    return t, posterior, loglik, it


def estimate_noise(pred_probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None, *,
                   anchor_fraction: float = DEFAULT_ANCHOR_FRACTION,
                   calibration: tuple[np.ndarray, np.ndarray] | None = None,
                   max_iter: int = 500, tol: float = 1e-7) -> NoiseEstimate:
    """Estimate ``T`` and the noise rate from teachers' probabilities and the given labels.

    Two estimators, each identifiable under the assumption it states:

    * default (``method="anchors"``): :func:`anchor_transition` reads ``T`` off the teachers' most
      confident samples per class; the class prior ``pi`` then matches the given labels' marginal
      (:func:`class_prior_from_labels`) and the rate is ``1 - sum_i pi_i T[i, i]``. It rests on
      the anchor-point assumption (the teachers' top-ranked samples of each class are truly of that
      class), not on calibration.
    * ``calibration=(probs, true_labels)`` (``method="calibrated-em"``): the teachers' temperature
      is fitted on samples whose labels are known to be right (:func:`calibration_temperature`),
      then ``T`` is the maximum-likelihood fit by EM with the per-sample priors fixed at that
      temperature. It rests on the trusted samples being calibrated like the scored ones.

    Why not fit the temperature and ``T`` together on the noisy labels (the earlier estimator):
    teacher miscalibration and label noise explain the given labels equally well (an exactly
    calibrated 60%-accurate teacher at rate 0.4 and the same teacher sharpened to one-hot at rate
    0.6 reach the same likelihood), so that fit is not identifiable. Neither estimator here can
    separate them when the teachers' confidence carries no information at all (every prediction
    equally confident): then only trusted labels (``calibration``) can.

    After ``T`` is fixed, the teachers' temperature is fitted by maximum likelihood of the given
    labels (identifiable once ``T`` is known) and ``posterior`` is ``P(true | x, given)`` under it.

    Args:
        pred_probs: ``N x K`` probabilities of the true class from models that never saw these
            labels (e.g. trained on a synthetic set); rows sum to 1.
        labels: ``N`` given (possibly noisy) labels, ``int64`` in ``[0, K)``.
        num_classes: ``K`` (default: ``pred_probs.shape[1]``).
        anchor_fraction: see :func:`anchor_transition`.
        calibration: ``(M x K probabilities, M true labels)`` of trusted samples, or None.
        max_iter, tol: EM limits of the ``calibrated-em`` route.

    Returns:
        :class:`NoiseEstimate` (``T[i, j] = P(noisy = j | true = i)``).
    """
    probs, y, k = _check_inputs(pred_probs, labels, num_classes)
    if calibration is not None:
        cal_probs, cal_labels = calibration
        temp = calibration_temperature(cal_probs, cal_labels)
        start = 0.5 * np.eye(k) + 0.5 / k
        t_mat, post, ll, _ = _em(sharpen(probs, temp), y, k, start, max_iter, tol)
        prior, its = class_prior_from_labels(t_mat, y)
        method, anchors = "calibrated-em", (0,) * k
    else:
        t_mat, anchors = anchor_transition(probs, y, k, anchor_fraction=anchor_fraction)
        prior, its = class_prior_from_labels(t_mat, y)
        temp, ll = fit_temperature(probs, y, t_mat)
        post = _posterior(sharpen(probs, temp), y, t_mat)
        method = "anchors"
    rate = float(np.clip(1.0 - float(np.sum(prior * np.diag(t_mat))), 0.0, 1.0))
    return NoiseEstimate(transition=t_mat, noise_rate=rate, class_prior=prior, posterior=post,
                         temperature=float(temp), log_likelihood=float(ll), iterations=int(its), method=method,
                         anchors=tuple(int(a) for a in anchors))


# ---------------------------------------------------------------------------------------------
# IPC advice
# ---------------------------------------------------------------------------------------------


def max_valid_rate(num_classes: int) -> float:
    """The upper end of the valid noise-rate range, ``(K - 1) / K``.

    At that rate symmetric noise makes the given label independent of the true class (every label
    equally likely), so no estimate or advice can rest on a larger rate; ddlnl's own symmetric
    noise refuses ``rate >= (K - 1) / K`` for the same reason.
    """
    if int(num_classes) < 2:
        raise UserError(f"need C >= 2 classes, got {num_classes}")
    return (int(num_classes) - 1) / int(num_classes)


@dataclass(frozen=True)
class IPCAdvice:
    """IPC advice and the numbers it rests on.

    Attributes:
        train_size, num_classes: ``|S|`` and ``C``.
        direct_rate: the direct (anchor-point) noise-rate estimate, or None.
        bound: the corollary's lower bound from accuracy-vs-IPC results, or None.
        bound_used: whether the bound entered the rate (see :func:`advise_ipc`).
        bound_note: why the bound was not used ("" when it was or there is none).
        noise_rate: the rate the advice uses: ``max(direct_rate, bound)`` over the usable ones,
            clipped into ``[0, (C - 1) / C]``.
        clipped: ``"upper"`` / ``"lower"`` when that clip changed the rate, else None.
        ipc_max: ``floor(|S| (1 - noise_rate) / C)``, at least 1.
        tried: ``(ipc, accuracy)`` results the advice saw (may be empty).
        random_tried: ``(ipc, accuracy)`` of random real subsets, if known.
        best_tried: the IPC with the best accuracy among the tried ones within ``ipc_max``.
        baseline_accuracy: the full-noisy baseline, if known.
    """

    train_size: int
    num_classes: int
    direct_rate: float | None
    bound: RateBound | None
    noise_rate: float
    ipc_max: int
    tried: tuple[tuple[int, float], ...] = ()
    best_tried: int | None = None
    baseline_accuracy: float | None = None
    random_tried: tuple[tuple[int, float], ...] = ()
    bound_used: bool = False
    bound_note: str = ""
    clipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"train_size": self.train_size, "num_classes": self.num_classes,
                "direct_rate": self.direct_rate,
                "bound": None if self.bound is None else vars(self.bound).copy(),
                "bound_used": self.bound_used, "bound_note": self.bound_note,
                "noise_rate": self.noise_rate, "clipped": self.clipped,
                "valid_range": [0.0, max_valid_rate(self.num_classes)], "ipc_max": self.ipc_max,
                "tried": [list(t) for t in self.tried], "random_tried": [list(t) for t in self.random_tried],
                "best_tried": self.best_tried, "baseline_accuracy": self.baseline_accuracy}


def _bound_refuted(bound: RateBound, random_tried: Sequence[tuple[int, float]], baseline_accuracy: float,
                   num_classes: int) -> str:
    """Why the corollary's bound says nothing about this run ("" if nothing refutes it)."""
    top = max_valid_rate(num_classes)
    reached = [(i, a) for i, a in random_tried if a >= baseline_accuracy]
    if reached:
        # The corollary assumes the full noisy set is worth its |S|(1 - tau) clean samples. A random
        # subset of C*IPC noisy images that matches it shows the baseline is worth no more than that
        # subset (a baseline trained to convergence memorises its wrong labels), so reaching the
        # baseline is no evidence about tau.
        i, a = min(reached)
        return (f"not used: a random subset at IPC {i} also reaches the baseline ({100 * a:.2f}% >= "
                f"{100 * baseline_accuracy:.2f}%), so the baseline is not worth its |S|(1 - tau) clean "
                "samples, which the corollary assumes")
    if bound.lower_bound >= top:
        return (f"not used: {bound.lower_bound:.3f} is not below the valid range's upper end "
                f"(C-1)/C = {top:.3f}, so the corollary's premises fail here")
    return ""


def advise_ipc(train_size: int, num_classes: int, *, direct_rate: float | None = None,
               results: Sequence[tuple[int, float]] = (),
               baseline_accuracy: float | None = None,
               random_results: Sequence[tuple[int, float]] = ()) -> IPCAdvice:
    """Combine the direct noise-rate estimate with the corollaries into IPC advice.

    The rate used is the direct estimate, raised to the corollary's lower bound when results over
    IPC show one (``tau >= 1 - C * IPC / |S|``) and nothing in the run refutes the corollary's
    premise (a random real subset that also reaches the baseline does: then the baseline is not
    worth its clean samples; so does a bound at or above the valid range). The rate is kept in
    the valid range ``[0, (C - 1) / C]`` (:func:`max_valid_rate`) and the advice says which end it
    was clipped to. The advice is the IPC upper bound ``|S| (1 - tau) / C`` at that rate, and, among
    IPCs already tried, the most accurate one within the bound.

    Args:
        results: ``(ipc, accuracy)`` of distilled sets.
        random_results: ``(ipc, accuracy)`` of random real subsets with the same noisy labels.

    Raises:
        UserError: neither a direct rate nor results with a baseline to bound it.
    """
    _check_sizes(train_size, num_classes)
    tried = tuple(sorted((int(i), float(a)) for i, a in results))
    random_tried = tuple(sorted((int(i), float(a)) for i, a in random_results))
    bound, note = None, ""
    if tried and baseline_accuracy is not None:
        bound = noise_rate_lower_bound(tried, baseline_accuracy, train_size, num_classes)
        if bound is not None:
            note = _bound_refuted(bound, random_tried, float(baseline_accuracy), num_classes)
    use_bound = bound is not None and not note
    candidates = [r for r in (direct_rate, bound.lower_bound if use_bound else None) if r is not None]
    if not candidates:
        raise UserError("no noise-rate information: give a direct estimate, or results over IPC that "
                        "reach the full-noisy baseline")
    raw = max(candidates)
    top = max_valid_rate(num_classes)
    rate = min(max(raw, 0.0), top)
    clipped = "upper" if raw > top else ("lower" if raw < 0.0 else None)
    # The epsilon keeps 1 - C*IPC/|S| -> |S|(1 - tau)/C from losing an image to rounding (49.999...).
    ipc_max = max(1, int(math.floor(ipc_upper_bound(train_size, num_classes, rate) + 1e-9)))
    within = [(i, a) for i, a in tried if i <= ipc_max]
    best = max(within, key=lambda t: (t[1], -t[0]))[0] if within else None
    return IPCAdvice(train_size=int(train_size), num_classes=int(num_classes), direct_rate=direct_rate,
                     bound=bound, noise_rate=rate, ipc_max=ipc_max, tried=tried, best_tried=best,
                     baseline_accuracy=baseline_accuracy, random_tried=random_tried, bound_used=use_bound,
                     bound_note=note, clipped=clipped)


def advice_text(advice: IPCAdvice) -> str:
    """Human-readable lines: the estimates, the bound, and the advice with its arithmetic."""
    s, c = advice.train_size, advice.num_classes
    top = max_valid_rate(c)
    lines = []
    if advice.direct_rate is not None:
        lines.append(f"direct estimate of the noise rate (teachers trained on the synthetic set, anchor points): "
                     f"{advice.direct_rate:.3f}")
    if advice.tried and advice.baseline_accuracy is not None:
        tried = ", ".join(f"IPC {i}: {100 * a:.2f}%" for i, a in advice.tried)
        lines.append(f"results over IPC: {tried}; full-noisy baseline {100 * advice.baseline_accuracy:.2f}%")
        if advice.bound is None:
            lines.append("corollary bound tau >= 1 - C*IPC/|S|: no IPC reached the baseline, so no bound")
        else:
            b = advice.bound
            lines.append(f"corollary bound: IPC {b.ipc} is the smallest reaching the baseline "
                         f"({100 * b.accuracy:.2f}% >= {100 * b.baseline_accuracy:.2f}%), so "
                         f"tau >= 1 - {c}*{b.ipc}/{s} = {b.lower_bound:.3f}"
                         + (f"; {advice.bound_note}" if advice.bound_note else ""))
    clip = ""
    if advice.clipped == "upper":
        clip = (f" (clipped to the upper end of the valid range [0, (C-1)/C = {top:.3f}]: at that rate the "
                "labels carry no information about the class)")
    elif advice.clipped == "lower":
        clip = " (clipped to the lower end of the valid range, 0)"
    lines.append(f"noise rate used: {advice.noise_rate:.3f}{clip}; IPC <= |S|(1 - tau)/C = "
                 f"{s}*(1 - {advice.noise_rate:.3f})/{c} = {ipc_upper_bound(s, c, advice.noise_rate):.1f}")
    advice_line = f"advice: distil at IPC <= {advice.ipc_max}"
    if advice.best_tried is not None:
        advice_line += f"; among the IPCs tried within it, IPC {advice.best_tried} was the most accurate"
    lines.append(advice_line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The `ddlnl estimate` job (used by the CLI)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """What :func:`advise_ipc` needs from a ``ddlnl run`` directory.

    Attributes:
        job: the run's :class:`ddlnl.pipeline.JobConfig`.
        tried: ``(ipc, accuracy)``, per IPC the best distiller's mean accuracy (``random`` excluded).
        baseline_accuracy: the converged full-noisy baseline's mean accuracy, or None.
        train_size, num_classes: ``|S|`` and ``C`` of the noisy training set.
        synthetic: DM synthetic-set files of the run by IPC.
        run_dir: the directory read.
        random_tried: ``(ipc, accuracy)`` of the run's random real subsets (mean accuracy).
    """

    job: Any
    tried: tuple[tuple[int, float], ...]
    baseline_accuracy: float | None
    train_size: int
    num_classes: int
    synthetic: dict[int, str] = field(default_factory=dict)
    run_dir: str = ""
    random_tried: tuple[tuple[int, float], ...] = ()


def estimate_text(result: dict[str, Any]) -> str:
    """What ``ddlnl estimate`` prints."""
    est = result["estimate"]
    diag = ", ".join(f"{v:.2f}" for v in np.diag(np.asarray(est["transition"])))
    lines = [result["advice_text"],
             f"estimated T[i, i] = P(noisy = i | true = i): {diag}  (teacher temperature {est['temperature']:.2f}, "
             f"{result['teachers']} teachers on {result['synthetic_size']} synthetic images, {result['seconds']:.0f}s)"]
    known = result.get("known")
    if known:
        lines.append(f"known (noise injected here): realized rate {known['realized_rate']:.3f}; largest |T_est - T_realized| "
                     f"{known['max_abs_T_error']:.3f}")
    return "\n".join(lines)
