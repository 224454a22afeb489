"""The cells of a grid, the key of each (a hash of everything that determines its result), its
record's path and the checked reading of a record."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..cells import BASELINE_CELLS
from ..config import identity
from ..errors import ConfigError, DamagedFile, UserError
from ..job import JobConfig, resolve_job
from ..noise import parse_noise_spec
from ..utils import json_key, read_json_checked, resolve_device

from .grid import DatasetEntry, Grid


@dataclass(frozen=True)
class Cell:
    """One independent unit of work: a baseline, or one method at one IPC, for one data setting."""

    dataset: str
    noise: str
    seed: int
    method: str  # a METHODS name, a grid variant name, or "baseline" / "baseline_early_stop"
    ipc: int = 0  # 0 for baselines

    @property
    def is_baseline(self) -> bool:
        return self.method in BASELINE_CELLS.values()

    @property
    def name(self) -> str:
        what = self.method if self.is_baseline else f"{self.method}-ipc{self.ipc}"
        return f"{self.dataset}__{parse_noise_spec(self.noise).label()}__seed{self.seed}__{what}"


def expand(grid: Grid) -> list[Cell]:
    """All cells of a grid, baselines first within each data setting (they are the slowest)."""
    cells = []
    for entry in grid.datasets:
        for noise in grid.noises:
            for seed in grid.seeds:
                cells += [Cell(entry.name, noise, seed, BASELINE_CELLS[b]) for b in grid.baselines]
                for method in ("random", *grid.methods):
                    cells += [Cell(entry.name, noise, seed, method, ipc) for ipc in grid.ipcs]
    return cells


CELL_FIELDS = ("dataset", "noise", "seed", "method", "ipc")


def select_cells(cells: Iterable[Cell], only: Sequence[str] | None) -> list[Cell]:
    """Cells matching every ``field=v1,v2`` filter (fields: dataset, noise, seed, method, ipc;
    baselines have ipc 0), in grid order."""
    cells = list(cells)
    for item in only or []:
        key, sep, values = item.partition("=")
        if not sep or key not in CELL_FIELDS:
            raise UserError(f"--only {item!r}: expected FIELD=V1,V2 with FIELD one of {', '.join(CELL_FIELDS)}")
        allowed = set(values.split(","))
        cells = [c for c in cells if str(getattr(c, key)) in allowed]
    return cells


def _entry(grid: Grid, dataset: str) -> DatasetEntry:
    return next(e for e in grid.datasets if e.name == dataset)


def cell_job(grid: Grid, cell: Cell):
    """The resolved ``ddlnl run`` configuration of one cell."""
    entry = _entry(grid, cell.dataset)
    base = grid.base_method(cell.method)
    job = JobConfig(dataset=cell.dataset, data_root=entry.data_root, noise=cell.noise, noise_file=entry.noise_file,
                    methods=() if cell.is_baseline else (base,), ipcs=(cell.ipc or 1,), n_runs=grid.n_runs,
                    seed=cell.seed, preset=grid.preset, train_subset=grid.train_subset, imbalance=grid.imbalance,
                    baseline_runs=grid.baseline_runs, eval_recipe=grid.eval_recipe)
    overrides = list(grid.overrides)
    for method, items in grid.method_overrides.items():
        if method == base or (method == "random" and not cell.is_baseline):
            overrides += [f"{method}.{item}" for item in items]
    if cell.method in grid.variants:  # the base's method_set, then the variant's own, then its method_set
        overrides += [f"{base}.{item}" for item in grid.variants[cell.method][1]]
        overrides += [f"{base}.{item}" for item in grid.method_overrides.get(cell.method, ())]
    # Overrides for the grid's other methods would be refused by resolve_job; keep only those whose
    # prefix this cell knows. A prefix that no cell of the grid knows is a typo, refused by name
    # (dropping it would run every cell without the setting).
    grid_prefixes = {"train", "baseline", "baseline_protocol", "random", *grid.methods,
                     *(grid.base_method(m) for m in grid.methods)}
    for o in overrides:
        key = o.split("=", 1)[0]
        if "." in key and key.split(".", 1)[0] not in grid_prefixes:
            raise ConfigError(f"grid {grid.name!r}: set {o!r} names {key.split('.', 1)[0]!r}, which is no method of the "
                              f"grid; use one of {', '.join(sorted(grid_prefixes))}")
    known = {"train", "baseline", "baseline_protocol", "random", base}
    overrides = [o for o in overrides if "." not in o.split("=", 1)[0] or o.split(".", 1)[0] in known]
    device = resolve_device("auto")
    return resolve_job(job, overrides, device)


def data_key(resolved) -> dict[str, Any]:
    return resolved.job.data_identity()


def cell_key(grid: Grid, cell: Cell, resolved=None) -> str:
    """The key of a grid cell's record (:func:`record_key` of the cell's resolved job)."""
    return record_key(cell, resolved or cell_job(grid, cell), grid.base_method(cell.method))


def record_key(cell: Cell, resolved, base: str) -> str:
    """The one key formula of a cell's record, in a sweep root and in a ``ddlnl run`` directory:
    a hash of everything that determines the cell's result (not the code version, which is
    recorded). ``resolved``: the job the cell runs under; ``base``: the METHODS name it runs (a
    grid variant runs its base method)."""
    parts: dict[str, Any] = {"data": data_key(resolved), "cell": asdict(cell)}
    if cell.is_baseline:
        parts.update(baseline=identity(resolved.baseline), protocol=identity(resolved.baseline_protocol),
                     runs=resolved.job.runs_per_baseline)
    else:
        parts.update(method=identity(resolved.method_cfg(base, cell.ipc)), train=identity(resolved.train),
                     runs=resolved.job.n_runs)
        if resolved.job.eval_recipe != "common":  # keeps the keys of existing common-recipe records
            parts["protocol"] = resolved.job.eval_recipe  # (its name in the keys since records existed)
    return json_key(parts)


def record_path(root: Path, cell: Cell, key: str) -> Path:
    return Path(root) / "records" / f"{cell.name}__{key[:10]}.json"


def synthetic_path(root: Path, cell: Cell, syn_key: str) -> Path:
    """Where a sweep keeps a method cell's synthetic set made under ``syn_key``
    (:func:`ddlnl.cells.synthetic_key`)."""
    return Path(root) / "artifacts" / "synthetic" / f"{cell.name}__{syn_key[:10]}.safetensors"


RECORD_FIELDS = ("cell", "name", "key", "mean", "std", "accs")


def check_record(rec: dict[str, Any], path: Path, cell: Cell | None = None, key: str | None = None) -> dict[str, Any]:
    """``rec`` if it is a sound ddlnl record (of ``cell`` under ``key`` when given); else DamagedFile."""
    c = rec.get("cell")
    if not isinstance(c, dict) or set(c) != set(CELL_FIELDS):
        raise DamagedFile(path, "its 'cell' is not a ddlnl cell")
    accs = rec.get("accs")
    if not isinstance(accs, list) or not accs or not all(isinstance(a, (int, float)) and 0.0 <= a <= 1.0 for a in accs):
        raise DamagedFile(path, "its accuracies are missing or outside [0, 1]")
    for f in ("mean", "std"):
        if isinstance(rec.get(f), bool) or not isinstance(rec.get(f), (int, float)):
            raise DamagedFile(path, f"its {f!r} is not a number")
    if not isinstance(rec.get("key"), str) or not path.stem.endswith(rec["key"][:10]):
        raise DamagedFile(path, "its key does not match its file name")
    if cell is not None and (c != asdict(cell) or rec.get("name") != cell.name):
        raise DamagedFile(path, f"it holds cell {rec.get('name')!r}, not {cell.name!r}")
    if key is not None and rec["key"] != key:
        raise DamagedFile(path, "its key differs from its cell's configuration")
    return rec


def read_record(path: Path, cell: Cell | None = None, key: str | None = None) -> dict[str, Any]:
    """A record read back and checked: JSON, its checksum, its fields (see :func:`check_record`).

    Raises:
        DamagedFile: truncated, edited, or not a ddlnl record.
    """
    return check_record(read_json_checked(path, required=RECORD_FIELDS, checksum=True), Path(path), cell, key)


def _existing_record(path: Path, cell: Cell, key: str, echo: Callable[[str], None] | None) -> dict[str, Any] | None:
    """The cell's record if present and sound; a damaged one is reported and counts as missing."""
    if not path.exists():
        return None
    try:
        return read_record(path, cell, key)
    except DamagedFile as exc:
        if echo:
            echo(f"{exc}; recomputing {cell.name}")
        return None


def earlier_layout(root: Path) -> str | None:
    """A one-line message when ``root`` is a run directory of an earlier ddlnl, which kept its
    records as ``cells/*.json`` and ``baseline*.json`` under another key formula; else None."""
    root = Path(root)
    if (root / "records").is_dir() or not ((root / "cells").is_dir() or any(root.glob("baseline*.json"))):
        return None
    return (f"{root} is a run directory of an earlier ddlnl (records in cells/ and baseline*.json, keyed "
            "differently); it is kept as it is: run its job again with `ddlnl run --out NEW_DIR` to get records "
            "that this ddlnl reads")


def read_records(root: str | Path) -> tuple[list[dict[str, Any]], list[DamagedFile]]:
    """Every record under ``root/records`` (a sweep root or a ``ddlnl run`` directory), each read
    back and checked (:func:`read_record`), and the damaged or foreign ones, for the caller to
    report.

    Raises:
        UserError: ``root`` holds no records/ folder (with what to do for an earlier run directory).
    """
    root = Path(root)
    folder = root / "records"
    if not folder.is_dir():
        raise UserError(earlier_layout(root) or f"{root} has no records/ folder: give a run directory of "
                        "`ddlnl run` or the root directory of a `ddlnl sweep`")
    records, damaged = [], []
    for path in sorted(folder.glob("*.json")):
        try:
            records.append(read_record(path))
        except DamagedFile as exc:
            damaged.append(exc)
    return records, damaged
