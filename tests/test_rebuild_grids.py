"""``benchmarks/rebuild_report_grids.py`` rebuilds a report's synthetic sets exactly as the sweep's
cells make them (same key, seed and path), so the committed grids can be drawn again."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from ddlnl.results import load_records
from ddlnl.cells import synthetic_key
from ddlnl.sweep import Cell, cell_job, load_grid, run_local
from ddlnl.synthetic import load_synthetic

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rebuild_report_grids.py"
GRID = Path(__file__).resolve().parents[1] / "configs" / "grids" / "tiny-digits.yaml"


def test_rebuilt_sets_are_the_sweeps_own(tmp_path, monkeypatch, capsys):
    root, out = tmp_path / "root", tmp_path / "grids"
    monkeypatch.setattr(sys, "argv", ["rebuild", "--grid", str(GRID), "--root", str(root), "--out", str(out),
                                      "--max-ipc", "2", "--only", "noise=symmetric:0.4"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert sorted(p.name for p in out.glob("*.png")) == ["digits-dm-symmetric-0.4-ipc2.png",
                                                         "digits-random-symmetric-0.4-ipc2.png"]
    rebuilt = list((root / "artifacts" / "synthetic").glob("*dm-ipc2*.safetensors"))
    assert len(rebuilt) == 1
    # The sweep of the same grid finds the rebuilt set under its key and distils nothing again.
    stamp = rebuilt[0].stat().st_mtime_ns
    grid = load_grid(GRID)
    run_local(grid, root, show_progress=False, echo=lambda s: None, only=["noise=symmetric:0.4", "ipc=2"])
    assert rebuilt[0].stat().st_mtime_ns == stamp  # not written again
    rec = next(r for r in load_records(root, grid) if r["cell"]["method"] == "dm" and r["cell"]["ipc"] == 2)
    cell = Cell(**rec["cell"])
    assert root / rec["artifacts"]["synthetic"] == rebuilt[0]
    assert load_synthetic(rebuilt[0]).meta["key"] == synthetic_key(cell_job(grid, cell), "dm", 2)
    # ... and it is the set a sweep makes from scratch (same configuration, seed and data)
    import torch

    run_local(grid, tmp_path / "fresh", show_progress=False, echo=lambda s: None,
              only=["noise=symmetric:0.4", "ipc=2", "method=dm"])
    fresh = load_synthetic(next((tmp_path / "fresh" / "artifacts" / "synthetic").glob("*dm-ipc2*.safetensors")))
    assert torch.equal(fresh.images, load_synthetic(rebuilt[0]).images)
