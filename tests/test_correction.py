"""The structured-noise remedy (ddlnl.correction): with the true T, a class mean blended by
asymmetric noise is turned back toward the clean one; DM with the remedy moves its synthetic
images toward the clean class; methods without it refuse the option."""

import numpy as np
import pytest
import torch

from ddlnl.correction import NoiseModel, given_posterior, true_noise_model, unmix_means, unmixing_matrix
from ddlnl.data import LabeledTensors
from ddlnl.errors import ConfigError, UserError
from ddlnl.methods import dm, method_config
from ddlnl.methods.dm import DMConfig
from ddlnl.noise import apply_transition


def _asym_T(k, rate, pairs):
    t = np.eye(k)
    for src, dst in pairs:
        t[src, src], t[src, dst] = 1 - rate, rate
    return t


def test_given_posterior_is_bayes_rule_on_a_hand_case():
    # Two equally frequent classes, 0 -> 1 at 0.4: given 1 = 1 true-1 sample per 0.4 true-0 ones.
    m = NoiseModel(_asym_T(2, 0.4, [(0, 1)]), np.array([0.5, 0.5]), "true")
    a = given_posterior(m)
    np.testing.assert_allclose(a, [[1.0, 0.0], [0.4 / 1.4, 1.0 / 1.4]])
    np.testing.assert_allclose(unmixing_matrix(m) @ a, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(unmixing_matrix(m).sum(1), 1.0)  # affine blends of given means


def test_true_T_turns_asymmetric_noise_class_means_back_to_the_clean_ones():
    rng = np.random.default_rng(0)
    k, n, d = 4, 3000, 16
    centres = rng.normal(size=(k, d)) * 3
    clean = np.repeat(np.arange(k), n)
    x = centres[clean] + rng.normal(size=(k * n, d))
    t = _asym_T(k, 0.4, [(0, 1), (2, 3), (3, 2)])  # a flip and a swap
    noisy = apply_transition(clean, t, seed=1)
    given = torch.tensor(np.stack([x[noisy == y].mean(0) for y in range(k)]))
    clean_means = torch.tensor(np.stack([x[clean == c].mean(0) for c in range(k)]))
    from ddlnl.noise import realized_transition

    # The realized T, as noise_correction=true uses: with the generating T the realized flip share
    # differs by ~1/sqrt(n), and that error, times the distance between the two clean means, is
    # what would remain.
    model = NoiseModel(realized_transition(clean, noisy, k), np.full(k, 1 / k), "true")
    fixed = unmix_means(given, unmixing_matrix(model))
    before = (given - clean_means).norm(dim=1)
    after = (fixed - clean_means).norm(dim=1)
    for c in (1, 2, 3):  # the blended classes: the blend is large, and the correction removes it
        assert before[c] > 2.0
        assert after[c] < 0.1 * before[c]


def test_near_singular_T_is_refused_with_one_line():
    m = NoiseModel(_asym_T(2, 0.49, [(0, 1), (1, 0)]), np.array([0.5, 0.5]), "true")
    with pytest.raises(UserError, match="noise_correction=none"):
        unmixing_matrix(m)


def test_true_noise_model_reads_realized_T_and_clean_prior():
    from ddlnl.noise import NoiseSpec, NoisyLabels, realized_transition

    clean = torch.tensor([0, 0, 0, 1, 1, 1])
    noisy = torch.tensor([0, 1, 0, 1, 1, 1])
    nl = NoisyLabels(noisy=noisy, clean=clean, spec=NoiseSpec("symmetric", rate=0.1), seed=0, transition_true=None,
                     realized_rate=1 / 6, realized_T=realized_transition(clean, noisy, 3))
    m = true_noise_model(nl)
    np.testing.assert_allclose(m.class_prior, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(m.transition[0], [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(m.transition[2], [0, 0, 1])  # a class without samples: identity row


def _two_pattern_data(seed=0, n=120, rate=0.4):
    """Three classes of 1x8x8 images: bright left half, bright right half, bright top; class 0 is
    labelled 1 with probability ``rate``."""
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(3, 1, 8, 8)
    base[0, :, :, :4] = 1.0
    base[1, :, :, 4:] = 1.0
    base[2, :, :4, :] = 1.0
    clean = torch.arange(3).repeat_interleave(n)
    images = base[clean] + 0.3 * torch.randn(3 * n, 1, 8, 8, generator=g)
    t = _asym_T(3, rate, [(0, 1)])
    noisy = torch.as_tensor(apply_transition(clean.numpy(), t, seed=seed))
    return images, clean, noisy, t


def test_dm_with_true_T_matches_each_class_to_its_clean_embedding_mean(monkeypatch):
    """DM's matching target of the blended class under the remedy is the clean class's mean
    embedding (under that iteration's network), not the given class's blend."""
    import copy

    from ddlnl.noise import realized_transition

    images, clean, noisy, _ = _two_pattern_data(n=600)
    train = LabeledTensors(images, noisy)
    prior = np.bincount(clean.numpy(), minlength=3) / len(clean)
    model = NoiseModel(realized_transition(clean, noisy, 3), prior, "true")
    nets, targets = [], []
    real_reinit, real_unmix = dm.reinitialize_, dm.unmix_means

    def spy_reinit(net, *a, **k):
        out = real_reinit(net, *a, **k)
        nets.append(copy.deepcopy(net))
        return out

    def spy_unmix(means, b):
        out = real_unmix(means, b)
        targets.append(out.detach().clone())
        return out

    monkeypatch.setattr(dm, "reinitialize_", spy_reinit)
    monkeypatch.setattr(dm, "unmix_means", spy_unmix)
    # batch_real above every class size: each iteration sees whole classes; no augmentation.
    cfg = DMConfig(iterations=2, batch_real=1000, width=8, dsa_strategy="", noise_correction="true")
    dm.distill(train, 2, cfg, seed=0, num_classes=3, noise_model=model)
    assert len(targets) == 2
    for net, target in zip(nets, targets):
        with torch.no_grad():
            clean_means = torch.stack([net.embed(images[clean == c]).mean(0) for c in range(3)])
            given_means = torch.stack([net.embed(images[noisy == c]).mean(0) for c in range(3)])
        before = (given_means[1] - clean_means[1]).norm()
        after = (target[1] - clean_means[1]).norm()
        # The flips do blend class 1: ~29% of its given samples are class 0's.
        assert before > 0.2 * (clean_means[0] - clean_means[1]).norm()
        # Exact in expectation; what is left is the sampling error of the flipped samples' mean.
        assert after < 0.25 * before
        # Nothing is flipped into class 0: its target is its given mean.
        torch.testing.assert_close(target[0], given_means[0], rtol=1e-4, atol=1e-5)


def test_dm_correction_needs_a_noise_model():
    images, _, noisy, _ = _two_pattern_data(n=20)
    with pytest.raises(ConfigError, match="needs a noise model"):
        dm.distill(LabeledTensors(images, noisy), 2, DMConfig(iterations=1, width=8, noise_correction="true"),
                   seed=0, num_classes=3)


def test_default_off_and_unsupported_methods_refuse():
    assert DMConfig().noise_correction == "none"
    assert method_config("dm", overrides=["noise_correction=estimated"]).noise_correction == "estimated"
    with pytest.raises(ConfigError, match="noise_correction"):
        method_config("dm", overrides=["noise_correction=maybe"])
    for name in ("datm", "rcig", "dance", "random"):
        with pytest.raises(ConfigError, match=f"{name} does not support noise_correction"):
            method_config(name, overrides=["noise_correction=true"])


def test_run_refuses_correction_for_unsupported_method_and_runs_the_oracle(tmp_path, capsys):
    import json

    from ddlnl.cli import main
    from test_cli import TINY, _error_line

    out = tmp_path / "true"
    assert main(["run", "--out", str(out), "--methods", "dm", "--noise", "pairflip:0.3", *TINY,
                 "--set", "dm.noise_correction=true"]) == 0
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert all(c["config"]["method"]["noise_correction"] == "true" for c in cells if c["cell"]["method"] == "dm")
    capsys.readouterr()
    assert main(["run", "--out", str(tmp_path / "x"), "--methods", "datm", *TINY,
                 "--set", "datm.noise_correction=true"]) == 2
    assert "datm does not support noise_correction" in _error_line(capsys)


@pytest.mark.slow
def test_run_with_noise_correction_both_sources(tmp_path, capsys):
    """``ddlnl run --set dm.noise_correction=...``: the oracle and the estimated route distil and
    record their T (~70 s: the estimated route needs teachers trained long enough)."""
    import json

    from ddlnl.cli import main
    from test_cli import TINY

    for source in ("true", "estimated"):
        out = tmp_path / source
        # Teachers good enough for an invertible estimate: more DM iterations and training epochs.
        argv = ["run", "--out", str(out), "--methods", "dm", "--noise", "pairflip:0.3", *TINY,
                "--set", "dm.iterations=20", "--set", "train.epochs=300", "--set", f"dm.noise_correction={source}"]
        assert main(argv) == 0
        cells = json.loads((out / "results.json").read_text())["cells"]
        dm_cells = [c for c in cells if c["cell"]["method"] == "dm"]
        assert dm_cells and all(c["config"]["method"]["noise_correction"] == source for c in dm_cells)
    from ddlnl.synthetic import load_synthetic

    syn = load_synthetic(tmp_path / "estimated" / "synthetic" / "dm-ipc1.safetensors")
    assert syn.meta["noise_model"]["source"] == "estimated"
