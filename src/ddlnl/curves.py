"""Training curves out of the records: a CSV table, and TensorBoard event files when it is installed.

Every record of a run directory keeps the curves of its training runs (``histories``: one list
per run of ``{"epoch", "loss", "lr", "<split>_acc"...}``). These writers only export them; they
never change what is trained or recorded.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError
from .utils import atomic_write_text

LOGGERS = ("csv", "tensorboard")


def curve_rows(records: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (record, run, recorded epoch): ``name``, ``run``, ``epoch`` and the recorded values."""
    rows = []
    for name, rec in records:
        for run, history in enumerate(rec.get("histories") or []):
            for entry in history:
                rows.append({"name": name, "run": run, **entry})
    return rows


def write_csv(path: str | Path, records: Iterable[tuple[str, dict[str, Any]]]) -> Path:
    """``path`` as CSV of :func:`curve_rows` (columns: name, run, epoch, then every value seen)."""
    rows = curve_rows(records)
    columns = ["name", "run", "epoch"] + sorted({k for r in rows for k in r} - {"name", "run", "epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def write_tensorboard(logdir: str | Path, records: Iterable[tuple[str, dict[str, Any]]]) -> Path:
    """One TensorBoard run per (record, training run) under ``logdir``: scalars ``loss``, ``lr``
    and each ``<split>_acc`` against the epoch."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--log tensorboard needs TensorBoard: pip install 'ddlnl[tensorboard]' (or use --log csv)") from None
    logdir = Path(logdir)
    for name, rec in records:
        for run, history in enumerate(rec.get("histories") or []):
            writer = SummaryWriter(str(logdir / f"{name}-run{run}"))
            for entry in history:
                for key, value in entry.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        writer.add_scalar(key, value, int(entry["epoch"]))
            writer.close()
    return logdir


def check_loggers(loggers: Iterable[str]) -> tuple[str, ...]:
    """The requested loggers, checked: names from ``LOGGERS``; TensorBoard importable."""
    chosen = tuple(loggers)
    unknown = [name for name in chosen if name not in LOGGERS]
    if unknown:
        raise UserError(f"--log {','.join(unknown)}: use {' and/or '.join(LOGGERS)} (comma-separated)")
    if "tensorboard" in chosen and not tensorboard_available():
        raise UserError("--log tensorboard needs TensorBoard: pip install 'ddlnl[tensorboard]' (or use --log csv)")
    return chosen
