"""Long-tailed jobs: ``ddlnl run --imbalance R`` and the grid key ``imbalance`` give the training set the
exponential profile of :mod:`ddlnl.longtail` before the noise, key their records by it, leave every
balanced job's keys as they were, and refuse a bad ratio in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml

from ddlnl.cli import main
from ddlnl.errors import ConfigError
from ddlnl.job import JobConfig, prepare_data, resolve_job
from ddlnl.longtail import longtail_counts
from ddlnl.pipeline import default_run_dir
from ddlnl.sweep import Cell, cell_job, cell_key, grid_from_dict, grid_to_dict

from test_run_dir import TINY

GRID = {"name": "g", "datasets": ["digits"], "noises": ["symmetric:0.4"], "methods": ["dm"], "ipcs": [1],
        "baselines": ["converged"], "n_runs": 1, "preset": "cpu", "set": ["train.epochs=1"],
        "method_set": {"dm": ["iterations=1"]}}


def test_prepare_data_makes_the_clean_set_long_tailed_then_noises_it():
    balanced = prepare_data(JobConfig(noise="none"))
    have = torch.bincount(balanced.dataset.train.labels, minlength=10)
    lt = prepare_data(JobConfig(noise="symmetric:0.4", imbalance=10))
    clean = lt.noisy.clean
    # Counts: the profile with n_max = the smallest class of the full set (independent formula).
    expected = [int(int(have.min()) * 10 ** (-c / 9) + 1e-9) for c in range(10)]
    assert torch.bincount(clean, minlength=10).tolist() == expected == longtail_counts(int(have.min()), 10, 10)
    assert torch.equal(lt.dataset.train.labels, clean)  # the dataset keeps the clean labels of the kept images
    # Noise comes after the cut: it is applied to the long-tailed set (so the given counts of the
    # tail grow by flips from the head), and it flips about 40% of the kept images.
    assert lt.noisy.noisy.numel() == sum(expected)
    assert 0.3 < float((lt.noisy.noisy != clean).float().mean()) < 0.5
    assert int((lt.noisy.noisy == 9).sum()) > expected[-1]
    # Seeded by the job's seed; the same images on a re-run.
    again = prepare_data(JobConfig(noise="symmetric:0.4", imbalance=10))
    assert torch.equal(again.dataset.train.images, lt.dataset.train.images)
    other = prepare_data(JobConfig(noise="symmetric:0.4", imbalance=10, seed=1))
    assert not torch.equal(other.dataset.train.images, lt.dataset.train.images)


def test_a_subset_is_taken_before_the_long_tail():
    lt = prepare_data(JobConfig(noise="none", train_subset=1000, imbalance=5))
    sub = prepare_data(JobConfig(noise="none", train_subset=1000))
    n_max = int(torch.bincount(sub.dataset.train.labels, minlength=10).min())
    assert torch.bincount(lt.dataset.train.labels, minlength=10).tolist() == longtail_counts(n_max, 10, 5)
    kept = set(map(tuple, lt.dataset.train.images.flatten(1).tolist()))
    assert kept <= set(map(tuple, sub.dataset.train.images.flatten(1).tolist()))


def test_balanced_jobs_keep_their_keys_and_an_imbalanced_one_gets_its_own():
    # Values computed before the field existed: a balanced job's run directory keeps its name.
    assert default_run_dir(resolve_job(JobConfig())).name == "digits-symmetric-0.6-seed0-86e677ea"
    fm = replace(JobConfig(), dataset="fashion-mnist", noise="asymmetric:0.4", train_subset=2000)
    assert default_run_dir(resolve_job(fm)).name == "fashion-mnist-asymmetric-0.4-seed0-3b09919e"
    assert default_run_dir(resolve_job(replace(fm, imbalance=1))).name == "fashion-mnist-asymmetric-0.4-seed0-3b09919e"
    lt = default_run_dir(resolve_job(replace(fm, imbalance=100)))
    assert lt.name != "fashion-mnist-asymmetric-0.4-seed0-3b09919e"
    assert lt == default_run_dir(resolve_job(replace(fm, imbalance=100.0)))  # 100 and 100.0: one setting
    # Sweep records: the key changes with the ratio, not at ratio 1.
    cell = Cell("digits", "symmetric:0.4", 0, "dm", 1)
    plain = grid_from_dict(GRID)
    assert cell_key(plain, cell) == cell_key(grid_from_dict({**GRID, "imbalance": 1}), cell)
    tailed = grid_from_dict({**GRID, "imbalance": 10})
    assert cell_key(plain, cell) != cell_key(tailed, cell)
    assert cell_job(tailed, cell).job.imbalance == 10.0
    assert "imbalance" not in grid_to_dict(plain)
    assert grid_from_dict(grid_to_dict(tailed)) == tailed


@pytest.mark.parametrize("bad", [0.5, 0, -3, float("nan"), float("inf"), True, "ten"])
def test_a_bad_ratio_is_refused_by_the_job_and_the_grid(bad):
    with pytest.raises(ConfigError, match="imbalance must be a finite number >= 1"):
        JobConfig(imbalance=bad).check()
    with pytest.raises(ConfigError, match="grid key 'imbalance'"):
        grid_from_dict({**GRID, "imbalance": bad})


@pytest.mark.parametrize("argv,words", [
    (["--imbalance", "0.5"], "must be a finite number >= 1"),
    (["--imbalance", "ten"], "expected a number >= 1"),
    (["--imbalance", "nan"], "must be a finite number >= 1"),
    (["--imbalance", "1e9"], "leaves the tail class no image"),
    (["--set", "imbalance=0"], "imbalance must be a finite number >= 1"),
])
def test_run_refuses_a_bad_ratio_in_one_line(argv, words, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the input was refused")

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", refuse)
    assert main(["run", "--out", str(tmp_path / "run"), *argv, *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err


def test_sweep_refuses_a_bad_grid_ratio_in_one_line(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**GRID, "imbalance": 0.5}))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grid key 'imbalance'" in err[0], err


def test_run_with_imbalance_records_long_tailed_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--imbalance", "10", "--methods", "dm", "--ipc", "1", "--n-runs", "1",
                 *TINY]) == 0
    printed = capsys.readouterr().out
    assert "|" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["imbalance"] == 10.0
    from ddlnl.noise import load_noisy_labels

    n_max = int(torch.bincount(prepare_data(JobConfig(noise="none")).dataset.train.labels).min())
    assert torch.bincount(load_noisy_labels(out / "noise.npz").clean, minlength=10).tolist() == longtail_counts(n_max, 10, 10)
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert {r["cell"]["method"] for r in records} >= {"baseline", "dm", "random"}
    # A balanced run of the same data setting is another directory's (the data differ): refused here.
    assert main(["run", "--out", str(out), "--methods", "dm", "--ipc", "1", "--n-runs", "1", *TINY]) == 2
    assert "holds a run on other data (imbalance" in capsys.readouterr().err
