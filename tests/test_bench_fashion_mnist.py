"""``benchmarks/bench_fashion_mnist.py --name/--compare``: a rerun's tables go to their own files,
the committed tables are read back cell by cell (methods and both baselines), and the changes
table puts every cell of the rerun beside the earlier value with after - before."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fashion_mnist.py"


def _record(noise, method, ipc, mean, std=0.0):
    return {"cell": {"noise": noise, "method": method, "ipc": ipc}, "mean": mean, "std": std,
            "seconds": {"distill": 12.0}, "noise": {"realized_rate": 0.4}, "histories": []}


@pytest.fixture
def bench(tmp_path):
    ns = runpy.run_path(str(SCRIPT))
    ns["write_methods"].__globals__["RESULTS"] = tmp_path
    return ns


def test_tables_are_read_back_cell_by_cell(bench, tmp_path):
    records = [_record("symmetric:0.4", "baseline", 0, 0.6180), _record("symmetric:0.4", "random", 10, 0.5012, 0.0031),
               _record("symmetric:0.4", "dm", 10, 0.7044, 0.0105), _record("asymmetric:0.4", "dance", 1, 0.6866, 0.0043)]
    bench["write_methods"](records, "scale", "before")
    bench["write_baselines"](records, "scale", "before")
    assert (tmp_path / "before_methods.md").exists() and (tmp_path / "before_baselines.md").exists()
    read = {}
    for kind in ("methods", "baselines"):
        read.update(bench["read_accuracies"](tmp_path / f"before_{kind}.md"))
    assert read == {("symmetric:0.4", "random", 10): (50.12, 0.31), ("symmetric:0.4", "dm", 10): (70.44, 1.05),
                    ("asymmetric:0.4", "dance", 1): (68.66, 0.43), ("symmetric:0.4", "baseline", 0): (61.80, 0.0)}


def test_changes_table_gives_after_minus_before_and_marks_new_cells(bench, tmp_path):
    before = [_record("symmetric:0.4", "baseline", 0, 0.6180), _record("symmetric:0.4", "dm", 10, 0.7044, 0.0105)]
    bench["write_methods"](before, "scale", "old")
    bench["write_baselines"](before, "scale", "old")
    after = [_record("symmetric:0.4", "baseline", 0, 0.6311), _record("symmetric:0.4", "dm", 10, 0.6950, 0.0020),
             _record("symmetric:0.4", "rcig", 10, 0.6600, 0.0100)]
    bench["write_changes"](after, "old", "new")
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): [c.strip() for c in line.strip("|").split("|")]
            for line in (tmp_path / "new_changes.md").read_text().splitlines() if line.startswith("| symmetric")}
    assert rows[("symmetric:0.4", "baseline", "-")][3:] == ["61.80 ± 0.00", "63.11 ± 0.00", "+1.31"]
    assert rows[("symmetric:0.4", "dm", "10")][3:] == ["70.44 ± 1.05", "69.50 ± 0.20", "-0.94"]
    assert rows[("symmetric:0.4", "rcig", "10")][3:] == ["-", "66.00 ± 1.00", "-"]


def test_changes_rerender_keeps_the_hand_written_reading(bench, tmp_path):
    before = [_record("symmetric:0.4", "dm", 10, 0.7044, 0.0105)]
    bench["write_methods"](before, "scale", "old")
    bench["write_changes"](before, "old", "new")
    target = tmp_path / "new_changes.md"
    reading = "## What changed, and what it changes\n\nWritten by hand: DM moved."
    target.write_text(target.read_text() + "\n" + reading + "\n")
    bench["write_changes"]([_record("symmetric:0.4", "dm", 10, 0.6950, 0.0020)], "old", "new")
    text = target.read_text()
    assert text.count("Written by hand: DM moved.") == 1 and text.rstrip().endswith(reading.split("\n")[-1])
    assert "69.50 ± 0.20" in text and "-0.94" in text  # the table itself was rewritten


def test_scale_paragraph_names_every_grid_and_refuses_grids_that_differ(bench):
    from ddlnl.sweep import load_grid

    root = SCRIPT.parents[1] / "configs" / "grids"
    cpu, methods = load_grid(root / "fashion-mnist-cpu.yaml"), load_grid(root / "fashion-mnist-methods.yaml")
    text = bench["describe"]([methods, cpu])
    assert text.startswith("Grids `fashion-mnist-methods`, `fashion-mnist-cpu` (configs/grids/)")
    assert "stratified 5000-image" in text and "3 evaluation runs" in text
    assert bench["describe"]([cpu]).startswith("Grid `fashion-mnist-cpu` (configs/grids/)")
    other = load_grid(root / "tiny-digits.yaml")
    with pytest.raises(SystemExit, match="tiny-digits"):
        bench["describe"]([cpu, other])
