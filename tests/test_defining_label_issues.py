"""The label-issue finder's defining steps, recomputed by hand on tiny cases:

- Bayes with the sample's own label: ``posterior[n, j] ∝ prior[n, j] T[j, y_n]``; the suggestion
  is its argmax, the quality ``posterior[n, y_n]`` (or ``prior[n, y_n]`` for self-confidence);
- the prior mixes the calibrated teachers with the *deconvolved* vote, ``(1 - w) r + w p``;
- the neighbour vote: the given labels of the ``k`` most cosine-similar OTHER samples;
- the count threshold: the midpoint between the ``m``-th and ``(m + 1)``-th lowest quality of a
  given class, ``m`` its expected number of wrong labels; flags are ``quality < threshold``;
- the deconvolved vote is the maximum-likelihood true-class distribution on the simplex (checked
  against a linear solve and a brute-force grid), by EM stopped at ``tol``;
- ``per-class`` is cleanlab's confident learning (thresholds and flags against cleanlab itself,
  at the ``1e-6`` tolerance and with one or several confident classes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddlnl.estimate import NoiseEstimate
from ddlnl.label_issues import IssuesConfig, _count_thresholds, deconvolve_votes, find_issues, neighbour_votes

T = np.array([[0.7, 0.2, 0.1],
              [0.1, 0.8, 0.1],
              [0.3, 0.0, 0.7]])
P = np.array([[0.6, 0.3, 0.1],
              [0.2, 0.5, 0.3],
              [0.1, 0.1, 0.8],
              [0.5, 0.4, 0.1]])
Y = np.array([1, 1, 0, 2])


def fixed_estimate(temperature: float = 1.0) -> NoiseEstimate:
    return NoiseEstimate(transition=T, noise_rate=0.3, class_prior=np.full(3, 1 / 3), posterior=P,
                         temperature=temperature, log_likelihood=0.0, iterations=0)


def bayes_by_hand(prior: np.ndarray) -> np.ndarray:
    out = np.zeros_like(prior)
    for n in range(len(Y)):
        for j in range(3):
            out[n, j] = prior[n, j] * T[j, Y[n]]
        out[n] /= out[n].sum()
    return out


@pytest.mark.parametrize("score", ["posterior", "self-confidence"])
def test_teachers_only_posterior_suggestion_and_quality_are_bayes_by_hand(score):
    res = find_issues(P, Y, 3, IssuesConfig(neighbours=0, threshold=0.4, score=score), estimate=fixed_estimate())
    post = bayes_by_hand(P)
    np.testing.assert_allclose(res.posterior, post, rtol=1e-12)
    np.testing.assert_array_equal(res.suggested, post.argmax(axis=1))
    quality = (post if score == "posterior" else P)[np.arange(4), Y]
    np.testing.assert_allclose(res.quality, quality, rtol=1e-12)
    np.testing.assert_array_equal(res.is_issue, quality < 0.4)
    np.testing.assert_allclose(res.pred_probs, P)
    assert res.noise_rate == 0.3 and res.transition is T


def test_teachers_are_calibrated_by_the_fitted_temperature():
    res = find_issues(P, Y, 3, IssuesConfig(neighbours=0, threshold=0.4), estimate=fixed_estimate(0.5))
    sharp = P ** 2 / (P ** 2).sum(axis=1, keepdims=True)  # p^(1/t) renormalised, t = 0.5
    np.testing.assert_allclose(res.pred_probs, sharp, rtol=1e-9)
    np.testing.assert_allclose(res.posterior, bayes_by_hand(sharp), rtol=1e-9)


def test_the_prior_mixes_the_teachers_with_the_deconvolved_vote():
    # Exact votes of the true classes (v = T[c]) deconvolve to e_c.
    true = np.array([0, 1, 2, 0])
    votes = T[true]
    np.testing.assert_allclose(deconvolve_votes(votes, T), np.eye(3)[true], atol=5e-3)
    w = 0.25
    res = find_issues(P, Y, 3, IssuesConfig(neighbours=5, teacher_weight=w, threshold=0.4), votes=votes,
                      estimate=fixed_estimate())
    prior = (1 - w) * deconvolve_votes(votes, T) + w * P
    np.testing.assert_allclose(res.pred_probs, prior, rtol=1e-12)
    np.testing.assert_allclose(res.posterior, bayes_by_hand(prior), rtol=1e-12)


def test_neighbour_vote_counts_the_labels_of_the_k_most_similar_other_samples():
    # 2-D features, cosine similarity after centring (embed_dim 0: no PCA); mean is (0, 0) here.
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, -0.1], [-1.0, 0.0], [-0.9, -0.2], [0.0, 1.0], [0.0, -1.0]])
    labels = np.array([0, 1, 1, 2, 2, 0, 1])
    z = f - f.mean(0)
    z = z / z.norm(dim=1, keepdim=True)
    sim = (z @ z.T).numpy()
    np.fill_diagonal(sim, -np.inf)
    for k in (1, 2, 3):
        expected = np.zeros((7, 3))
        for n in range(7):
            for m in np.argsort(-sim[n], kind="stable")[:k]:
                expected[n, labels[m]] += 1 / k
        np.testing.assert_allclose(neighbour_votes(f, labels, 3, k, embed_dim=0), expected, atol=1e-12)


def test_count_thresholds_flag_the_m_lowest_of_each_given_class():
    quality = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.6])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    th = _count_thresholds(quality, labels, np.array([2.2, 0.0, 1.0]), 3)
    # class 0 sorted 0.1 0.3 0.5 0.9, m = 2 -> (0.3 + 0.5) / 2; class 1 m = 0 -> its lowest, 0.2
    # (strict "<" flags nothing); class 2 m = all -> just above its only quality.
    assert th[0] == pytest.approx(0.4) and th[1] == pytest.approx(0.2) and th[2] > 0.6
    flags = quality < th[labels]
    assert flags.tolist() == [False, True, False, True, False, False, False, True]
    # ties at the cut: the threshold is the tied value, so neither tied sample is flagged
    th = _count_thresholds(np.array([0.1, 0.3, 0.3, 0.9]), np.zeros(4, dtype=int), np.array([2.0]), 1)
    assert th[0] == pytest.approx(0.3)


def test_neighbour_vote_in_chunks_caps_k_and_refuses_one_sample():
    from ddlnl.errors import UserError

    g = torch.Generator().manual_seed(3)
    f = torch.randn(11, 4, generator=g)
    labels = np.arange(11) % 3
    whole = neighbour_votes(f, labels, 3, 4, embed_dim=0)
    np.testing.assert_allclose(neighbour_votes(f, labels, 3, 4, embed_dim=0, chunk=3), whole)
    # k beyond N - 1: every other sample votes once
    everyone = neighbour_votes(f, labels, 3, 50, embed_dim=0)
    expected = np.stack([np.bincount(np.delete(labels, n), minlength=3) / 10 for n in range(11)])
    np.testing.assert_allclose(everyone, expected)
    with pytest.raises(UserError, match="^the neighbour vote needs at least 2 samples$"):
        neighbour_votes(f[:1], labels[:1], 3, 4, embed_dim=0)
    assert neighbour_votes(f[:2], labels[:2], 3, 4, embed_dim=0).tolist() == [[0, 1, 0], [1, 0, 0]]


# ---------------------------------------------------------------------------------------------
# The deconvolution is the maximum-likelihood true-class distribution (EM, stopped at tol)
# ---------------------------------------------------------------------------------------------


def test_deconvolved_vote_solves_v_equals_T_transpose_r_where_a_solution_exists():
    # A vote that is exactly T^T r for an interior r: the likelihood's maximum is that r, which the
    # linear solve finds independently of the EM.
    r = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2], [0.05, 0.05, 0.9]])
    v = r @ T
    solved = np.linalg.solve(T.T, v.T).T
    np.testing.assert_allclose(solved, r, atol=1e-12)
    np.testing.assert_allclose(deconvolve_votes(v, T), solved, atol=1e-4)
    np.testing.assert_allclose(deconvolve_votes(v, T, tol=1e-11, max_iter=5000), solved, atol=1e-7)


def test_deconvolved_vote_maximises_the_likelihood_on_the_simplex():
    # Votes no r reproduces (outside T^T of the simplex): the EM's answer is at least as likely
    # as every point of a fine grid of the simplex (brute force, no EM).
    votes = np.array([[0.1, 0.8, 0.1], [0.6, 0.1, 0.3], [0.0, 0.1, 0.9]])
    step = 0.005
    a, b = np.meshgrid(np.arange(0, 1 + step / 2, step), np.arange(0, 1 + step / 2, step))
    grid = np.stack([a.ravel(), b.ravel(), 1 - a.ravel() - b.ravel()], axis=1)
    grid = grid[grid[:, 2] >= -1e-12].clip(0, 1)
    loglik = lambda r, v: (v * np.log(np.maximum(r @ T, 1e-300))).sum(axis=-1)  # noqa: E731
    out = deconvolve_votes(votes, T, tol=1e-10, max_iter=20000)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    for n, v in enumerate(votes):
        best = loglik(grid, v).max()
        assert loglik(out[n], v) >= best - 1e-9


def test_a_loose_tolerance_stops_after_one_em_step():
    # tol 0.5: the first update moves no entry by 0.5, so the result is one EM step from the uniform
    # start, r_j ∝ (1/K) sum_i v_i T[j, i] / (T^T u)_i, written out here term by term.
    votes = np.array([[0.1, 0.8, 0.1], [0.6, 0.1, 0.3]])
    expected = np.zeros((2, 3))
    for n in range(2):
        model = [sum(T[j, i] / 3 for j in range(3)) for i in range(3)]
        for j in range(3):
            expected[n, j] = sum(votes[n, i] * T[j, i] / model[i] for i in range(3)) / 3
        expected[n] /= expected[n].sum()
    np.testing.assert_allclose(deconvolve_votes(votes, T, tol=0.5), expected, rtol=1e-12)
    np.testing.assert_allclose(deconvolve_votes(votes, T, max_iter=1), expected, rtol=1e-12)
    # ... and the default tolerance goes on to the maximum (far from one step here)
    assert np.abs(deconvolve_votes(votes, T) - expected).max() > 0.2


# ---------------------------------------------------------------------------------------------
# Count thresholds at their edges; the posterior where the given label is (almost) impossible
# ---------------------------------------------------------------------------------------------


def test_count_threshold_of_one_flag_is_the_midpoint_and_an_empty_class_flags_nothing():
    quality = np.array([0.2, 0.6, 0.9, 0.4])
    labels = np.array([0, 0, 0, 1])
    th = _count_thresholds(quality, labels, np.array([1.0, 0.0, 3.0]), 3)
    assert th[0] == pytest.approx(0.4)  # m = 1: between the lowest (0.2) and the next (0.6)
    # class 2 carries no sample: its threshold is a number that no quality in [0, 1] is below
    assert np.isfinite(th[2]) and not np.any(np.linspace(0, 1, 101) < th[2])


def test_a_class_expected_to_hold_no_wrong_label_has_nothing_flagged():
    # Noise-free transition: every class expects 0 wrong labels, so the strict "<" against the
    # class's lowest quality flags none (ties with the threshold are not flagged).
    t = np.eye(3)
    est = NoiseEstimate(transition=t, noise_rate=0.0, class_prior=np.full(3, 1 / 3), posterior=P,
                        temperature=1.0, log_likelihood=0.0, iterations=0)
    for score in ("posterior", "self-confidence"):
        res = find_issues(P, Y, 3, IssuesConfig(neighbours=0, score=score), estimate=est)
        np.testing.assert_allclose(est.expected_wrong_per_class(Y), 0.0)
        assert not res.is_issue.any()


def test_posterior_falls_back_to_the_prior_when_the_given_label_is_impossible():
    # Block transition (classes 0 and 1 never become 2 and back), the vote alone (teacher_weight 0)
    # all for label 2, so the prior is e_2: a given label 0 then has zero evidence, and the
    # posterior is the prior (suggestion 2), not a row of zeros.
    t = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    est = NoiseEstimate(transition=t, noise_rate=0.0, class_prior=np.full(3, 1 / 3), posterior=P[:2],
                        temperature=1.0, log_likelihood=0.0, iterations=0)
    votes = np.array([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    res = find_issues(P[:2], np.array([0, 0]), 3, IssuesConfig(neighbours=5, teacher_weight=0.0, threshold=0.4),
                      votes=votes, estimate=est)
    np.testing.assert_array_equal(res.pred_probs[0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(res.posterior[0], [0.0, 0.0, 1.0])
    assert res.suggested[0] == 2 and res.quality[0] == 0.0 and res.is_issue[0]
    np.testing.assert_allclose(res.posterior[1], [0.5, 0.5, 0.0])


def test_posterior_is_normalised_however_small_the_given_labels_evidence():
    # The given label's evidence is 0.15 * 1e-299 = 1.5e-300: still a distribution after Bayes.
    t = np.array([[1.0, 0.0], [1.0, 1e-299]])
    est = NoiseEstimate(transition=t, noise_rate=0.0, class_prior=np.full(2, 0.5), posterior=np.eye(2),
                        temperature=1.0, log_likelihood=0.0, iterations=0)
    res = find_issues(np.array([[0.85, 0.15]]), np.array([1]), 2, IssuesConfig(neighbours=0, threshold=0.4),
                      estimate=est)
    np.testing.assert_allclose(res.posterior, [[0.0, 1.0]], atol=1e-12)


def test_summary_names_the_route_and_the_configuration_it_scored_with():
    import json
    from dataclasses import asdict

    cfg = IssuesConfig(neighbours=0, threshold=0.4, score="self-confidence")
    summary = find_issues(P, Y, 3, cfg, estimate=fixed_estimate()).summary()
    assert summary["method"] == "ddlnl" and summary["issues_config"] == asdict(cfg)
    json.dumps(summary, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# cleanlab's confident-learning rule at its boundaries (cleanlab itself is the reference)
# ---------------------------------------------------------------------------------------------


def test_confident_thresholds_are_cleanlabs_with_absent_and_single_classes():
    from ddlnl.label_issues import confident_learning_issues

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 12)
    for labels in (np.array([0, 1] * 6), np.zeros(12, dtype=np.int64)):  # class 2 absent; only class 0
        _, th = confident_learning_issues(probs, labels, 3)
        by_hand = [probs[labels == j, j].mean() if np.any(labels == j) else 2.0 for j in range(3)]
        np.testing.assert_allclose(th, by_hand, rtol=1e-12)  # 2.0: cleanlab's value no probability reaches
        count = pytest.importorskip("cleanlab.count")
        np.testing.assert_allclose(th, count.get_confident_thresholds(labels, probs), rtol=1e-12)


def test_confident_learning_at_the_tolerance_and_with_one_or_two_confident_classes():
    from ddlnl.label_issues import confident_learning_issues

    e = 1e-6
    probs = np.array([
        [0.5, 0.1, 0.4],                 # label 0
        [0.5, 0.1, 0.4],                 # label 0: t0 = 0.5 exactly
        [0.5 - e, 0.3, 0.2 + e],         # label 1
        [0.5 - 1.5 * e, 0.1, 0.4 + 1.5 * e],  # label 2
        [0.45, 0.3, 0.25],               # label 1: t1 = 0.3
        [0.1, 0.6, 0.3],                 # label 2
        [0.0, 0.32, 0.68],               # label 2: t2 = (0.4 + 1.5e-6 + 0.3 + 0.68) / 3 = 0.46
    ])
    labels = np.array([0, 0, 1, 2, 1, 2, 2])
    flags, th = confident_learning_issues(probs, labels, 3)
    np.testing.assert_allclose(th, [0.5, 0.3, 0.46 + 0.5 * e], rtol=1e-12)
    # by hand, "confident in j" = p[n, j] >= t_j - 1e-6; one confident class: that one; several: the argmax:
    # 2: p0 = t0 - 1e-6 is confident (the tolerance), p1 = t1 too: two -> argmax 0 != 1: an issue
    # 3: p0 = t0 - 1.5e-6 is beyond the tolerance, p2 < t2: confident in none: not an issue
    # 4: confident in 1 only (p0 = 0.45 < t0) although its argmax is 0 -> its label: not an issue
    # 5: confident in 1 only -> 1 != 2: an issue
    # 6: confident in 1 and 2 -> the argmax 2 (not the first confident class, 1): its label, not an issue
    assert flags.tolist() == [False, False, True, False, False, True, False]
    filt = pytest.importorskip("cleanlab.filter")
    np.testing.assert_array_equal(flags, filt.find_label_issues(labels, probs, filter_by="confident_learning",
                                                                n_jobs=1))
