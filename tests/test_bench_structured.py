"""``benchmarks/bench_structured.py --append``: the rows measured in committed tables are read back
and kept as written, with the run that measured them; what is missing stays "not run"; a table
made under other settings is refused."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_structured.py"
SETS = ("['train.width=32', 'baseline.width=32', 'baseline.epochs=40', 'baseline_protocol.record_every=5', "
        "'dm.width=32', 'dm.iterations=100']")
STRUCTURED = f"""# Structured noise: DM with and without the transition-matrix remedy

Machine: AMD EPYC, 2 cores, no GPU, load average (1/5/15 min) 1.0/1.3/3.2  
Run: 2026-12-02 16:22 UTC

| noise | row | IPC | accuracy (%) | Δ converged | Δ early stop | Δ unremedied |
|---|---|---|---|---|---|---|
| asymmetric:0.4 | baseline: converged CE | full | 71.85 ± 0.00 | - | - | - |
| asymmetric:0.4 | baseline: early-stopped CE | full | 73.55 ± 0.00 | - | - | - |
| asymmetric:0.4 | random subset | 1 | not run | - | - | - |
| asymmetric:0.4 | DM (no remedy) | 10 | 71.13 ± 0.00 | -0.72 | -2.42 | - |
| asymmetric:0.4 | DM + remedy (estimated T) | 10 | 72.54 ± 0.00 | +0.69 | -1.01 | +1.41 |
| asymmetric:0.4 | (T estimate: rate 0.187 vs realized 0.202, max abs T error 0.320) |  |  |  |  |  |

Overrides: {SETS}.
"""
LONGTAIL = f"""# Long-tailed noisy Fashion-MNIST: per-class IPC budgets

Machine: AMD EPYC, 2 cores, no GPU, load average (1/5/15 min) 1.0/1.3/3.2  
Run: 2026-12-02 16:22 UTC

| imbalance | row | images per class (class 0 = head) | accuracy (%) | head (%) | middle (%) | tail (%) |
|---|---|---|---|---|---|---|
| 10 | baseline: converged CE | full | 77.12 ± 0.00 | 83.0 | 60.6 | 85.8 |
| 10 | DM / uniform | 10,10,10,10,10,10,10,10,10,10 | 61.97 ± 0.00 | 60.5 | 47.4 | 78.5 |
| 10 | DM / clean | 23,17,14,13,10,5,7,7,3,1 | not run | - | - | - |
| 10 | (given counts [367, 323, 245, 215, 200, 159, 150, 137, 112, 132]; clean counts [500, 387, 299, 232, 179, 139, 107, 83, 64, 50]) |  |  |  |  |  |

Overrides: {SETS}.
"""


def _tables(tmp_path: Path, structured: str = STRUCTURED) -> Path:
    res = tmp_path / "results"
    res.mkdir()
    (res / "structured.md").write_text(structured)
    (res / "longtail.md").write_text(LONGTAIL)
    return res


def _run(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_structured.py", *argv])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def _rows(path: Path) -> list[list[str]]:
    return [[c.strip() for c in line[1:-1].split(" | ")] for line in path.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| noise") and not line.startswith("| imbalance")]


def test_append_keeps_the_measured_rows_as_written_with_their_run(tmp_path, monkeypatch, capsys):
    res = _tables(tmp_path)
    bench = runpy.run_path(str(SCRIPT))
    legacy, runs = bench["read_legacy"](res)
    assert legacy["s-asymmetric:0.4-dm-estimated-ipc10"]["mean"] == pytest.approx(0.7254)
    assert "s-asymmetric:0.4-random-ipc1" not in legacy  # "not run" is not a measurement
    assert legacy["lt-10-dm-uniform"]["groups"]["tail"] == pytest.approx(0.785)
    assert legacy["lt-10-budgets"]["budgets"]["clean"] == [23, 17, 14, 13, 10, 5, 7, 7, 3, 1]
    assert legacy["lt-10-budgets"]["given_counts"][0] == 367
    assert runs["structured"]["A"].startswith("2026-12-02 16:22 UTC; AMD EPYC")

    _run(monkeypatch, "--no-run", "--append", "--results", str(res), "--root", str(tmp_path / "root"))
    rows = {(r[0], r[1], r[2]): r for r in _rows(res / "structured.md")}
    kept = rows[("asymmetric:0.4", "DM + remedy (estimated T)", "10")]
    assert kept == ["asymmetric:0.4", "DM + remedy (estimated T)", "10", "72.54 ± 0.00", "+0.69", "-1.01", "+1.41", "A"]
    assert rows[("asymmetric:0.4", "random subset", "1")][3:] == ["not run", "-", "-", "-", "-"]
    assert ("pairflip:0.4", "DM (no remedy)", "50") in rows  # every setting of the study listed
    text = (res / "structured.md").read_text()
    assert "- run A: 2026-12-02 16:22 UTC; AMD EPYC" in text
    lt = {(r[0], r[1]): r for r in _rows(res / "longtail.md")}
    assert lt[("10", "DM / uniform")][3:] == ["61.97 ± 0.00", "60.5", "47.4", "78.5", "A"]
    assert lt[("10", "DM / clean")][2:4] == ["23,17,14,13,10,5,7,7,3,1", "not run"]
    # A hand-written conclusions section is kept by a rewrite; appending again reads its own output back unchanged.
    (res / "structured.md").write_text((res / "structured.md").read_text() + "\n## Conclusions\n\nBy hand.\n")
    before = (res / "structured.md").read_text().split("\n", 4)[4]
    _run(monkeypatch, "--no-run", "--append", "--results", str(res), "--root", str(tmp_path / "root"))
    assert (res / "structured.md").read_text().split("\n", 4)[4] == before
    assert before.endswith("## Conclusions\n\nBy hand.\n")


def test_append_refuses_a_table_made_under_other_settings(tmp_path, monkeypatch):
    res = _tables(tmp_path)
    with pytest.raises(SystemExit, match="was made with the overrides"):
        _run(monkeypatch, "--no-run", "--append", "--dm-iterations", "300", "--results", str(res),
             "--root", str(tmp_path / "root"))


ITERATED = STRUCTURED.replace(
    "| asymmetric:0.4 | (T estimate:",
    "| asymmetric:0.4 | DM (no remedy) | 50 | 71.60 ± 0.00 | -0.25 | -1.95 | - |\n"
    "| asymmetric:0.4 | DM + remedy (T re-estimated once, posterior init) | 50 | 79.03 ± 0.00 | +7.18 | +5.48 | +7.43 |\n"
    "| asymmetric:0.4 | RCIG (no remedy) | 10 | 67.96 ± 0.00 | -3.89 | -5.59 | - |\n"
    "| asymmetric:0.4 | RCIG + remedy (T re-estimated once) | 10 | 74.00 ± 0.00 | +2.15 | +0.45 | +6.04 |\n"
    "| asymmetric:0.4 | (T re-estimated once: rate 0.194 vs realized 0.202, max abs T error 0.200) |  |  |  |  |  |\n"
    "| asymmetric:0.4 | (T estimate:")


def test_append_keeps_the_re_estimated_rows_and_their_estimate_line(tmp_path, monkeypatch):
    res = _tables(tmp_path, ITERATED)
    bench = runpy.run_path(str(SCRIPT))
    legacy, _ = bench["read_legacy"](res)
    assert legacy["s-asymmetric:0.4-dm-estimated2-post-ipc50"]["mean"] == pytest.approx(0.7903)
    assert "A" in legacy["s-asymmetric:0.4-estimate2-notes"]
    _run(monkeypatch, "--no-run", "--append", "--results", str(res), "--root", str(tmp_path / "root"))
    rows = {(r[0], r[1], r[2]): r for r in _rows(res / "structured.md")}
    assert rows[("asymmetric:0.4", "DM + remedy (T re-estimated once, posterior init)", "50")][3:] == \
        ["79.03 ± 0.00", "+7.18", "+5.48", "+7.43", "A"]
    assert rows[("asymmetric:0.4", "RCIG + remedy (T re-estimated once)", "10")][3:] == \
        ["74.00 ± 0.00", "+2.15", "+0.45", "+6.04", "A"]
    assert ("asymmetric:0.4", "RCIG + remedy (estimated T)", "10") in rows  # "not run": listed beside its measured rows
    lines = [r[1] for r in _rows(res / "structured.md") if r[0] == "asymmetric:0.4" and r[1].startswith("(T ")]
    assert lines == ["(T estimate: rate 0.187 vs realized 0.202, max abs T error 0.320)",
                     "(T re-estimated once: rate 0.194 vs realized 0.202, max abs T error 0.200)"]
    text = (res / "structured.md").read_text()
    # The goal's verdict is formed from the kept rows (above both baselines, >= 5 over the unremedied DM).
    assert ("- IPC 50, dm-estimated, T re-estimated once + posterior init: 79.03 vs converged 71.85, early stop "
            "73.55, unremedied 71.60 -> goal MET") in text


def test_a_run_of_one_part_leaves_the_other_table_as_it_is(tmp_path, monkeypatch):
    res = _tables(tmp_path)
    longtail_before = (res / "longtail.md").read_bytes()
    _run(monkeypatch, "--no-run", "--append", "--part", "structured", "--results", str(res), "--root", str(tmp_path / "r"))
    assert (res / "longtail.md").read_bytes() == longtail_before
    structured_before = (res / "structured.md").read_bytes()
    _run(monkeypatch, "--no-run", "--append", "--part", "longtail", "--results", str(res), "--root", str(tmp_path / "r"))
    assert (res / "structured.md").read_bytes() == structured_before
    assert (res / "longtail.md").read_bytes() != longtail_before  # rewritten: runs lines, every ratio listed


def test_another_seed_writes_its_own_tables(tmp_path, monkeypatch):
    res = _tables(tmp_path)
    before = {p.name: p.read_bytes() for p in res.iterdir()}
    _run(monkeypatch, "--no-run", "--seed", "2", "--part", "structured", "--results", str(res), "--root", str(tmp_path / "r"))
    assert {p.name: p.read_bytes() for p in res.iterdir() if p.name in before} == before
    text = (res / "structured_seed2.md").read_text()
    assert "One seed (2: noise, subset, sets and evaluation)" in text
    assert not (res / "longtail_seed2.md").exists()


def test_iterate_needs_posterior_init(tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        _run(monkeypatch, "--no-run", "--iterate", "--results", str(tmp_path), "--root", str(tmp_path / "r"))


def test_seeds_summary_averages_the_rows_measured_in_every_seed(tmp_path, monkeypatch):
    res = _tables(tmp_path, ITERATED)
    seed1 = ITERATED.replace("71.60 ± 0.00", "73.60 ± 0.00").replace("79.03 ± 0.00", "76.03 ± 0.00") \
        .replace("| asymmetric:0.4 | DM + remedy (estimated T) | 10 | 72.54 ± 0.00 | +0.69 | -1.01 | +1.41 |\n", "")
    (res / "structured_seed1.md").write_text(seed1)
    _run(monkeypatch, "--summarize-seeds", "0,1", "--results", str(res))
    rows = {(r[0], r[1], r[2]): r for r in _rows(res / "structured_seeds.md")}
    # DM IPC 50: 71.60 and 73.60 -> mean 72.60, sample std 1.41; re-estimated: 79.03 and 76.03 -> 77.53.
    assert rows[("asymmetric:0.4", "DM (no remedy)", "50")][3:5] == ["71.60 / 73.60", "72.60 ± 1.41"]
    assert rows[("asymmetric:0.4", "DM + remedy (T re-estimated once, posterior init)", "50")][3:] == \
        ["79.03 / 76.03", "77.53 ± 2.12", "+5.68", "+3.98", "+4.93"]
    assert ("asymmetric:0.4", "DM + remedy (estimated T)", "10") not in rows  # not measured in seed 1
    text = (res / "structured_seeds.md").read_text()
    assert "unremedied 72.60 -> goal NOT met on the mean" in text  # +4.93 < 5
    (res / "structured_seed3.md").write_text(seed1.replace("'dm.iterations=100'", "'dm.iterations=300'"))
    with pytest.raises(SystemExit, match="different overrides"):
        _run(monkeypatch, "--summarize-seeds", "0,3", "--results", str(res))
    with pytest.raises(SystemExit, match="structured_seed2.md is missing"):
        _run(monkeypatch, "--summarize-seeds", "0,2", "--results", str(res))
