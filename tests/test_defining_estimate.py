"""The noise estimator's defining steps, recomputed independently on tiny cases:

- anchor points: ``m = max(min_anchors, ceil(fraction * N / K))`` (at most N) samples with the
  highest score of class ``i`` (ties in data order); row ``i`` of ``T`` is their given-label
  histogram;
- the rate is ``1 - sum_i pi_i T[i, i]`` with ``pi`` the prior whose marginal ``T^T pi`` matches
  the labels;
- the temperature maximises the given labels' likelihood with ``T`` fixed (checked against a brute
  force search), and the posterior is Bayes with the calibrated teachers;
- with trusted labels, EM with one-hot priors reads ``T`` off the (true, given) counts.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from ddlnl.errors import UserError
from ddlnl.estimate import (anchor_transition, class_prior_from_labels, estimate_noise, fit_temperature,
                            ipc_upper_bound, max_valid_rate, noise_rate_lower_bound, sharpen)
from ddlnl.noise import apply_transition, realized_transition


def test_anchor_rows_are_the_label_histograms_of_the_top_m_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9],
                      [0.5, 0.5]])
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    # m = max(1, ceil(0.5 * 8 / 2)) = 2: class 0's top two are samples 0 and 1 (1 and 2 tie at 0.8:
    # data order), labels 0, 1; class 1's top two are samples 6 and 4, labels 0, 1.
    t, anchors = anchor_transition(probs, labels, 2, anchor_fraction=0.5, min_anchors=1)
    np.testing.assert_allclose(t, [[0.5, 0.5], [0.5, 0.5]])
    assert anchors == (2, 2)
    # m = ceil(0.75 * 8 / 2) = 3: class 0 -> samples 0, 1, 2 (labels 0, 1, 0); class 1 -> 6, 4, 3 (0, 1, 1)
    t, anchors = anchor_transition(probs, labels, 2, anchor_fraction=0.75, min_anchors=1)
    np.testing.assert_allclose(t, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]])
    assert anchors == (3, 3)
    # min_anchors wins when larger, and m never exceeds N
    assert anchor_transition(probs, labels, 2, anchor_fraction=0.1, min_anchors=4)[1] == (4, 4)
    t, anchors = anchor_transition(probs, labels, 2, anchor_fraction=0.1, min_anchors=50)
    assert anchors == (8, 8)
    np.testing.assert_allclose(t, [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(UserError, match=r"^anchor_fraction must be in \(0, 1\], got 0$"):
        anchor_transition(probs, labels, 2, anchor_fraction=0)


def test_rate_is_one_minus_the_prior_weighted_diagonal():
    t = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]])
    rng = np.random.default_rng(0)
    true = rng.choice(3, size=6000, p=[0.5, 0.3, 0.2])
    given = apply_transition(true, t, 1)
    est = estimate_noise(np.eye(3)[true], given, 3, anchor_fraction=0.5)  # 1000 anchors <= each class
    pi, _ = class_prior_from_labels(est.transition, given)
    np.testing.assert_allclose(est.class_prior, pi)
    assert est.noise_rate == pytest.approx(1 - float(np.sum(pi * np.diag(est.transition))), abs=1e-12)
    assert est.noise_rate == pytest.approx(float(np.mean(true != given)), abs=0.01)


def _loglik(probs, labels, t, temp):
    p = sharpen(probs, temp)
    return float(np.log((p * t[:, labels].T).sum(axis=1)).sum())


def test_temperature_is_the_likelihood_maximum_and_the_posterior_is_bayes():
    rng = np.random.default_rng(2)
    k, n = 4, 3000
    true = rng.integers(0, k, n)
    t = np.full((k, k), 0.1)
    np.fill_diagonal(t, 0.7)
    given = apply_transition(true, t, 3)
    logits = 1.5 * np.eye(k)[true] + rng.normal(0, 1, (n, k))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    temp, ll = fit_temperature(probs, given, t)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 4001))
    values = [_loglik(probs, given, t, g) for g in grid]
    best = grid[int(np.argmax(values))]
    assert temp == pytest.approx(best, rel=0.01)
    assert ll == pytest.approx(max(values), abs=1e-3) and ll == pytest.approx(_loglik(probs, given, t, temp))
    est = estimate_noise(probs, given, k)
    p = sharpen(probs, est.temperature)
    post = p * est.transition[:, given].T
    np.testing.assert_allclose(est.posterior, post / post.sum(axis=1, keepdims=True), rtol=1e-9)
    assert est.temperature == pytest.approx(fit_temperature(probs, given, est.transition)[0])


def test_calibrated_em_with_one_hot_teachers_reads_the_true_given_counts():
    rng = np.random.default_rng(5)
    k = 3
    true = rng.integers(0, k, 4000)
    t = np.array([[0.7, 0.3, 0.0], [0.0, 0.8, 0.2], [0.25, 0.0, 0.75]])
    given = apply_transition(true, t, 6)
    trusted = rng.integers(0, k, 300)
    est = estimate_noise(np.eye(k)[true], given, k, calibration=(np.eye(k)[trusted], trusted))
    assert est.method == "calibrated-em" and est.anchors == (0, 0, 0)
    np.testing.assert_allclose(est.transition, realized_transition(true, given, k), atol=1e-6)
    assert est.noise_rate == pytest.approx(float(np.mean(true != given)), abs=1e-6)


def test_corollaries_and_the_valid_range_on_hand_numbers():
    assert ipc_upper_bound(1000, 10, 1.0) == 0.0 and ipc_upper_bound(1000, 10, 0.0) == 100.0
    with pytest.raises(UserError, match=r"^noise rate must lie in \[0, 1\], got -0.1$"):
        ipc_upper_bound(1000, 10, -0.1)
    assert max_valid_rate(2) == 0.5 and max_valid_rate(10) == pytest.approx(0.9)
    with pytest.raises(UserError, match="^" + re.escape("need C >= 2 classes, got 1") + "$"):
        max_valid_rate(1)
    b = noise_rate_lower_bound([(20, 0.9), (5, 0.8), (10, 0.8)], 0.8, 1000, 10)
    assert (b.ipc, b.accuracy, b.baseline_accuracy) == (5, 0.8, 0.8) and b.lower_bound == pytest.approx(0.95)


def test_class_prior_em_steps_by_hand():
    # pi <- pi * T (q / T^T pi), renormalised, from the uniform prior; q the label histogram.
    t = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]])
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    q = np.array([0.5, 0.3, 0.2])
    pi = np.full(3, 1 / 3)
    for steps in (1, 2, 3):
        pi = pi * (t @ (q / (t.T @ pi)))
        pi /= pi.sum()
        got, its = class_prior_from_labels(t, labels, max_iter=steps, tol=0.0)
        np.testing.assert_allclose(got, pi, rtol=1e-12)
        assert its == steps
    _, its = class_prior_from_labels(t, labels, max_iter=0)
    assert its == 0
    _, its = class_prior_from_labels(t, labels)
    assert 1 < its < 5000  # stops once converged


def test_anchor_fraction_one_is_allowed_and_above_one_refused():
    probs, labels = np.eye(2)[[0, 1, 0, 1]], np.array([0, 1, 1, 1])
    assert anchor_transition(probs, labels, 2, anchor_fraction=1.0, min_anchors=1)[1] == (2, 2)
    with pytest.raises(UserError, match=r"^anchor_fraction must be in \(0, 1\], got 1.5$"):
        anchor_transition(probs, labels, 2, anchor_fraction=1.5)


@pytest.mark.parametrize("best", [0.03, 16.0])
def test_temperature_search_finds_an_optimum_between_the_last_two_grid_points(best):
    # A calibrated teacher (right w.p. 0.8 with confidence 0.8) distorted by p^(1/best): the
    # likelihood is maximal at temperature ~best, between the first (last) two grid points.
    rng = np.random.default_rng(8)
    k, n = 3, 3000
    true = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.8, true, (true + rng.integers(1, k, n)) % k)
    calibrated = np.full((n, k), 0.1)
    calibrated[np.arange(n), pred] = 0.8
    probs = sharpen(calibrated, 1.0 / best)
    t = np.eye(k)
    temp, ll = fit_temperature(probs, true, t)
    dense = np.exp(np.linspace(math.log(best / 2), math.log(min(best * 2, 20.0)), 2001))
    values = [_loglik(probs, true, t, g) for g in dense]
    assert temp == pytest.approx(dense[int(np.argmax(values))], rel=0.01)
    assert ll >= max(values) - 1e-6


def test_posterior_keeps_the_prior_where_the_label_has_no_mass():
    from ddlnl.estimate import _posterior

    probs = np.array([[0.7, 0.3], [0.4, 0.6]])
    t = np.array([[1.0, 0.0], [1.0, 0.0]])  # label 1 is never given
    post = _posterior(probs, np.array([0, 1]), t)
    np.testing.assert_allclose(post, [[0.7, 0.3], [0.4, 0.6]])


def test_calibrated_em_steps_by_hand():
    from ddlnl.estimate import _em

    prior = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 1, 2])
    t = 0.5 * np.eye(3) + 0.5 / 3
    for steps in (1, 2):
        joint = prior * t[:, labels].T
        post = joint / joint.sum(axis=1, keepdims=True)
        counts = post.T @ np.eye(3)[labels]
        t_hand = counts / counts.sum(axis=1, keepdims=True)
        got, got_post, ll, _ = _em(prior, labels, 3, 0.5 * np.eye(3) + 0.5 / 3, steps, 0.0)
        np.testing.assert_allclose(got, t_hand, rtol=1e-12)
        np.testing.assert_allclose(got_post, post, rtol=1e-12)
        assert ll == pytest.approx(float(np.log(joint.sum(axis=1)).sum()))
        t = t_hand
    # no iteration: the start, the priors, no likelihood
    got, got_post, ll, _ = _em(prior, labels, 3, np.eye(3), 0, 0.0)
    np.testing.assert_allclose(got, np.eye(3))
    assert got_post is prior and ll == -np.inf
    # a class no posterior mass reaches keeps an identity row
    got, *_ = _em(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([0, 1]), 2, np.full((2, 2), 0.5), 1, 0.0)
    np.testing.assert_allclose(got, [[0.5, 0.5], [0.0, 1.0]])


def test_em_stops_at_the_first_relative_gain_below_tol():
    # The EM's log-likelihood rises every iteration; it stops at the first gain <= tol * |loglik|.
    # tol 1: the second iteration's gain is far below |loglik|, so it stops there; a tiny tol
    # goes on, but stops before max_iter once the gains vanish.
    from ddlnl.estimate.transition import _em

    rng = np.random.default_rng(0)
    prior = rng.dirichlet(np.ones(3) * 0.5, 400)
    true = np.array([rng.choice(3, p=p) for p in prior])
    flip = np.array([[0.6, 0.3, 0.1], [0.1, 0.7, 0.2], [0.3, 0.0, 0.7]])
    labels = np.array([rng.choice(3, p=flip[c]) for c in true])
    start = np.full((3, 3), 1 / 3)
    lls = [_em(prior, labels, 3, start, max_iter=m, tol=0.0)[2] for m in range(1, 8)]
    assert all(b >= a - 1e-9 for a, b in zip(lls, lls[1:]))
    assert _em(prior, labels, 3, start, max_iter=50, tol=1.0)[3] == 2
    gain_2 = lls[1] - lls[0]
    assert gain_2 > 1.0 / abs(lls[1])  # a rule "gain <= tol / |loglik|" would not stop at 2
    it = _em(prior, labels, 3, start, max_iter=5000, tol=1e-9)[3]
    assert 2 < it < 5000


def test_temperature_fit_at_the_edges_of_its_grid_stays_on_the_grid():
    # Confident teachers and labels that ignore them: the likelihood rises with the temperature
    # (flatter is better), so the best temperature is the grid's largest, 20; sharp teachers that
    # are always right give the smallest, 0.02.
    rng = np.random.default_rng(1)
    k, n = 4, 200
    cls = rng.integers(0, k, n)
    probs = 0.02 / (k - 1) * np.ones((n, k))
    probs[np.arange(n), cls] = 0.98
    t_high, _ = fit_temperature(probs, rng.integers(0, k, n), np.eye(k))
    assert t_high == pytest.approx(20.0, rel=1e-3)
    t_low, _ = fit_temperature(probs, cls, np.eye(k))
    assert t_low == pytest.approx(0.02, rel=1e-3)


def test_posterior_is_bayes_and_normalised_however_small_the_labels_evidence():
    from ddlnl.estimate.transition import _posterior

    t = np.array([[1.0, 0.0], [1.0, 1e-299]])  # the given label 1 has evidence 0.15 * 1e-299
    np.testing.assert_allclose(_posterior(np.array([[0.85, 0.15]]), np.array([1]), t), [[0.0, 1.0]], atol=1e-12)
    t = np.array([[0.8, 0.2], [0.4, 0.6]])
    post = _posterior(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([1, 0]), t)
    np.testing.assert_allclose(post, [[0.25, 0.75], [0.72 / 0.76, 0.04 / 0.76]], rtol=1e-12)
    # a label no class can produce: the prior is kept
    zero = np.array([[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(_posterior(np.array([[0.3, 0.7]]), np.array([1]), zero), [[0.3, 0.7]])
