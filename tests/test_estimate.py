"""The study's corollaries on hand-checked numbers, and the direct (EM) noise estimator."""

from __future__ import annotations

import numpy as np
import pytest

from ddlnl.errors import UserError
from ddlnl.estimate import (advice_text, advise_ipc, estimate_noise, ipc_upper_bound, noise_rate_lower_bound,
                            sharpen)
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
    # The bound (0.9) exceeds the direct estimate (0.6), so the advice uses 0.9: IPC <= 5000*0.1/10 = 50.
    adv = advise_ipc(5000, 10, direct_rate=0.6, results=[(10, 0.70), (50, 0.86), (100, 0.90)], baseline_accuracy=0.85)
    assert adv.noise_rate == pytest.approx(0.9) and adv.ipc_max == 50 and adv.best_tried == 50
    text = advice_text(adv)
    assert "0.900" in text and "IPC <= 50" in text and "1 - 10*50/5000" in text
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
    est = estimate_noise(np.eye(4)[clean], noisy, 4)
    realized = realized_transition(clean, noisy, 4)
    np.testing.assert_allclose(est.transition, realized, atol=1e-6)
    np.testing.assert_allclose(est.transition, t, atol=0.02)  # binomial error at ~5000 per class
    assert est.noise_rate == pytest.approx(np.mean(clean != noisy), abs=1e-6)
    np.testing.assert_allclose(est.transition.sum(axis=1), 1.0)
    np.testing.assert_allclose(est.posterior[np.arange(len(clean)), clean], 1.0, atol=1e-6)


def test_correct_but_underconfident_teacher_is_calibrated_by_the_temperature():
    t, clean, noisy = _known_noise(seed=3)
    rng = np.random.default_rng(7)
    probs = 0.4 * np.eye(4)[clean] + 0.6 * rng.dirichlet(np.ones(4), len(clean))
    est = estimate_noise(probs, noisy, 4)
    assert est.temperature < 1.0  # it sharpens the hesitant teacher
    np.testing.assert_allclose(est.transition, t, atol=0.05)
    assert est.noise_rate == pytest.approx(np.mean(clean != noisy), abs=0.02)
    # Fixing the temperature at 1 trusts the hesitant probabilities and misreads the noise.
    truth = np.mean(clean != noisy)
    assert abs(estimate_noise(probs, noisy, 4, temperature=1.0).noise_rate - truth) > abs(est.noise_rate - truth) + 0.05


def test_estimator_input_checks_and_sharpen():
    with pytest.raises(UserError):
        estimate_noise(np.full((3, 2), 0.5), np.array([0, 1, 2]), 2)
    with pytest.raises(UserError):
        estimate_noise(np.full((3, 2), 0.5), np.array([0, 1]), 2)
    p = np.array([[0.6, 0.4]])
    assert sharpen(p, 1.0) == pytest.approx(p)
    assert sharpen(p, 0.5)[0, 0] == pytest.approx(0.36 / (0.36 + 0.16))
