"""Plain-text formatting shared by every table ddlnl prints or writes: markdown tables and
accuracies in percent."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_acc(mean: float, std: float) -> str:
    if mean is None or np.isnan(mean):
        return "-"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def fmt_delta(value: float | None) -> str:
    if value is None or np.isnan(value):
        return "-"
    return f"{100 * value:+.2f}"
