"""The denoise route: its selection and targets on a tiny case, computed independently here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_blobs
from ddlnl.denoise import DenoiseConfig, denoise, denoise_targets, posterior_targets, weighted_soft_ce
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
                dict(rounds=0), dict(rounds=1.5)):
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
    res = denoise(noisy, syn, DenoiseConfig(mix=0.3, threshold=0.5, val_fraction=0.2, rounds=1), cfg, tcfg,
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
    two = denoise(noisy, syn, DenoiseConfig(mix=0.3, threshold=0.5, val_fraction=0.2, rounds=2), cfg, tcfg,
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


CLI_TINY = ["--set", "dm.iterations=2", "--set", "dm.width=8", "--set", "dm.batch_real=8", "--set", "train.epochs=3",
            "--set", "train.width=8", "--set", "baseline.epochs=2", "--set", "baseline.width=8",
            "--set", "issues.n_models=2", "--ipc", "2", "--quiet"]


def test_denoise_command_writes_its_record_and_student(tmp_path, capsys):
    import json

    from ddlnl.cli import main

    out = tmp_path / "d"
    assert main(["denoise", "--noise", "symmetric:0.4", "--out", str(out), "--set", "denoise.threshold=0.9",
                 *CLI_TINY]) == 0
    printed = capsys.readouterr().out
    assert "clean-test accuracy: denoise" in printed and "synthetic set only" in printed
    summary = json.loads((out / "denoise.json").read_text())
    c = summary["counts"]
    assert c["agree"] + c["pseudo"] + c["dropped"] == round(0.9 * 1257)  # 10% held out for the epoch choice
    assert summary["denoise_config"]["threshold"] == 0.9 and len(summary["synthetic_only_accuracies"]) == 2
    assert summary["selected_epoch"] in (1, 2) and (out / "student.safetensors").exists()


def test_denoise_command_refuses_a_bad_setting_in_one_line(tmp_path, capsys):
    from ddlnl.cli import main

    assert main(["denoise", "--set", "denoise.mix=2", "--out", str(tmp_path / "d"), *CLI_TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "denoise.mix" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "d").exists()
