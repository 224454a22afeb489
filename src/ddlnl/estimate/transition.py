"""The noise rate and transition matrix estimated from the predictions of models trained only on a
synthetic set (anchor points, the class prior, temperature calibration, EM)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError


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
