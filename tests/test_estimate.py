"""The study's corollaries on hand-checked numbers, the advice's guards, and the direct (anchor-point)
noise estimator."""

from __future__ import annotations

import numpy as np
import pytest

from ddlnl.errors import UserError
from ddlnl.estimate import (advice_text, advise_ipc, class_prior_from_labels, estimate_noise, ipc_upper_bound,
                            max_valid_rate, noise_rate_lower_bound, sharpen)
from ddlnl.noise import apply_transition, realized_transition


def test_ipc_upper_bound_hand_checked():
    assert ipc_upper_bound(60000, 10, 0.6) == pytest.approx(2400.0)  # 60000 * 0.4 / 10
    assert ipc_upper_bound(5000, 10, 0.8) == pytest.approx(100.0)  # 5000 * 0.2 / 10
    assert ipc_upper_bound(1000, 4, 0.0) == pytest.approx(250.0)
    with pytest.raises(UserError):
        ipc_upper_bound(1000, 10, 1.5)


def test_noise_rate_lower_bound_uses_the_smallest_ipc_reaching_the_baseline():
    results = [(100, 0.90), (1, 0.50), (50, 0.86), (10, 0.70)]  # any order
    bound = noise_rate_lower_bound(results, 0.85, 5000, 10)
    assert bound.ipc == 50 and bound.accuracy == 0.86
    assert bound.lower_bound == pytest.approx(0.9)  # 1 - 10 * 50 / 5000
    # Reaching exactly the baseline counts; a bound below 0 is clipped (it says nothing).
    assert noise_rate_lower_bound([(10, 0.85)], 0.85, 5000, 10).lower_bound == pytest.approx(0.98)
    assert noise_rate_lower_bound([(1000, 0.9)], 0.85, 5000, 10).lower_bound == 0.0
    assert noise_rate_lower_bound([(10, 0.7), (50, 0.8)], 0.85, 5000, 10) is None


def test_advice_combines_direct_estimate_and_bound():
    # The bound (0.8) exceeds the direct estimate (0.6), so the advice uses 0.8: IPC <= 5000*0.2/10 = 100.
    adv = advise_ipc(5000, 10, direct_rate=0.6, results=[(10, 0.70), (100, 0.86), (200, 0.90)], baseline_accuracy=0.85,
                     random_results=[(10, 0.5), (100, 0.8)])
    assert adv.bound_used and adv.noise_rate == pytest.approx(0.8) and adv.ipc_max == 100 and adv.best_tried == 100
    text = advice_text(adv)
    assert "0.800" in text and "IPC <= 100" in text and "1 - 10*100/5000" in text and "not used" not in text
    # No IPC reaches the baseline: the direct estimate alone, 5000*(1-0.6)/10 = 200.
    adv = advise_ipc(5000, 10, direct_rate=0.6, results=[(10, 0.7)], baseline_accuracy=0.85)
    assert adv.bound is None and adv.ipc_max == 200 and adv.best_tried == 10
    assert "no bound" in advice_text(adv)
    with pytest.raises(UserError):
        advise_ipc(5000, 10)


def _known_noise(n=20000, seed=0):
    k = 4
    # Non-symmetric on purpose: class 0 flips to 1, class 2 spreads, class 3 is clean.
    t = np.array([[0.6, 0.4, 0.0, 0.0],
                  [0.1, 0.8, 0.1, 0.0],
                  [0.1, 0.1, 0.7, 0.1],
                  [0.0, 0.0, 0.0, 1.0]])
    clean = np.random.default_rng(seed).integers(0, k, n)
    return t, clean, apply_transition(clean, t, seed + 1)


def test_perfect_teacher_recovers_the_transition_matrix():
    t, clean, noisy = _known_noise()
    # With one-hot teachers the anchors of class i are samples of class i (4500 of ~5000 each).
    est = estimate_noise(np.eye(4)[clean], noisy, 4, anchor_fraction=0.9)
    np.testing.assert_allclose(est.transition, t, atol=0.03)  # binomial error at 4500 anchors per class
    np.testing.assert_allclose(est.transition.sum(axis=1), 1.0)
    assert est.noise_rate == pytest.approx(np.mean(clean != noisy), abs=0.01)
    np.testing.assert_allclose(est.class_prior, np.bincount(clean) / len(clean), atol=0.02)
    np.testing.assert_allclose(est.posterior[np.arange(len(clean)), clean], 1.0, atol=1e-6)
    # The expected wrong labels per given class add up to the estimated rate.
    assert est.expected_wrong_per_class(noisy).sum() == pytest.approx(est.noise_rate * len(noisy), rel=1e-3)


def _overconfident_teacher(rate, n=20000, k=10, teacher_error=0.4, seed=0):
    """A known, miscalibrated teacher: right on 60% of samples with confidence U(0.5, 1), wrong on
    40% (a uniformly chosen other class) with confidence U(0.5, 0.8) -- as sure of its mistakes as
    of a middling right answer, which no temperature can fix. Symmetric label noise at ``rate``."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    wrong = rng.random(n) < teacher_error
    pred = np.where(wrong, (true + rng.integers(1, k, n)) % k, true)
    conf = np.where(wrong, rng.uniform(0.5, 0.8, n), rng.uniform(0.5, 1.0, n))
    probs = np.repeat(((1 - conf) / (k - 1))[:, None], k, axis=1)
    probs[np.arange(n), pred] = conf
    t = np.full((k, k), rate / (k - 1))
    np.fill_diagonal(t, 1 - rate)
    return probs, true, apply_transition(true, t, seed + 1)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
def test_rate_estimate_is_right_with_a_miscalibrated_teacher(rate):
    probs, true, given = _overconfident_teacher(rate)
    truth = float(np.mean(true != given))
    est = estimate_noise(probs, given, 10)
    assert est.method == "anchors"
    assert est.noise_rate == pytest.approx(truth, abs=0.03)
    # The earlier joint fit of temperature and T read 0.09 / 0.27 / 0.54 here: the rate and the
    # teacher's errors are confounded without anchors (the old code fails this test).
    # Each row is read from ~100 anchors (binomial error ~0.05 per entry); on average they are right.
    assert np.abs(np.diag(est.transition) - (1 - rate)).mean() < 0.05


def test_constant_confidence_teacher_needs_trusted_labels():
    """An exactly calibrated 60%-accurate teacher that is always 60% sure: its confidence says
    nothing, so (teacher, labels) alone cannot separate its errors from label noise; a calibration
    on trusted labels can."""
    rng = np.random.default_rng(4)
    k, n = 10, 20000

    def teacher(true):
        right = rng.random(len(true)) < 0.6
        pred = np.where(right, true, (true + rng.integers(1, k, len(true))) % k)
        probs = np.full((len(true), k), 0.4 / (k - 1))
        probs[np.arange(len(true)), pred] = 0.6
        return probs

    true = rng.integers(0, k, n)
    t = np.full((k, k), 0.4 / (k - 1))
    np.fill_diagonal(t, 0.6)
    given = apply_transition(true, t, 5)
    truth = float(np.mean(true != given))
    trusted = rng.integers(0, k, 2000)
    est = estimate_noise(teacher(true), given, k, calibration=(teacher(trusted), trusted))
    assert est.method == "calibrated-em" and est.temperature == pytest.approx(1.0, abs=0.1)
    assert est.noise_rate == pytest.approx(truth, abs=0.03)
    # A sharpened copy of the same teacher, calibrated on trusted labels, is un-sharpened again.
    sharp = sharpen(teacher(true), 0.3)
    est = estimate_noise(sharp, given, k, calibration=(sharpen(teacher(trusted), 0.3), trusted))
    assert est.noise_rate == pytest.approx(truth, abs=0.03)


def test_correct_but_underconfident_teacher_is_calibrated_by_the_temperature():
    t, clean, noisy = _known_noise(seed=3)
    rng = np.random.default_rng(7)
    probs = 0.4 * np.eye(4)[clean] + 0.6 * rng.dirichlet(np.ones(4), len(clean))
    est = estimate_noise(probs, noisy, 4)
    assert est.temperature < 1.0  # it sharpens the hesitant teacher (with T fixed by the anchors)
    np.testing.assert_allclose(est.transition, t, atol=0.1)  # 250 anchors per class
    assert est.noise_rate == pytest.approx(np.mean(clean != noisy), abs=0.02)
    # The posterior with the fitted temperature is more often right than at temperature 1.
    post_1 = probs * est.transition[:, noisy].T
    assert (est.posterior.argmax(1) == clean).mean() >= (post_1.argmax(1) == clean).mean()


def test_class_prior_matches_the_label_marginal():
    t = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]])
    pi = np.array([0.5, 0.3, 0.2])
    q = t.T @ pi
    labels = np.repeat(np.arange(3), np.round(q * 100000).astype(int))
    est, _ = class_prior_from_labels(t, labels)
    np.testing.assert_allclose(est, pi, atol=1e-3)


def test_advice_never_uses_a_rate_outside_the_valid_range():
    # The issue-20 case: IPC 1 of a 1257-image, 10-class set reaches the baseline -> bound 0.992 >= 0.9.
    adv = advise_ipc(1257, 10, direct_rate=0.6, results=[(1, 0.62), (10, 0.9)], baseline_accuracy=0.6)
    assert adv.bound.lower_bound == pytest.approx(1 - 10 / 1257)
    assert not adv.bound_used and adv.noise_rate == pytest.approx(0.6) and adv.clipped is None
    text = advice_text(adv)
    assert "not used" in text and "(C-1)/C = 0.900" in text and "IPC <= 50" in text  # 1257 * 0.4 / 10
    # A random subset that also reaches the baseline refutes the corollary's premise.
    adv = advise_ipc(5000, 10, direct_rate=0.6, results=[(10, 0.70), (50, 0.86)], baseline_accuracy=0.85,
                     random_results=[(10, 0.6), (50, 0.855)])
    assert not adv.bound_used and adv.noise_rate == pytest.approx(0.6)
    assert "random subset at IPC 50 also reaches the baseline" in advice_text(adv)
    # A direct rate above the range is clipped to its upper end, and the text says so.
    adv = advise_ipc(5000, 10, direct_rate=0.97)
    assert adv.noise_rate == pytest.approx(max_valid_rate(10)) == pytest.approx(0.9) and adv.clipped == "upper"
    assert "clipped to the upper end of the valid range" in advice_text(adv) and adv.ipc_max == 50
    adv = advise_ipc(5000, 3, direct_rate=-0.01)
    assert adv.noise_rate == 0.0 and adv.clipped == "lower" and "lower end" in advice_text(adv)


def test_estimator_input_checks_and_sharpen():
    with pytest.raises(UserError):
        estimate_noise(np.full((3, 2), 0.5), np.array([0, 1, 2]), 2)
    with pytest.raises(UserError):
        estimate_noise(np.full((3, 2), 0.5), np.array([0, 1]), 2)
    p = np.array([[0.6, 0.4]])
    assert sharpen(p, 1.0) == pytest.approx(p)
    assert sharpen(p, 0.5)[0, 0] == pytest.approx(0.36 / (0.36 + 0.16))
