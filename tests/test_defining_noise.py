"""Noise kinds, each pinned by a value computed outside ddlnl's tables or a property only the
defining step produces: inverse-CDF sampling on hand-made rows; symmetric noise never keeps a
flipped label on its own class and spreads it uniformly; pair-flip goes to the next class; the
PTD flip rate is scipy's truncated normal; PTD labels are Xia et al.'s ``get_instance_noisy_label``
(xiaoboxia/Part-dependent-label-noise ``tools.py``: raw pixel scores ``x @ W[y]``, own class
masked, ``q * softmax`` off the diagonal and ``1 - q`` on it) recomputed from the same draws;
realized statistics on a hand-counted example."""

import numpy as np
import pytest
import torch
from scipy import stats

from ddlnl import noise


def test_inverse_cdf_sampling_on_hand_made_rows():
    probs = np.array([[0.2, 0.0, 0.8]] * 6)
    u = np.array([0.0, 0.1999, 0.2, 0.5, 0.9999, 0.99999999])
    assert noise._sample_from_rows(probs, u).tolist() == [0, 0, 2, 2, 2, 2]  # class 1 (p = 0) never
    # each cumulative row is divided by its total: weights 1 : 3 are probabilities 0.25 : 0.75
    weights = np.array([[1.0, 3.0]] * 4)
    assert noise._sample_from_rows(weights, np.array([0.0, 0.2499, 0.25, 0.9])).tolist() == [0, 0, 1, 1]
    t = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.1, 0.2, 0.7]])
    labels = np.array([0] * 4000 + [1] * 100 + [2] * 4000)
    noisy = noise.apply_transition(labels, t, seed=3)
    assert (noisy[4000:4100] == 2).all()
    got = noise.realized_transition(labels, noisy, 3)
    np.testing.assert_allclose(got, t, atol=0.03)  # binomial sd <= 0.008 at n = 4000


def test_symmetric_noise_flips_uniformly_to_the_other_classes():
    k, rate, n = 4, 0.6, 6000
    labels = np.repeat(np.arange(k), n // k)
    noisy = noise.apply_transition(labels, noise.symmetric_matrix(k, rate), seed=0)
    t = noise.realized_transition(labels, noisy, k)
    assert np.diag(t) == pytest.approx([1 - rate] * k, abs=0.04)
    off = t[~np.eye(k, dtype=bool)]
    assert off == pytest.approx([rate / (k - 1)] * (k * (k - 1)), abs=0.04)
    inclusive = noise.symmetric_matrix(k, rate, inclusive=True)
    assert np.diag(inclusive) == pytest.approx([1 - rate + rate / k] * k)
    with pytest.raises(noise.UserError):
        noise.symmetric_matrix(k, (k - 1) / k)


def test_pairflip_goes_to_the_next_class_cyclically():
    t = noise.pairflip_matrix(3, 0.3)
    np.testing.assert_allclose(t, [[0.7, 0.3, 0.0], [0.0, 0.7, 0.3], [0.3, 0.0, 0.7]])


def test_realized_statistics_on_a_hand_counted_example():
    clean = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    noisy = np.array([0, 1, 1, 0, 1, 2, 2, 2])
    assert noise.realized_noise_rate(clean, noisy) == pytest.approx(3 / 8)
    np.testing.assert_allclose(noise.realized_transition(clean, noisy, 3),
                               [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.4])
def test_ptd_flip_rate_is_scipys_truncated_normal(rate):
    dist = stats.truncnorm((0 - rate) / 0.1, (1 - rate) / 0.1, loc=rate, scale=0.1)
    assert noise.truncated_normal_mean(rate, 0.1) == pytest.approx(dist.mean(), rel=1e-9)
    draws = noise._truncated_normal(np.random.default_rng(0), rate, 0.1, 0.0, 1.0, 4000)
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    assert stats.kstest(draws, dist.cdf).pvalue > 1e-3


class _Recorder:
    """A numpy Generator that remembers what it drew (to feed the same draws to a reference)."""

    def __init__(self, seed):
        self._rng, self.log = np.random.Generator(np.random.PCG64(seed)), []

    def __getattr__(self, name):
        fn = getattr(self._rng, name)

        def call(*a, **k):
            out = fn(*a, **k)
            self.log.append((name, np.array(out, copy=True)))
            return out

        return call


def _xia_reference(images, labels, flip_rates, w, uniforms):
    """get_instance_noisy_label, given its draws: W[y] is D x K, x the raw flattened image."""
    out = []
    for x, y, q, u in zip(images.reshape(len(images), -1).astype(np.float64), labels, flip_rates, uniforms):
        a = x @ w[y].astype(np.float64)
        a[y] = -np.inf
        a = np.exp(a - a.max())
        p = q * a / a.sum()
        p[y] += 1 - q
        out.append(int((np.cumsum(p) / p.sum() <= u).sum()))  # np.random.choice(l, p=P[i]) with uniform u
    return np.array(out)


def test_ptd_is_xia_et_al_on_raw_pixels(monkeypatch):
    g = torch.Generator().manual_seed(0)
    k, n = 4, 40
    images = torch.randint(0, 256, (n, 1, 3, 3), generator=g).float()  # raw pixel values
    labels = np.repeat(np.arange(k), n // k)
    recorders = []

    def default_rng(seed):
        recorders.append(_Recorder(seed))
        return recorders[-1]

    monkeypatch.setattr(noise.np.random, "default_rng", default_rng)
    noisy = noise.instance_dependent_labels(images, labels, 0.4, seed=1, num_classes=k)
    log = recorders[0].log
    normals = [v for name, v in log if name == "normal"]
    flip_rates = normals[0]
    for extra in normals[1:]:  # rejection rounds replace the out-of-range draws, in order
        bad = (flip_rates < 0) | (flip_rates > 1)
        flip_rates[bad] = extra
    w = [v for name, v in log if name == "standard_normal"]
    uniforms = next(v for name, v in log if name == "random")
    assert len(w) == k and w[0].shape == (9, k)
    expected = _xia_reference(images.numpy(), labels, flip_rates, w, uniforms)
    assert noisy.tolist() == expected.tolist()
    assert (noisy != labels).mean() > 0.2


def test_ptd_rate_zero_keeps_the_labels_and_flips_depend_on_the_image():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (400, 1, 4, 4), generator=g).float()
    labels = np.repeat(np.arange(4), 100)
    assert noise.instance_dependent_labels(images, labels, 0.0, seed=0, num_classes=4).tolist() == labels.tolist()
    noisy = noise.instance_dependent_labels(images, labels, 0.4, seed=0, num_classes=4)
    assert (noisy != labels).mean() == pytest.approx(noise.truncated_normal_mean(0.4, 0.1), abs=0.08)
    # Same draws, other images: other flips (the flip direction depends on the instance).
    other = noise.instance_dependent_labels(images.flip(-1), labels, 0.4, seed=0, num_classes=4)
    assert (other != noisy).any()


def test_each_refused_rate_is_one_line_naming_the_kind_the_limit_and_why(caplog):
    # Bad input is one clear line that names the problem and the limit: pinned word for word.
    import re

    from ddlnl.errors import UserError
    from ddlnl.noise import asymmetric_map, asymmetric_matrix, pairflip_matrix, symmetric_matrix

    cases = [
        (lambda: symmetric_matrix(10, 1.0, inclusive=True), "symmetric-inclusive noise: rate must be < 1, got 1"),
        (lambda: symmetric_matrix(10, 0.9),
         "symmetric noise with K=10: rate must be < 0.9, got 0.9 (at (K-1)/K the clean class is no longer the "
         "most likely label: not identifiable)"),
        (lambda: pairflip_matrix(10, 0.5),
         "pairflip noise: rate must be < 0.5, got 0.5 (from 0.5 on the flipped class dominates)"),
        (lambda: asymmetric_matrix("cifar10", 10, 1.0), "asymmetric noise: rate must be < 1, got 1"),
        (lambda: asymmetric_map("svhn", 10),
         "no asymmetric map for svhn; use symmetric or pairflip, or a dataset with a map "
         "(cifar10, cifar100, digits, fashion-mnist, mnist)"),
        (lambda: asymmetric_map("cifar10", 100), "the asymmetric map for cifar10 is for 10 classes, got 100"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match="^" + re.escape(message) + "$"):
            call()
    with caplog.at_level("WARNING"):
        asymmetric_matrix("cifar10", 10, 0.6)
    assert "warning: asymmetric noise 0.6 >= 0.5 on cifar10: the clean label is no longer the majority label " \
           "of the 5 mapped classes" in caplog.text


def test_ptd_on_normalised_images_scores_the_raw_pixels_they_came_from():
    # make_noise passes normalised images with their (mean, std): PTD must see 0..255 pixels again.
    g = torch.Generator().manual_seed(2)
    raw = torch.randint(0, 256, (60, 3, 2, 2), generator=g).double()
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    normalised = ((raw / 255.0 - m) / s).float()
    back = noise._raw_pixels(normalised, (mean, std))
    assert torch.allclose(back, raw, atol=1e-3)
    labels = np.repeat(np.arange(3), 20)
    p_raw = noise.instance_flip_probabilities(raw, labels, 0.3, seed=4, num_classes=3)
    p_norm = noise.instance_flip_probabilities(normalised, labels, 0.3, seed=4, num_classes=3,
                                               normalization=(mean, std))
    np.testing.assert_allclose(p_norm, p_raw, rtol=1e-3, atol=1e-12)


def test_realized_statistics_edge_cases_and_their_messages():
    import re

    from ddlnl.errors import DataError

    # a class with a single sample still has its measured row; a class with none an all-zero row
    t = noise.realized_transition(np.array([0, 0, 1]), np.array([0, 1, 2]), 3)
    np.testing.assert_allclose(t, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert noise.realized_noise_rate(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0.0
    for fn in (noise.realized_transition, noise.realized_noise_rate):
        args = (3,) if fn is noise.realized_transition else ()
        for which, clean, noisy in (("clean", [[0, 1]], [0, 1]), ("noisy", [0, 1], [[0, 1]])):
            msg = f"{which} labels must be a 1-D array of class indices, got shape (1, 2)"
            with pytest.raises(DataError, match="^" + re.escape(msg) + "$"):
                fn(np.array(clean), np.array(noisy), *args)
    for which, clean, noisy in (("clean", [0, 5], [0, 1]), ("noisy", [0, 1], [0, 7])):
        bad = max(clean + noisy)
        msg = f"{which} labels must lie in [0, 2], found 0..{bad}"
        with pytest.raises(DataError, match="^" + re.escape(msg) + "$"):
            noise.realized_transition(np.array(clean), np.array(noisy), 3)


def test_ptd_flips_a_single_sample_too():
    images = torch.randint(0, 256, (1, 1, 3, 3), generator=torch.Generator().manual_seed(0)).float()
    flipped = [int(noise.instance_dependent_labels(images, np.array([1]), 0.9, seed=s, num_classes=3)[0]) != 1
               for s in range(20)]
    assert sum(flipped) >= 10  # flip rate ~ 0.9
