"""Curve logs: what the records hold, exported row by row; TensorBoard only when installed."""

from __future__ import annotations

import csv

import pytest

from ddlnl import curves
from ddlnl.cli import main

RECORD = {"histories": [[{"epoch": 1, "loss": 2.0, "test_acc": 0.3}, {"epoch": 2, "loss": 1.5, "test_acc": 0.4}],
                        [{"epoch": 2, "loss": 1.4}]]}


def test_csv_has_one_row_per_run_and_recorded_epoch(tmp_path):
    curves.write_csv(tmp_path / "c.csv", [("baseline", RECORD)])
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert [(r["name"], r["run"], r["epoch"]) for r in rows] == [("baseline", "0", "1"), ("baseline", "0", "2"),
                                                                ("baseline", "1", "2")]
    assert rows[1]["test_acc"] == "0.4" and rows[2]["test_acc"] == ""


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")  # the `tensorboard` extra; skipped cleanly without it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves.write_tensorboard(tmp_path / "tb", [("baseline", RECORD)])
    for run, history in enumerate(RECORD["histories"]):
        folder = tmp_path / "tb" / f"baseline-run{run}"
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        events = EventAccumulator(str(folder))
        events.Reload()
        keys = sorted({k for entry in history for k in entry} - {"epoch"})
        assert sorted(events.Tags()["scalars"]) == keys
        for key in keys:
            logged = [(e.step, e.value) for e in events.Scalars(key)]
            assert logged == [(entry["epoch"], pytest.approx(entry[key])) for entry in history if key in entry]


def test_unknown_or_unavailable_loggers_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    assert main(["run", "--log", "wandb", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "--log wandb" in capsys.readouterr().err
    monkeypatch.setattr(curves, "tensorboard_available", lambda: False)
    assert main(["run", "--log", "tensorboard", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "pip install 'ddlnl[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_baseline_curves_are_scored_on_the_subsample_and_the_result_on_the_full_test_set(tiny_dataset):
    from ddlnl.train import BaselineConfig, TrainConfig, curve_subsample, run_baseline

    test = tiny_dataset.test  # 80 images, 20 per class
    sub = curve_subsample(test, 12)
    assert len(sub) == 12 and sorted(sub.labels.bincount().tolist()) == [3, 3, 3, 3]  # stratified
    assert curve_subsample(test, 12).images.equal(sub.images)  # the same images every time
    assert curve_subsample(test, 0) is test and curve_subsample(test, 500) is test
    cfg = TrainConfig(epochs=2, width=8, depth=2, augment="none", batch_size=64)
    res = run_baseline(tiny_dataset.train, test, cfg, BaselineConfig(curve_size=12), num_classes=4, n_runs=1)
    curve = [e["test_acc"] for e in res.histories[0]]
    assert len(curve) == 2 and all(abs(a * 12 - round(a * 12)) < 1e-6 for a in curve)  # k/12
    full = run_baseline(tiny_dataset.train, test, cfg, BaselineConfig(curve_size=0), num_classes=4, n_runs=1)
    assert res.accs == full.accs  # the curve's sample never changes the trained model or its result
