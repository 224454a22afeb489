"""The structured-noise remedy (ddlnl.correction): with the true T, a class mean blended by
asymmetric noise is turned back toward the clean one; DM and DANCE with the remedy match each class
to its clean embedding mean (DANCE's calibration targets the rows of T); DATM's experts train on the
forward-corrected loss; methods without it refuse the option."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
    for name in ("dance", "datm", "rcig"):
        assert method_config(name).noise_correction == "none"
        assert method_config(name, overrides=["noise_correction=true"]).noise_correction == "true"
        with pytest.raises(ConfigError, match="noise_correction"):
            method_config(name, overrides=["noise_correction=maybe"])
    for name in ("random",):
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
    assert main(["run", "--out", str(tmp_path / "x"), "--methods", "random", *TINY,
                 "--set", "random.noise_correction=true"]) == 2
    assert "random does not support noise_correction" in _error_line(capsys)


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


# ------------------------------------------------------------------ DANCE and DATM remedies


def test_forward_corrected_ce_is_minus_log_of_the_noisy_label_probability():
    from ddlnl.correction import forward_corrected_ce

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    target = torch.tensor([0, 1, 2, 1, 0, 2])
    t = _asym_T(3, 0.4, [(0, 1), (2, 1)])  # column 1 takes flips; T[0, 2] = 0 stays exactly 0
    # Independent: numpy softmax, p @ T, -log of the given label's entry.
    z = logits.numpy().astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = -np.log((p @ t)[np.arange(6), target.numpy()]).mean()
    assert float(forward_corrected_ce(logits, target, t)) == pytest.approx(expected, rel=1e-5)
    # Identity T: plain cross-entropy; soft targets: the expectation over their rows.
    assert float(forward_corrected_ce(logits, target, np.eye(3))) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, target)), rel=1e-5)
    soft = torch.nn.functional.one_hot(target, 3).float()
    assert float(forward_corrected_ce(logits, soft, t)) == pytest.approx(expected, rel=1e-5)


def test_forward_corrected_expert_epoch_is_sgd_on_the_forward_corrected_loss(tiny_dataset):
    """An expert with ``forward_transition`` takes full-batch SGD steps on -log (softmax T)[y]: row
    e + 1 = row e - lr * grad of that loss (by hand, from a plain module), which is not the plain
    cross-entropy step."""
    import torch.nn.functional as F
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    from ddlnl.experts import ExpertConfig, expert_key, get_experts
    from ddlnl.train import build_model

    train = tiny_dataset.train
    t = _asym_T(4, 0.4, [(0, 1), (2, 3)])
    cfg = ExpertConfig(num_experts=1, epochs=2, lr=0.5, batch_size=1000, width=4, depth=1, augment="none",
                       forward_transition=tuple(map(tuple, t)))
    rows = get_experts(train, cfg, seed=1, num_classes=4, cache=False).trajectory(0)

    def grad(row, loss_of):
        model = build_model(cfg.train_config(), channels=1, num_classes=4, image_size=tuple(train.images.shape[2:]),
                            seed=0)
        vector_to_parameters(row.clone(), model.parameters())
        loss = loss_of(model(train.images))
        return parameters_to_vector(torch.autograd.grad(loss, list(model.parameters()))).detach()

    tt = torch.tensor(t, dtype=torch.float32)
    forward = lambda z: -torch.log((F.softmax(z, 1) @ tt)[torch.arange(len(z)), train.labels]).mean()  # noqa: E731
    for e in range(cfg.epochs):
        torch.testing.assert_close(rows[e + 1], rows[e] - cfg.lr * grad(rows[e], forward), rtol=1e-4, atol=1e-5)
    plain = rows[0] - cfg.lr * grad(rows[0], lambda z: F.cross_entropy(z, train.labels))
    assert (plain - rows[1]).abs().max() > 1e-3
    # Other experts, other key; plain experts keep theirs (no forward_transition in their key fields).
    plain_cfg = ExpertConfig(num_experts=1, epochs=2, lr=0.5, batch_size=1000, width=4, depth=1, augment="none")
    assert "forward_transition" not in plain_cfg.key_fields()
    assert expert_key(train, cfg, seed=1, num_classes=4) != expert_key(train, plain_cfg, seed=1, num_classes=4)


def test_datm_with_the_remedy_trains_its_experts_with_the_forward_corrected_loss(tiny_dataset, monkeypatch):
    from ddlnl.methods import datm
    from ddlnl.methods.datm import DATMConfig

    from test_datm import TINY as DATM_TINY

    seen = []
    real = datm.get_experts

    def spy(train, ecfg, **kw):
        seen.append(ecfg)
        return real(train, ecfg, **kw)

    monkeypatch.setattr(datm, "get_experts", spy)
    t = _asym_T(4, 0.3, [(0, 1)])
    model = NoiseModel(t, np.full(4, 0.25), "true")
    cfg = DATMConfig(**{**DATM_TINY, "noise_correction": "true"})
    syn = datm.distill(tiny_dataset.train, 1, cfg, seed=0, num_classes=4, noise_model=model)
    np.testing.assert_allclose(np.asarray(seen[-1].forward_transition), t)
    assert syn.meta["noise_model"]["source"] == "true"
    datm.distill(tiny_dataset.train, 1, DATMConfig(**DATM_TINY), seed=0, num_classes=4)
    assert seen[-1].forward_transition == ()  # off by default: the reference's experts
    with pytest.raises(ConfigError, match="needs a noise model"):
        datm.distill(tiny_dataset.train, 1, cfg, seed=0, num_classes=4)


def test_dance_with_true_T_matches_each_class_to_its_clean_embedding_mean(monkeypatch):
    """DANCE's inner-class target of the blended class under the remedy is the clean class's mean
    embedding under the iteration's middle encoder; its calibration target for class c is T[c]."""
    import copy

    from ddlnl.methods import dance
    from ddlnl.methods.dance import DANCEConfig
    from ddlnl.noise import realized_transition

    images, clean, noisy, _ = _two_pattern_data(n=600)
    train = LabeledTensors(images, noisy)
    prior = np.bincount(clean.numpy(), minlength=3) / len(clean)
    model = NoiseModel(realized_transition(clean, noisy, 3), prior, "true")
    targets, calib = [], []
    real_targets, real_inter = dance.unmixed_targets, dance.inter_class_loss

    def spy_targets(encoder, reals, unmix):
        out = real_targets(encoder, reals, unmix)
        targets.append((copy.deepcopy(encoder), out.detach().clone()))
        return out

    def spy_inter(net, syn, labels):
        calib.append(labels.detach().clone())
        return real_inter(net, syn, labels)

    monkeypatch.setattr(dance, "unmixed_targets", spy_targets)
    monkeypatch.setattr(dance, "inter_class_loss", spy_inter)
    # Whole classes every iteration (batch_real above every class size), no augmentation, no tiles.
    cfg = DANCEConfig(iterations=2, batch_real=1000, width=8, depth=2, factor=1, dsa_strategy="", num_pretrained=1,
                      pretrain_epochs=1, pretrain_batch=64, cache_experts=False, noise_correction="true")
    syn = dance.distill(train, 2, cfg, seed=0, num_classes=3, noise_model=model)
    assert len(targets) == 2 and syn.meta["noise_model"]["source"] == "true"
    for encoder, target in targets:
        with torch.no_grad():
            clean_means = torch.stack([encoder.embed(images[clean == c]).mean(0) for c in range(3)])
            given_means = torch.stack([encoder.embed(images[noisy == c]).mean(0) for c in range(3)])
        before = (given_means[1] - clean_means[1]).norm()
        after = (target[1] - clean_means[1]).norm()
        assert before > 0.2 * (clean_means[0] - clean_means[1]).norm()  # the flips do blend class 1
        assert after < 0.25 * before
        torch.testing.assert_close(target[0], given_means[0], rtol=1e-4, atol=1e-5)  # nothing flipped into 0
    # Calibration: class c's synthetic images are pulled toward T[c], not toward the one-hot c.
    t = torch.as_tensor(model.transition, dtype=torch.float32)
    assert len(calib) == 2 * 3
    for i, labels in enumerate(calib):
        torch.testing.assert_close(labels, t[torch.full((2,), i % 3)])
    # The calibration loss with soft rows is their cross-entropy (by hand).
    net = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    rows = t[torch.tensor([0, 1, 1, 2, 0])]
    by_hand = -(rows * torch.log_softmax(net(x), 1)).sum(1).mean()
    torch.testing.assert_close(dance.inter_class_loss(net, x, rows), by_hand)


def test_dance_remedy_off_by_default_and_needs_a_noise_model():
    from ddlnl.methods import dance
    from ddlnl.methods.dance import DANCEConfig

    assert DANCEConfig().noise_correction == "none"
    images, _, noisy, _ = _two_pattern_data(n=20)
    cfg = DANCEConfig(iterations=1, width=8, depth=2, factor=1, num_pretrained=1, pretrain_epochs=1,
                      cache_experts=False, noise_correction="estimated")
    with pytest.raises(ConfigError, match="needs a noise model"):
        dance.distill(LabeledTensors(images, noisy), 1, cfg, seed=0, num_classes=3)


def test_run_gives_dance_datm_and_rcig_the_oracle_T(tmp_path, capsys):
    """``ddlnl run --set dance.noise_correction=true`` / ``datm...``: the job hands the distiller the
    realized T of its noise (recorded in the set's meta), as it does DM."""
    from ddlnl.cli import main
    from ddlnl.synthetic import load_synthetic

    tiny = ["--set", "train.epochs=1", "--set", "baseline.epochs=1", "--set", "train.width=8",
            "--set", "baseline.width=8", "--n-runs", "1", "--ipc", "1", "--no-early-stop", "--quiet"]
    methods = {"dance": ["iterations=1", "num_pretrained=1", "pretrain_epochs=1", "width=8", "batch_real=8"],
               "datm": ["iterations=1", "num_experts=1", "expert_train_epochs=2", "max_start_epoch=1",
                        "current_max_start_epoch=1", "width=8", "syn_steps=2"],
               "rcig": ["iterations=1", "pool_size=1", "width=8", "batch_real=8", "inner_steps=2", "hinv_steps=2",
                        "inner_lr=0.001", "hinv_lr=0.001"]}
    for name, sets in methods.items():
        out = tmp_path / name
        argv = ["run", "--out", str(out), "--methods", name, "--noise", "pairflip:0.3", *tiny,
                *[a for s in sets for a in ("--set", f"{name}.{s}")], "--set", f"{name}.noise_correction=true"]
        assert main(argv) == 0, capsys.readouterr().err
        syn = load_synthetic(out / "synthetic" / f"{name}-ipc1.safetensors")
        noise = json.loads((out / "noise.json").read_text())
        assert syn.meta["noise_model"]["source"] == "true"
        np.testing.assert_allclose(syn.meta["noise_model"]["transition"], noise["realized_T"], atol=1e-9)


def test_the_estimated_route_of_a_job_without_dm_uses_dm_s_preset():
    from dataclasses import replace

    from ddlnl.job import JobConfig, resolve_job
    from ddlnl.remedy import teacher_dm_config

    resolved = resolve_job(replace(JobConfig(), methods=("dance",), preset="cpu"), ["dance.noise_correction=estimated"])
    cfg = teacher_dm_config(resolved)
    assert cfg == replace(method_config("dm", "cpu"), depth=cfg.depth, dsa_strategy=cfg.dsa_strategy)
    assert cfg.iterations == 300 and cfg.noise_correction == "none" and "flip" not in cfg.dsa_strategy
    # Its ConvNet fits the images: depth 2 on digits' 8x8 (last map >= 2x2), the preset's 3 on 28x28.
    assert cfg.depth == 2 and teacher_dm_config(resolved, (28, 28)).depth == 3
    with_dm = resolve_job(replace(JobConfig(), methods=("dm", "dance"), preset="cpu"),
                          ["dm.iterations=7", "dm.noise_correction=true"])
    assert teacher_dm_config(with_dm).iterations == 7 and teacher_dm_config(with_dm).noise_correction == "none"


def test_sample_posterior_is_bayes_rule_per_sample():
    from ddlnl.correction import sample_posterior

    t = _asym_T(3, 0.4, [(0, 1)])
    q = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    post = sample_posterior(q, np.array([1, 0]), t)
    # Sample 0, given 1: 0.5 * 0.4 vs 0.5 * 1.0 -> 2/7, 5/7; sample 1, given 0: only true 0 gives 0.
    np.testing.assert_allclose(post, [[0.4 / 1.4, 1.0 / 1.4, 0.0], [1.0, 0.0, 0.0]])


def test_dm_posterior_init_starts_the_receiving_class_from_its_clean_images():
    """correction_init=posterior: class 1's initial images are images of clean class 1, where the
    given-label init (same data, same seed) starts some of them from the flipped class-0 images."""
    from ddlnl.correction import sample_posterior
    from ddlnl.noise import realized_transition

    images, clean, noisy, _ = _two_pattern_data(n=200)
    train = LabeledTensors(images, noisy)
    t = realized_transition(clean, noisy, 3)
    q = 0.1 / 2 + 0.9 * np.eye(3)[clean.numpy()] - 0.1 / 2 * np.eye(3)[clean.numpy()]  # a good clean posterior
    post = sample_posterior(q, noisy.numpy(), t)
    model = NoiseModel(t, np.full(3, 1 / 3), "estimated", sample_posterior=post)
    base = dict(iterations=0, width=8, dsa_strategy="", noise_correction="estimated")
    given = dm.distill(train, 30, DMConfig(**base), seed=0, num_classes=3, noise_model=model)
    chosen = dm.distill(train, 30, DMConfig(**base, correction_init="posterior"), seed=0, num_classes=3,
                        noise_model=model)
    def clean_of(syn, c):
        return clean[torch.tensor(syn.meta["init_indices"][30 * c:30 * (c + 1)])]

    assert (clean_of(given, 1) == 0).sum() >= 3  # ~29% of given-1 images are clean 0
    for c in range(3):
        assert bool((clean_of(chosen, c) == c).all())
    assert len(set(chosen.meta["init_indices"])) == 90
    with pytest.raises(ConfigError, match="correction_init=posterior needs"):
        DMConfig(correction_init="posterior", noise_correction="true").check()
    with pytest.raises(ConfigError, match="needs per-sample posteriors"):
        dm.distill(train, 2, DMConfig(**base, correction_init="posterior"), seed=0, num_classes=3,
                   noise_model=NoiseModel(t, np.full(3, 1 / 3), "estimated"))


def test_the_teacher_set_of_a_posterior_init_job_is_plain_dm():
    """The estimated route's teacher set is DM without the remedy: a job asking for the posterior
    init and a re-estimate gets a teacher config that is valid (not posterior init without a T)."""
    from dataclasses import replace

    from ddlnl.job import JobConfig, resolve_job
    from ddlnl.remedy import teacher_dm_config

    resolved = resolve_job(replace(JobConfig(), methods=("dm",), preset="cpu"),
                           ["dm.noise_correction=estimated", "dm.correction_init=posterior", "dm.correction_rounds=2"])
    cfg = teacher_dm_config(resolved)
    cfg.check()
    assert (cfg.noise_correction, cfg.correction_init, cfg.correction_rounds) == ("none", "given", 1)


def test_correction_rounds_2_re_estimates_T_from_teachers_on_the_remedied_set(monkeypatch, tmp_path):
    """Round 2: a second DM set at TEACHER_IPC distilled WITH the first estimate (the job's
    correction_init) trains new teachers (another seed); their estimate is the one returned.
    Round 1 returns the first estimate, from the unremedied set."""
    from dataclasses import replace

    import ddlnl.remedy as remedy
    from ddlnl.job import JobConfig, resolve_job
    from ddlnl.methods import dm as dm_module
    from ddlnl.pipeline import prepare_data

    job = replace(JobConfig(), methods=("dm",), preset="cpu", noise="asymmetric:0.4", train_subset=200)
    prepared = prepare_data(job)
    distilled, estimated = [], []

    def fake_distill(train, ipc, cfg, *, seed, num_classes, device="cpu", noise_model=None, progress=False):
        distilled.append((cfg, noise_model))
        return SimpleSyn(len(distilled))

    def fake_estimate(syn, noisy_train, train_cfg, *, num_classes, seed, device="cpu", n_teachers=3):
        estimated.append((syn.n, seed))
        t = np.full((num_classes, num_classes), 0.02) + np.eye(num_classes) * (0.8 - 0.1 * len(estimated))
        return NoiseModel(t / t.sum(1, keepdims=True), np.full(num_classes, 1 / num_classes), "estimated",
                          sample_posterior=np.full((len(noisy_train.labels), num_classes), 1 / num_classes))

    monkeypatch.setattr(dm_module, "distill", fake_distill)
    monkeypatch.setattr(remedy, "estimated_noise_model", fake_estimate)
    for rounds, init in ((1, "given"), (2, "posterior")):
        distilled.clear()
        estimated.clear()
        resolved = resolve_job(job, ["dm.noise_correction=estimated", f"dm.correction_init={init}",
                                     f"dm.correction_rounds={rounds}"], image_size=(28, 28))
        model = remedy.noise_model_for_job(resolved, prepared, resolved.methods["dm"])
        assert distilled[0][0].noise_correction == "none" and distilled[0][1] is None  # round 1: unremedied set
        assert len(distilled) == rounds and len(estimated) == rounds
        if rounds == 2:
            cfg2, first = distilled[1]
            assert (cfg2.noise_correction, cfg2.correction_init) == ("estimated", "posterior")
            assert first is not None and first.transition[0, 0] == pytest.approx((0.7 + 0.02) / (0.7 + 0.2))
            assert estimated[1][0] == 2 and estimated[1][1] != estimated[0][1]  # new teachers, on set 2
        assert model.transition[0, 0] == pytest.approx((0.8 - 0.1 * rounds + 0.02) / (0.8 - 0.1 * rounds + 0.2))
    with pytest.raises(ConfigError, match="correction_rounds=2 re-estimates T"):
        DMConfig(correction_rounds=2, noise_correction="true").check()
    with pytest.raises(ConfigError, match="use 1 or 2"):
        DMConfig(correction_rounds=3, noise_correction="estimated").check()


class SimpleSyn:
    def __init__(self, n):
        self.n = n
        self.meta = {}

    def save(self, path):
        raise AssertionError("no out directory was given: nothing is saved")


# ------------------------------------------------------------------------------ RCIG remedy


def test_rcig_forward_corrected_outer_loss_prefers_the_clean_prediction(monkeypatch):
    """The remedy's outer loss is ``-mean log (softmax(z) @ T)[given]``: with the true T of a 0 -> 1
    flip at 0.4, predicting the clean class for class-0 images costs less than reproducing the
    noise, where the plain cross-entropy prefers the noise; identity T is the plain loss."""
    from ddlnl.methods.rcig import losses

    given = torch.tensor([0] * 6 + [1] * 4)  # ten class-0 images, 40% labelled 1
    targets = F.one_hot(given, 2).float()
    t = torch.tensor(_asym_T(2, 0.4, [(0, 1)]), dtype=torch.float32)
    clean_logits = torch.tensor([[6.0, -6.0]]).repeat(10, 1)
    noisy_logits = torch.log(torch.tensor([[0.6, 0.4]])).repeat(10, 1)

    def loss(logits, transition):
        monkeypatch.setattr(losses, "outer_predictions", lambda *a, **k: logits)
        return float(losses.outer_loss(None, None, torch.eye(2), torch.zeros(()), None, None, targets, 1.0,
                                       margin=False, transition=transition)[0])

    p = torch.softmax(clean_logits, 1) @ t  # independent: the noisy-label distribution of the clean prediction
    expected = float(-torch.log(p[torch.arange(10), given]).mean())
    assert loss(clean_logits, t) == pytest.approx(expected, rel=1e-5)
    assert loss(clean_logits, t) < loss(noisy_logits, t)
    assert loss(clean_logits, None) > loss(noisy_logits, None)
    assert loss(noisy_logits, torch.eye(2)) == pytest.approx(loss(noisy_logits, None), rel=1e-6)


def test_rcig_with_the_remedy_hands_T_to_every_outer_step(monkeypatch):
    from ddlnl.methods import rcig
    from ddlnl.methods.rcig import loop

    images, _, noisy, t = _two_pattern_data(n=20)
    train = LabeledTensors(images, noisy)
    cfg = rcig.RCIGConfig(iterations=3, pool_size=1, width=8, batch_real=16, inner_steps=2, hinv_steps=2,
                          inner_lr=1e-3, hinv_lr=1e-3, use_flip=False, noise_correction="true")
    with pytest.raises(ConfigError, match="needs a noise model"):
        rcig.distill(train, 2, cfg, seed=0, num_classes=3)
    seen = []
    real_step = loop.outer_step

    def spy(*a, transition=None, **k):
        seen.append(transition)
        return real_step(*a, transition=transition, **k)

    monkeypatch.setattr(loop, "outer_step", spy)
    model = NoiseModel(t, np.full(3, 1 / 3), "true")
    syn = rcig.distill(train, 2, cfg, seed=0, num_classes=3, noise_model=model)
    assert len(seen) == 3 and all(s is not None and np.allclose(s.numpy(), t) for s in seen)
    assert syn.meta["noise_model"]["source"] == "true"
    seen.clear()
    plain = rcig.distill(train, 2, replace(cfg, noise_correction="none"), seed=0, num_classes=3, noise_model=model)
    assert seen == [None, None, None] and "noise_model" not in plain.meta
    assert not torch.allclose(syn.images, plain.images)  # the corrected loss moves the set differently


@pytest.mark.slow
def test_run_with_T_re_estimated_once(tmp_path, capsys):
    """``ddlnl run --set dm.noise_correction=estimated --set dm.correction_init=posterior --set
    dm.correction_rounds=2``: the job makes both teacher sets (the second remedied with the first
    estimate) and the cell's set records the second T (~100 s)."""
    from ddlnl.cli import main
    from ddlnl.synthetic import load_synthetic
    from test_cli import TINY

    out = tmp_path / "rounds2"
    argv = ["run", "--out", str(out), "--methods", "dm", "--noise", "pairflip:0.3", *TINY,
            "--set", "dm.iterations=20", "--set", "train.epochs=300", "--set", "dm.noise_correction=estimated",
            "--set", "dm.correction_init=posterior", "--set", "dm.correction_rounds=2"]
    assert main(argv) == 0, capsys.readouterr().err
    kept = sorted(p.name for p in (out / "synthetic" / "correction").iterdir())
    assert kept == ["teacher-dm-ipc10-round2.safetensors", "teacher-dm-ipc10.safetensors"]
    second = load_synthetic(out / "synthetic" / "correction" / "teacher-dm-ipc10-round2.safetensors")
    assert second.meta["noise_model"]["source"] == "estimated"  # distilled with the first estimate
    syn = load_synthetic(out / "synthetic" / "dm-ipc1.safetensors")
    assert syn.meta["noise_model"]["source"] == "estimated"
    assert syn.meta["config"]["correction_rounds"] == 2


def test_the_estimated_route_keeps_its_teacher_sets_and_remakes_them_only_when_their_inputs_change(
        monkeypatch, tmp_path):
    """With ``out``: the teacher sets are saved and reused by a later call of the same job (no new
    distillation), re-made when damaged or when the first estimate changes; ``none`` gives no
    model and ``true`` the realized T without distilling anything."""
    from dataclasses import replace

    import ddlnl.remedy as remedy
    from ddlnl.job import JobConfig, resolve_job
    from ddlnl.methods import dm as dm_module
    from ddlnl.pipeline import prepare_data
    from ddlnl.synthetic import SyntheticSet
    from ddlnl.utils import derive_seed

    job = replace(JobConfig(), methods=("dm",), preset="cpu", noise="asymmetric:0.4", train_subset=200)
    prepared = prepare_data(job)
    k = prepared.dataset.num_classes
    calls, first_diag = [], [0.7]

    def fake_distill(train, ipc, cfg, *, seed, num_classes, device="cpu", noise_model=None, progress=False):
        calls.append((cfg.noise_correction, seed))
        return SyntheticSet(images=torch.full((num_classes * ipc, *train.images.shape[1:]), float(len(calls))),
                            labels=torch.arange(num_classes).repeat_interleave(ipc), meta={})

    def fake_estimate(syn, noisy_train, train_cfg, *, num_classes, seed, device="cpu", n_teachers=3):
        d = first_diag[0] if seed == derive_seed(job.seed, "correction-teachers") else 0.9  # round 1 / round 2
        t = np.full((num_classes, num_classes), (1 - d) / (num_classes - 1)) + np.eye(num_classes) * (d - (1 - d) / (num_classes - 1))
        return NoiseModel(t, np.full(num_classes, 1 / num_classes), "estimated",
                          sample_posterior=np.full((len(noisy_train.labels), num_classes), 1 / num_classes))

    monkeypatch.setattr(dm_module, "distill", fake_distill)
    monkeypatch.setattr(remedy, "estimated_noise_model", fake_estimate)
    tmp_path = tmp_path / "a" / "b"  # made by the first save
    for source, expected in (("none", None), ("true", "true")):
        resolved = resolve_job(job, [f"dm.noise_correction={source}"], image_size=(28, 28))
        model = remedy.noise_model_for_job(resolved, prepared, resolved.methods["dm"], out=tmp_path)
        assert (model and model.source) == expected and calls == []
    assert remedy.noise_model_for_job(resolved, prepared, method_config("random"), out=tmp_path) is None  # no option
    resolved = resolve_job(job, ["dm.noise_correction=estimated", "dm.correction_init=posterior",
                                 "dm.correction_rounds=2"], image_size=(28, 28))
    mcfg = resolved.methods["dm"]
    model = remedy.noise_model_for_job(resolved, prepared, mcfg, out=tmp_path)
    # The teacher set is the job's own unremedied DM IPC-10 cell (its seed), the second one the same seed.
    cell_seed = derive_seed(job.seed, "distill", "dm", remedy.TEACHER_IPC)
    assert calls == [("none", cell_seed), ("estimated", cell_seed)]
    assert model.transition[0, 0] == pytest.approx(0.9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher-dm-ipc10-round2.safetensors",
                                                         "teacher-dm-ipc10.safetensors"]
    again = remedy.noise_model_for_job(resolved, prepared, mcfg, out=tmp_path)
    assert len(calls) == 2 and np.allclose(again.transition, model.transition)  # both sets reused
    first_diag[0] = 0.6  # another first estimate: the round-2 set depends on it and is re-made
    remedy.noise_model_for_job(resolved, prepared, mcfg, out=tmp_path)
    assert calls[2:] == [("estimated", cell_seed)]
    (tmp_path / "teacher-dm-ipc10.safetensors").write_bytes(b"damaged")
    remedy.noise_model_for_job(resolved, prepared, mcfg, out=tmp_path)
    assert [c[0] for c in calls[3:]] == ["none"]  # re-made; the round-2 set still matches its inputs
    other = resolve_job(job, ["dm.noise_correction=estimated", "dm.iterations=7"], image_size=(28, 28))
    remedy.noise_model_for_job(other, prepared, other.methods["dm"], out=tmp_path)
    assert [c[0] for c in calls[4:]] == ["none"]  # another DM config: another teacher set
    dance = resolve_job(replace(job, methods=("dance",)), ["dance.noise_correction=estimated"], image_size=(28, 28))
    remedy.noise_model_for_job(dance, prepared, dance.methods["dance"])
    assert [c[0] for c in calls[5:]] == ["none"]  # DANCE has no correction_rounds: one round
