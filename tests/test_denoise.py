"""The denoise route: its selection and targets on a tiny case, computed independently here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_blobs
from ddlnl.denoise import (DenoiseConfig, clean_accuracy_from_noisy_agreement, denoise, denoise_targets, posterior_targets, weighted_forward_ce,
                           weighted_soft_ce, weighted_soft_gce)
from ddlnl.errors import ConfigError
from ddlnl.label_issues import IssuesConfig, score_labels, teacher_outputs
from ddlnl.synthetic import SyntheticSet
from ddlnl.train import TrainConfig

P = np.array([[0.7, 0.2, 0.1],   # agrees with its given label 0
              [0.1, 0.8, 0.1],   # flagged, teacher confident in 1 -> pseudo-label 1
              [0.4, 0.3, 0.3],   # flagged, teacher unsure -> dropped
              [0.2, 0.2, 0.6]])  # flagged, teacher at the threshold in 2 -> pseudo-label 2
GIVEN = np.array([0, 2, 1, 0])
FLAGGED = np.array([False, True, True, True])


def test_selection_and_targets_on_a_tiny_case():
    t = denoise_targets(P, GIVEN, FLAGGED, mix=0.25, threshold=0.6)
    assert t.group.tolist() == [0, 1, 2, 1]  # agree, pseudo, dropped, pseudo
    assert t.weights.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert t.labels.tolist() == [0, 1, 1, 2]
    expected = np.array([[0.75 + 0.25 * 0.7, 0.25 * 0.2, 0.25 * 0.1],
                         [0.25 * 0.1, 0.75 + 0.25 * 0.8, 0.25 * 0.1],
                         [0.25 * 0.4, 0.75 + 0.25 * 0.3, 0.25 * 0.3],
                         [0.25 * 0.2, 0.25 * 0.2, 0.75 + 0.25 * 0.6]])
    np.testing.assert_allclose(t.targets.numpy(), expected, rtol=1e-6)
    assert t.counts() == {"agree": 1, "pseudo": 2, "dropped": 1}


def test_mix_zero_gives_hard_targets_and_threshold_one_drops_every_flag():
    t = denoise_targets(P, GIVEN, FLAGGED, mix=0.0, threshold=1.0)
    assert t.group.tolist() == [0, 2, 2, 2]
    np.testing.assert_array_equal(t.targets[0].numpy(), [1.0, 0.0, 0.0])
    t = denoise_targets(P, GIVEN, FLAGGED, mix=1.0, threshold=0.0)
    assert t.group.tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(t.targets.numpy(), P, rtol=1e-6)


def test_select_none_keeps_every_given_label_whatever_the_flags():
    t = denoise_targets(P, GIVEN, FLAGGED, mix=0.25, threshold=0.6, select="none")
    assert t.group.tolist() == [0, 0, 0, 0] and t.weights.tolist() == [1.0] * 4
    assert t.labels.tolist() == GIVEN.tolist()
    onehot = np.eye(3)[GIVEN]
    np.testing.assert_allclose(t.targets.numpy(), 0.75 * onehot + 0.25 * P, rtol=1e-6)
    with pytest.raises(ConfigError):
        denoise_targets(P, GIVEN, FLAGGED, mix=0.25, threshold=0.6, select="all")


def _soft_batch(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(6, 3, generator=g)).to(dtype)
    targets = torch.softmax(2 * torch.randn(6, 3, generator=g), 1).to(dtype)
    return logits, targets, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 1.0], dtype=dtype)


def test_soft_gce_matches_its_formula_and_tends_to_soft_ce_in_float32():
    logits, t, w = _soft_batch()
    z = logits.double().numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    per = (t.double().numpy() * (1 - p ** 0.7) / 0.7).sum(1)
    expected = (w.double().numpy() * per).sum() / w.sum().item()
    assert float(weighted_soft_gce(logits, t, w, 0.7)) == pytest.approx(expected, rel=1e-5)
    # q -> 0: the soft cross-entropy (float32; the direct 1 - p**q would lose every digit here).
    ce = float(weighted_soft_ce(logits, t, w))
    assert float(weighted_soft_gce(logits, t, w, 1e-6)) == pytest.approx(ce, rel=1e-5)
    assert abs(float(weighted_soft_gce(logits, t, w, 0.7)) - ce) > 0.1
    with pytest.raises(ConfigError):
        weighted_soft_gce(logits, t, w, 0.0)


def test_forward_correction_by_hand_and_identity_is_cross_entropy():
    logits, t, w = _soft_batch(1, torch.float64)
    T = np.full((3, 3), 0.2) + np.eye(3) * 0.4  # symmetric 0.4 over 3 classes
    z = logits.numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    per = -(t.numpy() * np.log(p @ T)).sum(1)
    expected = (w.numpy() * per).sum() / w.sum().item()
    assert float(weighted_forward_ce(logits, t, w, torch.as_tensor(T))) == pytest.approx(expected, rel=1e-10)
    assert float(weighted_forward_ce(logits, t, w, torch.eye(3, dtype=torch.float64))) == pytest.approx(
        float(weighted_soft_ce(logits, t, w)), rel=1e-10)


def test_forward_correction_recovers_the_true_class_from_noisy_label_frequencies():
    # Labels of a class-0 sample are noisy with T's row 0: plain CE fits p = T[0]; forward
    # correction fits p @ T = T[0], i.e. p = onehot(0) (Patrini et al.'s consistency).
    T = torch.full((3, 3), 0.2, dtype=torch.float64) + torch.eye(3, dtype=torch.float64) * 0.4
    target = T[0:1].clone()
    fits = {}
    for name, fn in {"ce": lambda z: weighted_soft_ce(z, target, torch.ones(1)),
                     "forward": lambda z: weighted_forward_ce(z, target, torch.ones(1), T)}.items():
        z = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([z], lr=0.1)
        for _ in range(2000):
            opt.zero_grad()
            fn(z).backward()
            opt.step()
        fits[name] = torch.softmax(z.detach(), 1)[0].numpy()
    np.testing.assert_allclose(fits["ce"], T[0].numpy(), atol=1e-3)
    assert fits["forward"][0] > 0.97


def test_clean_accuracy_from_noisy_agreement_inverts_symmetric_noise_exactly():
    # Any joint P(true, pred) with clean accuracy c: the expected agreement with labels noised by T
    # is sum_ij P(true=i, pred=j) T[i, j]; the correction must return c whatever the errors are.
    from ddlnl.noise.matrices import symmetric_matrix

    rng = np.random.default_rng(0)
    k = 10
    for rate in (0.0, 0.2, 0.6, 0.8):
        T = symmetric_matrix(k, rate)
        joint = rng.random((k, k)) * (1 - np.eye(k)) + np.diag(rng.random(k) * 5)
        joint /= joint.sum()
        agreement = float((joint * T).sum())
        assert clean_accuracy_from_noisy_agreement(agreement, rate, k) == pytest.approx(np.trace(joint), abs=1e-12)
    with pytest.raises(ConfigError):
        clean_accuracy_from_noisy_agreement(0.5, 0.9, 10)


def test_clean_accuracy_from_noisy_agreement_on_labels_drawn_by_ddlnls_noise():
    from ddlnl.noise.matrices import symmetric_matrix
    from ddlnl.noise.sampling import apply_transition

    rng = np.random.default_rng(1)
    n, k, c = 40000, 10, 0.7
    clean = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < c, clean, (clean + rng.integers(1, 3, n)) % k)  # errors on 2 classes only
    noisy = apply_transition(clean, symmetric_matrix(k, 0.6), seed=3)
    est = clean_accuracy_from_noisy_agreement(float((pred == noisy).mean()), 0.6, k)
    true = float((pred == clean).mean())
    se = np.sqrt(0.25 / n) / (1 - 0.6 - 0.6 / 9)  # binomial SE of the agreement, scaled by the correction
    assert abs(est - true) < 4 * se
    assert abs(float((pred == noisy).mean()) - true) > 0.3  # the raw agreement is far off


def test_posterior_targets_combine_the_teacher_with_the_noise_model():
    # Symmetric noise at rate 0.6 over 3 classes: T[i, i] = 0.4, T[i, j] = 0.3.
    T = np.full((3, 3), 0.3) + np.eye(3) * 0.1
    joint = P * T[:, GIVEN].T  # pi_k(x_n) * T[k, given_n], by hand below for row 1
    post = joint / joint.sum(1, keepdims=True)
    np.testing.assert_allclose(post[1], np.array([0.1 * 0.3, 0.8 * 0.3, 0.1 * 0.4]) / (0.03 + 0.24 + 0.04))
    t = posterior_targets(post, GIVEN)
    np.testing.assert_allclose(t.targets.numpy(), post, rtol=1e-6)
    assert t.weights.tolist() == [1.0] * 4  # nothing is dropped
    assert t.labels.tolist() == post.argmax(1).tolist() == [0, 1, 0, 2]
    assert t.group.tolist() == [0, 1, 1, 1]  # agree where the posterior keeps the given label


def test_weighted_soft_ce_ignores_dropped_samples():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g, requires_grad=True)
    targets = torch.softmax(torch.randn(4, 3, generator=g), 1)
    w = torch.tensor([1.0, 0.0, 1.0, 1.0])
    loss = weighted_soft_ce(logits, targets, w)
    keep = [0, 2, 3]
    logp = torch.log_softmax(logits.detach(), 1).numpy()
    expected = -np.mean((targets.numpy()[keep] * logp[keep]).sum(1))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(logits.grad[1]) == 0
    assert float(weighted_soft_ce(logits, targets, torch.zeros(4))) == 0.0


def test_config_refuses_bad_values():
    for bad in (dict(mix=1.5), dict(threshold=-0.1), dict(val_fraction=0.6), dict(targets="soft"),
                dict(rounds=0), dict(rounds=1.5), dict(loss="mae"), dict(select="all"), dict(gce_q=0.0),
                dict(gce_q=1.5), dict(loss="forward"),
                dict(loss="forward", select="none", mix=0.3)):
        with pytest.raises(ConfigError):
            DenoiseConfig(**bad).check()


def test_denoise_end_to_end_on_a_tiny_problem():
    data = make_blobs(20)
    y = data.labels.clone()
    flip = torch.arange(len(y)) % 4 == 0  # a quarter of the labels wrong
    y[flip] = (y[flip] + 1) % 4
    noisy = data.with_labels(y)
    # A "distilled" set: two clean examples per class.
    idx = torch.cat([torch.nonzero(data.labels == c).flatten()[1:3] for c in range(4)])
    syn = SyntheticSet(data.images[idx], data.labels[idx], None, meta={})
    cfg = TrainConfig(depth=1, width=8, epochs=3, batch_size=16, lr=0.05, augment="none")
    tcfg = TrainConfig(depth=1, width=8, epochs=30, batch_size=16, lr=0.05, augment="none")
    res = denoise(noisy, syn, DenoiseConfig(mix=0.3, threshold=0.5, val_fraction=0.2, rounds=1, select="agree",
                                            loss="ce"), cfg, tcfg,
                  IssuesConfig(n_models=2, neighbours=5, embed_dim=0), seed=0)
    tr, va = set(res.train_index.tolist()), set(res.val_index.tolist())
    assert not tr & va and len(tr) + len(va) == len(noisy)
    assert len(res.targets.group) == len(tr)
    # The student's targets are the ones denoise_targets makes from the teachers' scores.
    again = denoise_targets(res.issues.pred_probs[res.train_index.numpy()], y.numpy()[res.train_index.numpy()],
                            res.issues.is_issue[res.train_index.numpy()], mix=0.3, threshold=0.5)
    torch.testing.assert_close(res.targets.targets, again.targets)
    # The epoch is chosen on the teacher-cleaned validation labels, recorded every epoch.
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert res.summary()["selected_epoch"] in (1, 2, 3)
    # The teachers beat the given labels on the flipped samples (they never saw them).
    assert (res.issues.suggested[flip.numpy()] == data.labels.numpy()[flip.numpy()]).mean() > 0.5
    # targets=posterior: the student learns the scores' posterior rows, every sample kept.
    post = denoise(noisy, syn, DenoiseConfig(targets="posterior", val_fraction=0.2), cfg, tcfg,
                   IssuesConfig(n_models=2, neighbours=5, embed_dim=0), seed=0, scored=(res.teachers, res.issues))
    rows = res.issues.posterior[post.train_index.numpy()]
    torch.testing.assert_close(post.targets.targets, torch.as_tensor(rows / rows.sum(1, keepdims=True)).float())
    assert post.targets.counts()["dropped"] == 0
    assert not torch.equal(post.targets.targets, res.targets.targets)
    # rounds=2: the round-1 student re-scores the labels and a fresh student trains on its targets.
    two = denoise(noisy, syn, DenoiseConfig(mix=0.3, threshold=0.5, val_fraction=0.2, rounds=2, select="agree",
                                            loss="ce"), cfg, tcfg,
                  IssuesConfig(n_models=2, neighbours=5, embed_dim=0), seed=0, scored=(res.teachers, res.issues))
    outs = teacher_outputs([res.model], noisy.images)
    rescored = score_labels(syn, noisy, IssuesConfig(n_models=2, neighbours=5, embed_dim=0), tcfg, seed=0,
                            teachers=outs)
    np.testing.assert_allclose(two.issues.pred_probs, rescored.pred_probs, rtol=1e-6)
    tr = two.train_index.numpy()
    expected = denoise_targets(rescored.pred_probs[tr], y.numpy()[tr], rescored.is_issue[tr], mix=0.3, threshold=0.5)
    torch.testing.assert_close(two.targets.targets, expected.targets)
    assert not np.allclose(two.issues.pred_probs, res.issues.pred_probs)
    # Its epoch is still chosen on the labels the synthetic set's teachers cleaned, not on its own scores.
    val = res.val_index.numpy()
    student_val_acc = [h["cleaned_val_acc"] for h in two.history]
    with torch.no_grad():
        pred = two.model(noisy.images[val]).argmax(1).numpy()
    assert (pred == res.issues.cleaned_labels()[val]).mean() == pytest.approx(max(student_val_acc))


def _tiny_problem():
    data = make_blobs(20)
    y = data.labels.clone()
    flip = torch.arange(len(y)) % 4 == 0
    y[flip] = (y[flip] + 1) % 4
    idx = torch.cat([torch.nonzero(data.labels == c).flatten()[1:3] for c in range(4)])
    return data.with_labels(y), SyntheticSet(data.images[idx], data.labels[idx], None, meta={})


def test_student_losses_and_no_selection_end_to_end():
    noisy, syn = _tiny_problem()
    cfg = TrainConfig(depth=1, width=8, epochs=3, batch_size=16, lr=0.05, augment="none")
    tcfg = TrainConfig(depth=1, width=8, epochs=30, batch_size=16, lr=0.05, augment="none")
    icfg = IssuesConfig(n_models=2, neighbours=5, embed_dim=0)
    base = DenoiseConfig(mix=0.3, threshold=0.5, val_fraction=0.2, select="agree", loss="ce")
    runs = {}
    for name, over in {"ce": {}, "gce0": dict(loss="gce", gce_q=1e-6), "gce": dict(loss="gce"),
                       "none": dict(select="none"), "defaults": {},
                       "forward": dict(loss="forward", select="none", mix=0.0)}.items():
        scored = (runs["ce"].teachers, runs["ce"].issues) if runs else None
        dcfg = DenoiseConfig() if name == "defaults" else DenoiseConfig(**{**base.__dict__, **over})
        runs[name] = denoise(noisy, syn, dcfg, cfg, tcfg, icfg, seed=0, scored=scored)
    weights = {k: torch.cat([p.detach().flatten() for p in r.model.parameters()]) for k, r in runs.items()}
    # GCE at q -> 0 trains the same student as the CE route; at q = 0.7 another one.
    torch.testing.assert_close(weights["gce0"], weights["ce"], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(weights["gce"], weights["ce"], atol=1e-3)
    assert [h["cleaned_val_acc"] for h in runs["gce0"].history] == [h["cleaned_val_acc"] for h in runs["ce"].history]
    # select=none: every training sample keeps its given label, the teacher only mixes into the target.
    tr = runs["none"].train_index.numpy()
    t = runs["none"].targets
    assert t.counts() == {"agree": len(tr), "pseudo": 0, "dropped": 0}
    assert runs["ce"].targets.counts()["agree"] < len(tr)  # the default route does select
    np.testing.assert_array_equal(t.labels.numpy(), noisy.labels.numpy()[tr])
    expected = 0.7 * np.eye(4)[noisy.labels.numpy()[tr]] + 0.3 * runs["ce"].issues.pred_probs[tr]
    np.testing.assert_allclose(t.targets.numpy(), expected, rtol=1e-5, atol=1e-6)
    # The defaults (chosen on the development setting): GCE, no selection, nothing held out.
    d = runs["defaults"]
    assert len(d.train_index) == len(noisy) and d.summary()["selected_epoch"] is None
    assert d.targets.counts()["agree"] == len(noisy)
    # forward: given labels as targets, a student other than plain CE on them.
    np.testing.assert_array_equal(runs["forward"].targets.targets.numpy(), np.eye(4)[noisy.labels.numpy()[tr]])
    assert not torch.allclose(weights["forward"], weights["ce"], atol=1e-3)


CLI_TINY = ["--set", "dm.iterations=2", "--set", "dm.width=8", "--set", "dm.batch_real=8", "--set", "train.epochs=3",
            "--set", "train.width=8", "--set", "baseline.epochs=2", "--set", "baseline.width=8",
            "--set", "issues.n_models=2", "--ipc", "2", "--quiet"]


def test_denoise_command_writes_its_record_and_student(tmp_path, capsys):
    import json

    from ddlnl.cli import main

    out = tmp_path / "d"
    assert main(["denoise", "--noise", "symmetric:0.4", "--out", str(out), "--set", "denoise.threshold=0.9",
                 "--set", "denoise.select=agree", "--set", "denoise.val_fraction=0.1", *CLI_TINY]) == 0
    printed = capsys.readouterr().out
    assert "clean-test accuracy: denoise" in printed and "synthetic set only" in printed
    assert "chosen on the teacher-cleaned validation split" in printed
    summary = json.loads((out / "denoise.json").read_text())
    c = summary["counts"]
    assert c["agree"] + c["pseudo"] + c["dropped"] == round(0.9 * 1257)  # 10% held out for the epoch choice
    assert summary["denoise_config"]["select"] == "agree" and summary["denoise_config"]["loss"] == "gce"
    assert summary["denoise_config"]["threshold"] == 0.9 and len(summary["synthetic_only_accuracies"]) == 2
    assert summary["selected_epoch"] in (1, 2) and (out / "student.safetensors").exists()


def test_denoise_command_refuses_a_bad_setting_in_one_line(tmp_path, capsys):
    from ddlnl.cli import main

    assert main(["denoise", "--set", "denoise.mix=2", "--out", str(tmp_path / "d"), *CLI_TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "denoise.mix" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "d").exists()


def test_denoise_text_says_last_epoch_when_nothing_is_held_out(tmp_path):
    from ddlnl.denoise import denoise_text

    summary = {"counts": {"agree": 10, "pseudo": 0, "dropped": 0}, "estimated_noise_rate": 0.4, "accuracy": 0.5,
               "selected_epoch": None, "synthetic_only_accuracies": [0.3, 0.4]}
    text = denoise_text(summary, tmp_path)
    assert "(last epoch)" in text and "chosen on" not in text
    assert "chosen on the teacher-cleaned" in denoise_text({**summary, "selected_epoch": 3}, tmp_path)
