"""The label-issue finder's defining steps, recomputed by hand on tiny cases:

- Bayes with the sample's own label: ``posterior[n, j] ∝ prior[n, j] T[j, y_n]``; the suggestion
  is its argmax, the quality ``posterior[n, y_n]`` (or ``prior[n, y_n]`` for self-confidence);
- the prior mixes the calibrated teachers with the *deconvolved* vote, ``(1 - w) r + w p``;
- the neighbour vote: the given labels of the ``k`` most cosine-similar OTHER samples;
- the count threshold: the midpoint between the ``m``-th and ``(m + 1)``-th lowest quality of a
  given class, ``m`` its expected number of wrong labels; flags are ``quality < threshold``.
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
