"""``benchmarks/bench_vs_reference.py`` writing its table: a rerun replaces the table and keeps the
hand-written ``## Later (...)`` sections of the committed file (re-measurements written beside it)."""

from __future__ import annotations

import runpy
from argparse import Namespace
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vs_reference.py"


def test_rerun_rewrites_the_table_and_keeps_the_later_sections(tmp_path):
    ns = runpy.run_path(str(SCRIPT))
    out = tmp_path / "vs_reference.md"
    a = Namespace(out=out, width=32, threads=1, precision="fp32", iters=3, epochs=1, pairs=2)
    row = ["DM (main_DM.py)", "1.00 / 1.00 s/it", "0.50 / 0.50 s/it", "**2.00x** (2.00, 2.00)", "1", "1", "1.00",
           "0 vs 0", "1.0-1.0"]
    ns["_write"](a, ["dm"], [row])
    later = "## Later (2026-12-03): DM again\n\nWritten by hand."
    out.write_text(out.read_text() + "\n" + later + "\n")
    ns["_write"](a, ["dm"], [[*row[:3], "**3.00x** (3.00, 3.00)", *row[4:]]])
    text = out.read_text()
    assert "**3.00x**" in text and "**2.00x**" not in text
    assert text.count("Written by hand.") == 1 and text.rstrip().endswith("Written by hand.")
