"""Label issues: flags follow the thresholds, the table has a row per sample, cleaned labels round-trip
into `ddlnl baseline`, wrong label files are refused in one line; the optional cleanlab route."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from ddlnl.cli import main
from ddlnl.errors import UserError
from ddlnl.label_issues import (IssuesConfig, confident_learning_issues, deconvolve_votes, find_issues,
                                neighbour_votes)
from ddlnl.noise import load_noisy_labels
from test_run_dir import run_record

# Every stage at toy size on the bundled digits data (1257 training images): seconds, not minutes.
TINY = ["--set", "dm.iterations=2", "--set", "dm.width=8", "--set", "dm.batch_real=8", "--set", "train.epochs=3",
        "--set", "train.width=8", "--set", "baseline.epochs=1", "--set", "baseline.width=8",
        "--set", "issues.n_models=2", "--ipc", "2", "--quiet"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    assert "error:" in err[-1] and all("error:" not in line for line in err[:-1]), err
    return err[-1]


def _problem(n=600, k=3, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, k, n)
    given = np.where(rng.random(n) < 0.3, rng.integers(0, k, n), clean)
    probs = 0.5 * np.eye(k)[clean] + 0.5 * rng.dirichlet(np.ones(k), n)
    return probs, given, clean


@pytest.mark.parametrize("threshold", ["estimated", "per-class", "0.4"])
@pytest.mark.parametrize("score", ["self-confidence", "posterior"])
def test_flags_follow_the_threshold_rule(threshold, score):
    probs, given, _ = _problem()
    votes = np.random.default_rng(1).dirichlet(np.ones(3), len(given))
    for v in (None, votes):
        iss = find_issues(probs, given, 3, IssuesConfig(score=score, threshold=threshold), votes=v)
        if threshold == "per-class":
            expected, _ = confident_learning_issues(iss.pred_probs, given, 3)
            np.testing.assert_array_equal(iss.is_issue, expected)
        else:
            np.testing.assert_array_equal(iss.is_issue, iss.quality < iss.thresholds[given])
        assert iss.suggested.shape == given.shape and np.all((iss.quality >= 0) & (iss.quality <= 1))
        np.testing.assert_allclose(iss.pred_probs.sum(axis=1), 1.0)
        cleaned = iss.cleaned_labels()
        np.testing.assert_array_equal(cleaned[~iss.is_issue], given[~iss.is_issue])
        np.testing.assert_array_equal(cleaned[iss.is_issue], iss.suggested[iss.is_issue])


def _symmetric(rate, k=10):
    t = np.full((k, k), rate / (k - 1))
    np.fill_diagonal(t, 1 - rate)
    return t


def _exact(t, prior_probs, given):
    from ddlnl.estimate import NoiseEstimate, class_prior_from_labels

    pi, _ = class_prior_from_labels(t, given)
    return NoiseEstimate(transition=t, noise_rate=float(1 - pi @ np.diag(t)), class_prior=pi,
                         posterior=prior_probs, temperature=1.0, log_likelihood=0.0, iterations=0)


@pytest.mark.parametrize("rate", [0.4, 0.6])
def test_exact_votes_and_T_recover_the_true_label_of_wrong_labels(rate):
    """The vote estimates P(given | x) = T[true]; the posterior must not count the noise twice."""
    from ddlnl.noise import apply_transition

    rng = np.random.default_rng(0)
    k, n = 10, 5000
    true = rng.integers(0, k, n)
    t = _symmetric(rate)
    given = apply_transition(true, t, 1)
    votes = t[true]  # exact: the distribution of the given label of a sample of this true class
    teachers = np.full((n, k), 1.0 / k)  # uninformative teachers: the vote alone must do it
    iss = find_issues(teachers, given, k, IssuesConfig(neighbours=50), votes=votes,
                      estimate=_exact(t, teachers, given))
    wrong = given != true
    assert (iss.suggested[wrong] == true[wrong]).mean() >= 0.9  # the earlier blend: 53% (0.4), 42% (0.6)
    assert (iss.suggested[~wrong] == true[~wrong]).mean() >= 0.9
    # The quality of a right label is above that of every wrong one.
    assert iss.quality[~wrong].min() > iss.quality[wrong].max()


def test_deconvolved_exact_vote_is_the_true_class():
    t = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    r = deconvolve_votes(t, t, max_iter=3000)  # vote of class c = row c of T
    np.testing.assert_allclose(r, np.eye(3), atol=0.02)
    np.testing.assert_allclose(r.sum(axis=1), 1.0)


def test_per_class_threshold_flags_almost_nothing_on_clean_labels():
    probs, _, clean = _problem(seed=5)
    iss = find_issues(probs, clean, 3, IssuesConfig(threshold="per-class"))
    assert iss.is_issue.mean() < 0.02  # the earlier "below the class mean" rule flagged 61%
    np.testing.assert_allclose(iss.thresholds, [iss.pred_probs[clean == j, j].mean() for j in range(3)])


def test_per_class_rule_is_cleanlabs_confident_learning():
    pytest.importorskip("cleanlab")
    from cleanlab.filter import find_label_issues

    for seed in range(3):
        probs, given, _ = _problem(seed=seed)
        probs = 0.7 * probs + 0.3 * np.random.default_rng(seed).dirichlet(np.ones(3), len(given))
        mine, _ = confident_learning_issues(probs, given, 3)
        theirs = find_label_issues(given, probs, filter_by="confident_learning", n_jobs=1)
        np.testing.assert_array_equal(mine, theirs)
        assert 0 < mine.sum() < len(given)


def test_estimated_threshold_flags_the_expected_number_per_class():
    probs, given, clean = _problem(seed=2)
    iss = find_issues(probs, given, 3, IssuesConfig(neighbours=0))
    expected = iss.estimate.expected_wrong_per_class(given)
    flagged = np.bincount(given[iss.is_issue], minlength=3)
    assert np.all(np.abs(flagged - np.round(expected)) <= 1)
    assert iss.is_issue.sum() == pytest.approx(iss.noise_rate * len(given), abs=3)


def test_neighbour_votes_exclude_the_sample_itself():
    # Two tight clusters; one sample of cluster A carries cluster B's label.
    feats = torch.cat([torch.randn(20, 5) * 0.01 + 5, torch.randn(20, 5) * 0.01 - 5])
    feats[:, 1] = torch.cat([torch.ones(20), -torch.ones(20)])  # the clusters differ in direction too
    labels = np.array([0] * 20 + [1] * 20)
    labels[3] = 1
    votes = neighbour_votes(feats, labels, 2, k=10, embed_dim=0)
    np.testing.assert_allclose(votes.sum(axis=1), 1.0)
    assert votes[3, 1] == 0.0 and votes[3, 0] == 1.0  # its own wrong label does not vote for itself
    assert votes[25, 1] == 1.0


def test_config_refuses_bad_values():
    for bad in (IssuesConfig(score="margin"), IssuesConfig(threshold="high"), IssuesConfig(threshold="1.5"),
                IssuesConfig(n_models=0), IssuesConfig(teacher_weight=2.0)):
        with pytest.raises(UserError):
            bad.check()


@pytest.fixture(scope="module")
def issues_run(tmp_path_factory):
    """One tiny `ddlnl issues` run (DM distilled first), shared by the CLI tests below."""
    out = tmp_path_factory.mktemp("issues") / "run"
    assert main(["issues", "--noise", "symmetric:0.4", "--out", str(out), *TINY]) == 0
    return out


def test_issues_table_has_one_row_per_sample_and_flags_follow_thresholds(issues_run):
    summary = json.loads((issues_run / "issues.json").read_text())
    with open(issues_run / "issues.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["index", "given_label", "suggested_label", "quality", "is_issue"]
    assert len(rows) == summary["samples"] == 1257  # digits training split
    assert [int(r["index"]) for r in rows] == list(range(1257))
    thresholds = summary["thresholds"]
    for r in rows:
        assert int(r["is_issue"]) == int(float(r["quality"]) < thresholds[int(r["given_label"])])
    assert sum(int(r["is_issue"]) for r in rows) == summary["flagged"]
    assert 0.0 <= summary["against_known_noise"]["auroc"] <= 1.0 and "downstream" in summary
    given = np.array([int(r["given_label"]) for r in rows])
    noise = load_noisy_labels(issues_run / "cleaned_labels.npz")
    cleaned = np.where([int(r["is_issue"]) for r in rows], [int(r["suggested_label"]) for r in rows], given)
    np.testing.assert_array_equal(noise.noisy.numpy(), cleaned)
    assert noise.dataset == "digits" and (issues_run / "synthetic-dm-ipc2.safetensors").exists()
    pred = np.load(issues_run / "pred_probs.npy")  # for cleanlab / Datalab: N x K, rows = samples in order
    assert pred.shape == (1257, 10) and pred.dtype == np.float64
    np.testing.assert_allclose(pred.sum(axis=1), 1.0)


def test_cleaned_labels_round_trip_into_baseline(issues_run, tmp_path, capsys):
    from ddlnl.data import load_dataset
    from ddlnl.noise import NoiseSpec, make_noise

    labels = issues_run / "cleaned_labels.npz"
    assert main(["baseline", "--noise", f"file:{labels}", "--set", "baseline.epochs=1", "--set", "baseline.width=8",
                 "--n-runs", "1", "--quiet", "--out", str(tmp_path / "b")]) == 0
    assert "baseline:" in capsys.readouterr().out
    assert len(run_record(tmp_path / "b", "baseline")["accs"]) == 1
    # Read back as labels, the file's residual noise is what `issues` reported after relabelling.
    summary = json.loads((issues_run / "issues.json").read_text())
    back = make_noise(NoiseSpec("file", path=str(labels)), load_dataset("digits"), seed=0)
    assert back.realized_rate == pytest.approx(1 - summary["against_known_noise"]["relabelled_correct"])


def test_label_file_of_wrong_length_or_dataset_is_refused(issues_run, tmp_path, capsys):
    # Cleaned labels for a 500-image subset do not fit the whole training split ...
    small = tmp_path / "small"
    assert main(["issues", "--noise", "symmetric:0.4", "--train-subset", "500", "--no-train", "--out", str(small),
                 *TINY]) == 0
    capsys.readouterr()
    assert main(["baseline", "--noise", f"file:{small / 'cleaned_labels.npz'}", "--set", "baseline.epochs=1",
                 "--set", "baseline.width=8", "--quiet", "--out", str(tmp_path / "b1")]) == 2
    line = _error_line(capsys)
    assert "training samples" in line and "digits has 1257" in line
    # ... and digits labels do not fit another dataset.
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert main(["baseline", "--dataset", "npz", "--data-root", str(tmp_path / "mine.npz"), "--noise",
                 f"file:{issues_run / 'cleaned_labels.npz'}", "--quiet", "--out", str(tmp_path / "b2")]) == 2
    assert "made for digits" in _error_line(capsys)


def test_issues_with_a_given_synthetic_set_and_filter_mode(issues_run, tmp_path, capsys):
    syn = issues_run / "synthetic-dm-ipc2.safetensors"
    assert main(["issues", "--synthetic", str(syn), "--filter", "--out", str(tmp_path / "f"), *TINY,
                 "--set", "issues.neighbours=0", "--set", "issues.threshold=0.1"]) == 0
    summary = json.loads((tmp_path / "f" / "issues.json").read_text())
    assert summary["downstream"]["mode"] == "filter" and summary["thresholds"] == [0.1] * 10
    assert not (tmp_path / "f" / "synthetic-dm-ipc2.safetensors").exists()  # nothing distilled
    capsys.readouterr()
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    assert main(["issues", "--synthetic", str(syn), "--dataset", "npz", "--data-root", str(tmp_path / "mine.npz"),
                 "--noise", "none", "--out", str(tmp_path / "g"), "--quiet"]) == 2
    assert "distilled from digits, not npz" in _error_line(capsys) and not (tmp_path / "g").exists()
    assert main(["issues", "--set", "issues.score=margin", "--out", str(tmp_path / "h"), "--quiet"]) == 2
    assert "issues.score" in _error_line(capsys)


def test_estimate_prints_advice_with_its_numbers(issues_run, tmp_path, capsys):
    syn = issues_run / "synthetic-dm-ipc2.safetensors"
    assert main(["estimate", "--noise", "symmetric:0.4", "--synthetic", str(syn), "--out", str(tmp_path / "e"),
                 *TINY]) == 0
    out = capsys.readouterr().out
    assert "direct estimate of the noise rate" in out and "IPC <= |S|(1 - tau)/C = 1257*(1 - " in out
    assert "realized rate 0.4" in out
    result = json.loads((tmp_path / "e" / "estimate.json").read_text())
    t = np.asarray(result["estimate"]["transition"])
    np.testing.assert_allclose(t.sum(axis=1), 1.0)


def test_estimate_reads_a_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--out", str(run), "--noise", "symmetric:0.4", "--set", "train.epochs=2", "--set",
                 "baseline.epochs=1", "--set", "dm.iterations=2", "--set", "dm.batch_real=8", "--set", "train.width=8",
                 "--set", "baseline.width=8", "--set", "dm.width=8", "--n-runs", "1", "--ipc", "1,2",
                 "--no-early-stop", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["estimate", "--run", str(run), "--out", str(tmp_path / "e"), "--set", "train.epochs=2",
                 "--set", "train.width=8", "--set", "issues.n_models=1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "results over IPC: IPC 1:" in out and "full-noisy baseline" in out and "advice: distil at IPC <=" in out
    assert main(["estimate", "--run", str(run), "--dataset", "digits", "--quiet"]) == 2
    assert "--run takes its data" in _error_line(capsys)


def test_estimate_reads_a_sweep_root_of_one_data_setting(tmp_path, capsys):
    """A sweep root holds the records a run directory holds: `estimate --run` reads either; a root of
    several data settings is refused in one line."""
    import yaml

    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "one", "datasets": ["digits"], "noises": ["symmetric:0.4"], "methods": ["dm"], "ipcs": [1],
        "baselines": ["converged"], "n_runs": 1, "preset": "cpu",
        "set": ["train.epochs=2", "train.width=8", "baseline.epochs=1", "baseline.width=8"],
        "method_set": {"dm": ["iterations=2", "width=8", "batch_real=8"]}}))
    root = tmp_path / "root"
    assert main(["sweep", str(grid), "--root", str(root), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["estimate", "--run", str(root), "--out", str(tmp_path / "e"), "--set", "train.epochs=2",
                 "--set", "train.width=8", "--set", "issues.n_models=1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "results over IPC: IPC 1:" in out and "full-noisy baseline" in out
    # the DM set of the sweep was the one scored (not one distilled here)
    assert not list((tmp_path / "e").glob("*.safetensors"))
    # a record of another noise in the same root: two data settings
    path = next((root / "records").glob("*random-ipc1*.json"))
    rec = json.loads(path.read_text())
    rec.pop("sha256", None)
    rec["cell"]["noise"] = "symmetric:0.2"
    rec["name"] = rec["name"].replace("0.4", "0.2")
    (root / "records" / path.name.replace("0.4", "0.2")).write_text(json.dumps(rec))
    assert main(["estimate", "--run", str(root), "--quiet"]) == 2
    assert "holds records of 2 data settings" in _error_line(capsys)


# ------------------------------------------------------------------------------ cleanlab route


def test_missing_cleanlab_is_one_clear_line(monkeypatch):
    import sys

    from ddlnl.compare import require_cleanlab

    monkeypatch.setitem(sys.modules, "cleanlab", None)  # makes `import cleanlab` fail
    with pytest.raises(UserError, match=r"pip install 'ddlnl\[compare\]'"):
        require_cleanlab()


def test_cleanlab_route_on_a_tiny_problem(tiny_dataset):
    pytest.importorskip("cleanlab")
    from ddlnl.compare import cleanlab_issues, cleanlab_route
    from ddlnl.train import TrainConfig

    ds = tiny_dataset
    rng = np.random.default_rng(0)
    clean = ds.train.labels.numpy()
    flip = rng.random(len(clean)) < 0.25
    given = np.where(flip, (clean + 1) % 4, clean)  # pair-flip noise i -> i+1
    cfg = TrainConfig(width=8, epochs=15, batch_size=32, lr=0.05, augment="none")
    iss = cleanlab_route(ds.train.with_labels(torch.from_numpy(given)), cfg, num_classes=4, folds=2, seed=0)
    assert iss.method == "cleanlab" and iss.pred_probs.shape == (len(given), 4) and iss.thresholds is None
    assert iss.is_issue.dtype == bool and len(iss.quality) == len(given)
    np.testing.assert_allclose(iss.pred_probs.sum(axis=1), 1.0)
    # Orientation: with a perfect classifier, ddlnl's T[i, i+1] (true i -> noisy i+1) is where the mass is.
    exact = cleanlab_issues(given, 0.96 * np.eye(4)[clean] + 0.01)
    t = exact.transition
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)
    for i in range(4):
        assert t[i, (i + 1) % 4] > 0.1 and t[(i + 1) % 4, i] < 0.05
    assert exact.noise_rate == pytest.approx(flip.mean(), abs=0.05)
    assert exact.is_issue[flip].mean() > 0.8 and exact.is_issue[~flip].mean() < 0.1
