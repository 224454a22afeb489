"""Result records of a sweep or a run directory: loading, flattening into rows, filtering, CSV.

The report reads only these records (``ROOT/records/*.json``), never live state.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import UserError

ROW_FIELDS = ("dataset", "noise", "kind", "rate", "realized_rate", "seed", "method", "ipc", "mean", "std",
              "n_runs", "seconds", "name", "key", "thirds")


def load_records(root: str | Path, grid=None, *, echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """All sound records under ``root/records`` (a sweep root or a ``ddlnl run`` directory: the
    same records); with ``grid`` (one or a list), only those of its current cells.

    Every record is checked (JSON, checksum, fields: :func:`ddlnl.sweep.read_record`). A damaged
    or foreign one is left out and reported through ``echo`` in one line, so a table is never
    silently one row short; ``ddlnl sweep`` (or ``ddlnl run``) recomputes the damaged cells of its
    grid (its job).
    Without a grid, when one cell has records from several configurations, the most recently
    finished one is kept.
    """
    from .sweep import read_records

    records, damaged = read_records(root)
    echo = echo or _warn
    if damaged:
        names = ", ".join(Path(d.path).name for d in damaged[:3]) + (", ..." if len(damaged) > 3 else "")
        echo(f"{len(damaged)} damaged or foreign record(s) left out ({names}: {damaged[0].reason}); "
             "re-run the `ddlnl sweep` (or `ddlnl run`) that wrote them to recompute them")
    if grid is not None:
        from .sweep import cell_key, expand

        grids = grid if isinstance(grid, (list, tuple)) else [grid]
        wanted = {cell_key(g, c) for g in grids for c in expand(g)}
        return [r for r in records if r.get("key") in wanted]
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        name = r.get("name")
        if name not in latest or r.get("finished", "") > latest[name].get("finished", ""):
            latest[name] = r
    return list(latest.values())


def _warn(msg: str) -> None:
    import sys

    print(f"ddlnl: warning: {msg}", file=sys.stderr)


def record_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One flat row of a record (what tables, filters and CSV use); ``thirds`` is the head/middle/tail
    accuracy of the record's classes (:func:`ddlnl.longtail.thirds_text`, ``-`` for a record
    written before per-class accuracy was kept)."""
    from .longtail import thirds_text

    cell = rec["cell"]
    spec = rec.get("noise", {}).get("spec", {})
    return {"dataset": cell["dataset"], "noise": cell["noise"], "kind": spec.get("kind"), "rate": spec.get("rate"),
            "realized_rate": rec.get("noise", {}).get("realized_rate"), "seed": cell["seed"],
            "method": cell["method"], "ipc": cell["ipc"] or None, "mean": rec["mean"], "std": rec["std"],
            "n_runs": len(rec.get("accs", [])), "seconds": rec.get("seconds", {}).get("total"),
            "name": rec["name"], "key": rec["key"], "thirds": thirds_text(rec)}


def filter_rows(rows: Iterable[dict[str, Any]], filters: Sequence[str]) -> list[dict[str, Any]]:
    """Keep rows matching every ``field=value`` (string comparison; ``value`` may be a,b,c)."""
    rows = list(rows)
    for f in filters or []:
        if "=" not in f:
            raise UserError(f"--filter {f!r}: expected field=value, e.g. method=dm")
        k, v = f.split("=", 1)
        if k not in ROW_FIELDS:
            raise UserError(f"--filter {f!r}: unknown field {k!r}; fields: {', '.join(ROW_FIELDS)}")
        allowed = set(v.split(","))
        rows = [r for r in rows if str(r[k]) in allowed or _num_eq(r[k], allowed)]
    return rows


def _num_eq(value: Any, allowed: set[str]) -> bool:
    try:
        return any(float(value) == float(a) for a in allowed)
    except (TypeError, ValueError):
        return False


def sort_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    def order(r):
        base = 0 if r["method"].startswith("baseline") else 1
        return (r["dataset"], r["kind"] or "", r["rate"] or 0.0, r["seed"], base, r["method"], r["ipc"] or 0)

    return sorted(rows, key=order)


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ROW_FIELDS))
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k) for k in ROW_FIELDS})
    return buf.getvalue()


def rows_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of rows (accuracy in %; head/middle/tail: the mean accuracy of the class
    thirds, class 0 first)."""
    from .formatting import fmt_acc, markdown_table

    body = [[r["dataset"], r["noise"], f"{r['realized_rate']:.3f}" if r["realized_rate"] is not None else "-",
             r["seed"], r["method"], r["ipc"] or "all", fmt_acc(r["mean"], r["std"]), r["n_runs"],
             f"{r['seconds']:.0f}" if r["seconds"] is not None else "-", r.get("thirds") or "-"] for r in rows]
    return markdown_table(["dataset", "noise", "realized", "seed", "method", "IPC", "accuracy (%)", "runs", "s",
                           "head/middle/tail (%)"], body)
