"""Redraw a committed report's accuracy figures from its ``table.md``.

The sweep records behind ``results/fashion_mnist_report/`` live under ``runs/`` and are not
committed; the report's ``table.md`` (written from them by ``ddlnl report``) holds every mean and
std the accuracy figures draw. This script reads it back (:func:`ddlnl.report.read_report_table`)
and redraws ``accuracy_vs_ipc.png`` (the study's view) and ``accuracy_vs_ipc_by_method.png`` (the
per-method view) with the current report code. With the records at hand, ``ddlnl report ROOT
--out ...`` draws the same figures and also the image grids and training curves.

    .venv/bin/python benchmarks/redraw_report_figures.py benchmarks/results/fashion_mnist_report
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddlnl.report import accuracy_by_method_figure, accuracy_figure, read_report_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="a report folder holding table.md")
    args = ap.parse_args()
    folder = Path(args.report)
    agg = read_report_table(folder / "table.md")
    for path in (accuracy_figure(agg, folder / "accuracy_vs_ipc.png"),
                 accuracy_by_method_figure(agg, folder / "accuracy_vs_ipc_by_method.png")):
        print(path)


if __name__ == "__main__":
    main()
