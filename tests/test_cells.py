"""One cell runner (ddlnl.cells) behind `ddlnl run` and `ddlnl sweep`."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ddlnl import cells, utils
from ddlnl.job import JobConfig, resolve_job
from ddlnl.pipeline import collect_results, run_job
from ddlnl.sweep import Cell, grid_from_dict, record_path, run_cell
from ddlnl.train import EvalResult
from ddlnl.utils import atomic_write_json, with_checksum

TINY = ["train.epochs=3", "train.width=8", "baseline.epochs=2", "baseline.width=8"]


def test_run_and_sweep_give_a_cell_the_same_accuracies(tmp_path):
    # The same cell through both commands: same seeds, same distillation and evaluation path.
    job = JobConfig(methods=(), ipcs=(1,), n_runs=2, baseline_runs=1, preset="cpu", early_stop_baseline=False)
    resolved = resolve_job(job, TINY, torch.device("cpu"))
    results = run_job(resolved, tmp_path / "run", device=torch.device("cpu"), show_progress=False, echo=lambda m: None)
    grid = grid_from_dict({"name": "one", "datasets": ["digits"], "noises": ["symmetric:0.6"], "methods": [],
                           "ipcs": [1], "baselines": ["converged"], "n_runs": 2, "baseline_runs": 1, "preset": "cpu",
                           "set": TINY})
    root = tmp_path / "sweep"
    random = run_cell(grid, Cell("digits", "symmetric:0.6", 0, "random", 1), root)
    baseline = run_cell(grid, Cell("digits", "symmetric:0.6", 0, "baseline"), root)
    [run_random] = [c for c in results["cells"] if c["cell"]["method"] == "random"]
    assert random["accs"] == run_random["accs"] and len(random["accs"]) == 2
    assert baseline["accs"] == results["baseline"]["accs"]
    # One record format and one key formula: the same cell has the same key and fields in both.
    assert run_random["key"] == random["key"] and run_random["name"] == random["name"]
    assert set(random) - {"grid"} <= set(run_random) and set(run_random) <= set(random)
    assert results["baseline"]["key"] == baseline["key"]


def test_a_sweep_cell_caches_under_its_root_without_touching_the_environment(tmp_path, monkeypatch):
    seen = {}

    def fake_baseline(*args, **kwargs):
        seen["cache"] = utils.cache_root()
        return EvalResult(accs=[0.5], seeds=[0])

    monkeypatch.setattr(cells, "run_baseline", fake_baseline)
    monkeypatch.delenv(utils.CACHE_ENV, raising=False)
    before = dict(os.environ)
    grid = grid_from_dict({"name": "env", "datasets": ["digits"], "noises": ["none"], "methods": [], "ipcs": [1],
                           "baselines": ["converged"], "preset": "cpu"})
    rec = run_cell(grid, Cell("digits", "none", 0, "baseline"), tmp_path)
    assert rec["accs"] == [0.5]
    assert seen["cache"] == tmp_path / "artifacts" / "cache"
    assert dict(os.environ) == before  # no process-wide change
    assert utils.cache_root() != tmp_path / "artifacts" / "cache"  # only for the cell


def test_a_damaged_run_record_is_reported_not_skipped_silently(tmp_path):
    def record(ipc, **changes):
        cell = Cell("digits", "none", 0, "random", ipc)
        key = f"{ipc:02d}" * 8
        rec = {"cell": {"dataset": "digits", "noise": "none", "seed": 0, "method": "random", "ipc": ipc},
               "name": cell.name, "key": key, "noise": {"dataset": "digits", "spec": {"kind": "none"}, "realized_rate": 0.0},
               "mean": 0.5, "std": 0.0, "accs": [0.5], "artifacts": {}}
        return record_path(tmp_path, cell, key), with_checksum(rec), changes

    path, good, _ = record(1)
    atomic_write_json(path, good)
    path, rec, _ = record(10)
    path.write_text(json.dumps(rec)[:40])  # truncated
    path, rec, _ = record(50)
    path.write_text(json.dumps(dict(rec, mean=0.9)))  # edited: its checksum no longer matches
    said = []
    results = collect_results(tmp_path, echo=said.append)
    assert [c["cell"]["ipc"] for c in results["cells"]] == [1]
    assert len(said) == 2 and "random-ipc10" in said[0] and "random-ipc50" in said[1]
    assert all("left out" in s for s in said)


@pytest.mark.parametrize("name, stopping", [("baseline", "converged"), ("baseline_early_stop", "early-stop")])
def test_baseline_cells_take_their_stopping_rule_from_their_name(name, stopping):
    resolved = resolve_job(JobConfig(methods=(), preset="cpu"), None, torch.device("cpu"))
    assert cells.baseline_config(resolved, name).stopping == stopping


def test_renamed_settings_keep_their_record_keys_and_former_set_keys():
    """BaselineConfig.protocol became ``stopping`` and JobConfig.protocol ``eval_recipe``: result keys
    use the former names (records made before keep their keys) and ``--set`` still reads them."""
    from ddlnl.config import identity
    from ddlnl.train import BaselineConfig

    assert identity(BaselineConfig(stopping="early-stop")) == {"protocol": "early-stop", "val_fraction": 0.1,
                                                               "record_every": 1}
    old = resolve_job(JobConfig(preset="cpu"), ["protocol=own", "baseline_protocol.protocol=early-stop"])
    new = resolve_job(JobConfig(preset="cpu"), ["eval_recipe=own", "baseline_protocol.stopping=early-stop"])
    assert old == new and new.job.eval_recipe == "own" and new.baseline_protocol.stopping == "early-stop"
