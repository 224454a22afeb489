"""Experiment grids: one YAML of axes -> independent cells -> one result record per cell.

A grid is ``datasets x noises x seeds x (baselines + methods x ipcs)``. Each cell writes one JSON
record atomically under ``ROOT/records/``; its file name carries a hash of everything that
produced it (data, noise, seed, method config, evaluation config, code-independent), so

* a cell whose record exists is skipped on a re-run;
* a cell whose configuration changed gets a new record (the old one stays, never overwritten);
* a killed worker leaves no partial record (records are written by rename), only a stale lock that
  the next worker detects (its process is gone, or it is older than ``stale_after`` seconds);
* concurrent workers on a shared filesystem claim cells with an exclusive-create lock file, so
  each record is produced exactly once. A lock names its holder by host, pid and the process's
  start time, so a pid reused by an unrelated process does not keep a dead worker's claim alive;
* every record carries a SHA-256 of its contents and is checked when read: a damaged record
  (truncated, edited, not ddlnl's) is reported in one line and its cell is recomputed, as are
  damaged noise and synthetic-set artifacts; temporary files left by killed writers are removed;
* a local sweep that leaves cells to other live workers says so and exits with status 3
  (:data:`HELD_EXIT`), so a script never mistakes a partly done grid for a finished one.

The cluster executors go through submitit, which stores each job's arguments and result as
**pickle** files under ``ROOT/submitit/``; reading a pickle can run arbitrary code, so point
``--root`` only at a folder that you and your jobs alone can write (never a shared or downloaded
one). ddlnl itself never reads those files: results are taken from the JSON records.

Shared artifacts live under ``ROOT/artifacts/``, keyed by content: noisy labels
(``noise/<key>.npz``), synthetic sets (``synthetic/<key>.safetensors``) and everything the methods
cache through :func:`ddlnl.utils.cache_root` (expert trajectories, pre-trained models), which a
sweep points at ``ROOT/artifacts/cache`` so that cluster workers share it.

Grid YAML (every key optional except ``datasets``, ``noises``, ``methods``, ``ipcs``; every value is
checked for its type: ``ipcs: [1.5]``, ``ipcs: [true]``, an empty list or a list where one value is
expected are refused by name)::

    name: fashion-mnist-cpu            # letters, digits, . _ - (it names ROOT's default folder)
    datasets: [fashion-mnist]          # or {cifar10: {data_root: /data, noise_file: CIFAR-10_human.pt}}
    noises: [symmetric:0.2, symmetric:0.4, asymmetric:0.4]
    methods: [dm]                      # random is always added: it is the reference at every IPC
    ipcs: [1, 10, 50]
    seeds: [0]
    baselines: [converged, early-stop]
    n_runs: 3
    baseline_runs: 1
    preset: cpu                        # cpu | paper | auto
    train_subset: 5000
    set: [train.width=32]              # --set overrides for every cell
    method_set: {dm: [iterations=300]} # per-method overrides (without the method prefix)
    variants:                          # named method variants for ablations: list the name in methods;
      datm-ftd: {method: datm, set: [expert_ftd=true]}  # base method's method_set, then these
    resources: {cpus: 2, gpus: 0, mem_gb: 16, timeout_min: 120, partition: null}
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from .cells import BASELINE_PROTOCOLS, distill_cell, evaluate_cell, run_baseline_cell
from .config import identity, load_yaml
from .errors import ConfigError, DamagedFile, DataError, UserError
from .methods import METHODS, get_method
from .job import JobConfig, fit_to_images, prepare_data, resolve_job
from .noise import NoisyLabels, load_noisy_labels, parse_noise_spec
from .utils import (atomic_write_json, cache_at, clean_stale_tmp, code_version, json_key, pid_alive,
                    process_start_time, read_json_checked, resolve_device, with_checksum)

# Exit status of `ddlnl sweep` when cells were left to other live workers (not run, not failed).
HELD_EXIT = 3


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset axis value, with where its files are and its natural-noise file if any."""

    name: str
    data_root: str | None = None
    noise_file: str | None = None


@dataclass(frozen=True)
class Grid:
    """A grid of experiments (see the module docstring for the YAML form)."""

    name: str
    datasets: tuple[DatasetEntry, ...]
    noises: tuple[str, ...]
    methods: tuple[str, ...]
    ipcs: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    baselines: tuple[str, ...] = ("converged", "early-stop")
    n_runs: int = 3
    baseline_runs: int = 0
    protocol: str = "common"
    preset: str = "auto"
    train_subset: int = 0
    overrides: tuple[str, ...] = ()
    method_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    # name -> (base method, its overrides): a variant is a cell method of its own (own records, own
    # line in reports) that runs its base method with extra overrides and the base's seeds.
    variants: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def base_method(self, method: str) -> str:
        """The METHODS name a grid method (a method or a variant) runs."""
        return self.variants[method][0] if method in self.variants else method

    def check(self) -> None:
        if not self.datasets or not self.noises or not self.ipcs or not self.seeds:
            raise ConfigError(f"grid {self.name!r}: datasets, noises, ipcs and seeds must each list at least one value")
        if self.preset not in {"auto", "cpu", "paper"}:
            raise ConfigError(f"grid {self.name!r}: preset {self.preset!r}; use auto, cpu or paper")
        if self.protocol not in {"common", "own"}:
            raise ConfigError(f"grid {self.name!r}: protocol {self.protocol!r}; use common or own")
        missing = [v for v in self.variants if v not in self.methods]
        if missing:
            raise ConfigError(f"grid {self.name!r}: variant(s) {', '.join(missing)} defined but not listed in methods; "
                              "list them in methods or drop them")
        for name, (base, _) in self.variants.items():
            if name in METHODS or name in BASELINE_PROTOCOLS.values():
                raise ConfigError(f"grid {self.name!r}: variant {name!r} has the name of a method; rename it "
                                  f"(e.g. {name}-variant)")
            if base in self.variants or base == "random":
                raise ConfigError(f"grid {self.name!r}: variant {name!r} must be based on a distiller, not {base!r}")
            get_method(base)
        for m in self.methods:
            get_method(self.base_method(m))
        for b in self.baselines:
            if b not in BASELINE_PROTOCOLS:
                raise ConfigError(f"grid {self.name!r}: baseline {b!r}; use {', '.join(BASELINE_PROTOCOLS)}")
        for n in self.noises:
            parse_noise_spec(n)
        unknown = set(self.method_overrides) - set(self.methods) - {"random"}
        if unknown:
            raise ConfigError(f"grid {self.name!r}: method_set names methods not in the grid: {', '.join(sorted(unknown))}")


GRID_KEYS = {"name", "datasets", "noises", "methods", "ipcs", "seeds", "baselines", "n_runs", "baseline_runs", "protocol",
             "preset", "train_subset", "set", "method_set", "resources", "variants"}


def _variants(raw: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("grid key 'variants' must map a name to {method: NAME, set: [key=value, ...]}")
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or "method" not in spec or set(spec) - {"method", "set"}:
            raise ConfigError(f"variant {name!r}: expected {{method: NAME, set: [key=value, ...]}}, got {spec!r}")
        if not isinstance(spec["method"], str):
            raise ConfigError(f"variant {name!r}: method must be a method name, got {spec['method']!r}")
        out[check_name(name, "variants")] = (spec["method"], tuple(_overrides(spec.get("set"), f"variants.{name}.set")))
    return out


def _as_list(value: Any, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, int, float)):
        return [value]
    raise ConfigError(f"grid key {key!r}: expected a list, got {type(value).__name__}")


# What a grid name, a variant name or any other user-given part of a path may hold: it becomes a
# folder or file name under the sweep root, so "../x" or "a/b" must never reach the file system.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(value: Any, key: str) -> str:
    """A grid-given name that is used in file names: a non-empty string of letters, digits, ``.``,
    ``_`` and ``-`` that does not start with ``.`` or ``-`` (so it stays inside its folder)."""
    if not isinstance(value, str):
        raise ConfigError(f"grid key {key!r}: expected a name (a string), got {type(value).__name__} {value!r}")
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"grid key {key!r}: {value!r} is not a plain name; use letters, digits, '.', '_' and '-' "
                          "(it names a folder under the sweep root)")
    return value


def _strings(value: Any, key: str, *, required: bool = True) -> list[str]:
    items = _as_list(value, key)
    if required and not items:
        raise ConfigError(f"grid key {key!r}: give at least one value (e.g. {key}: [...])")
    for v in items:
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"grid key {key!r}: expected names (strings), got {type(v).__name__} {v!r}")
    return [v.strip() for v in items]


def _ints(value: Any, key: str, *, minimum: int, required: bool = True) -> list[int]:
    items = _as_list(value, key)
    if required and not items:
        raise ConfigError(f"grid key {key!r}: give at least one value (e.g. {key}: [0])")
    out = []
    for v in items:
        # YAML reads 1.5 as a float and true as a bool; neither is an integer, however Python casts.
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"grid key {key!r}: expected integers, got {type(v).__name__} {v!r}")
        if v < minimum:
            raise ConfigError(f"grid key {key!r}: values must be >= {minimum}, got {v}")
        out.append(v)
    if len(set(out)) != len(out):
        raise ConfigError(f"grid key {key!r}: {out} repeats a value; list each once")
    return out


def _int(data: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"grid key {key!r}: expected an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ConfigError(f"grid key {key!r}: must be >= {minimum}, got {value}")
    return value


def _scalar_str(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"grid key {key!r}: expected a string, got {type(value).__name__} {value!r}")
    return value


def _unique(values: list[str], key: str) -> None:
    if len(set(values)) != len(values):
        raise ConfigError(f"grid key {key!r}: {values} repeats a value; list each once")


def grid_from_dict(data: dict[str, Any], default_name: str = "grid") -> Grid:
    """Build and check a :class:`Grid` from a parsed YAML mapping; unknown keys are refused by name,
    and every value by its type and range."""
    from .data import DATASETS

    if not isinstance(data, dict):
        raise ConfigError(f"a grid is a mapping of key: value, got {type(data).__name__}")
    unknown = set(data) - GRID_KEYS
    if unknown:
        raise ConfigError(f"unknown grid key(s) {', '.join(sorted(map(str, unknown)))}; valid: {', '.join(sorted(GRID_KEYS))}")
    for key in ("datasets", "noises", "methods", "ipcs"):
        if key not in data:
            raise ConfigError(f"grid is missing {key!r} (e.g. {key}: [...])")
    raw = data["datasets"]
    entries = []
    if isinstance(raw, dict):
        for name, opts in raw.items():
            opts = {} if opts is None else opts
            if not isinstance(opts, dict):
                raise ConfigError(f"dataset {name!r}: expected {{data_root: PATH, noise_file: PATH}}, got {opts!r}")
            bad = set(opts) - {"data_root", "noise_file"}
            if bad:
                raise ConfigError(f"dataset {name!r}: unknown option(s) {', '.join(sorted(map(str, bad)))}; use data_root, noise_file")
            for k, v in opts.items():
                if v is not None and not isinstance(v, str):
                    raise ConfigError(f"dataset {name!r}: {k} must be a path (a string), got {v!r}")
            entries.append(DatasetEntry(check_name(name, "datasets"), opts.get("data_root"), opts.get("noise_file")))
    else:
        entries = [DatasetEntry(check_name(n, "datasets")) for n in _strings(raw, "datasets")]
    if not entries:
        raise ConfigError("grid key 'datasets': give at least one dataset")
    for e in entries:
        if e.name not in DATASETS:
            raise ConfigError(f"grid key 'datasets': unknown dataset {e.name!r}; use one of {', '.join(sorted(DATASETS))}")
    _unique([e.name for e in entries], "datasets")
    method_set = data.get("method_set") or {}
    if not isinstance(method_set, dict):
        raise ConfigError("grid key 'method_set' must map a method name to a list of key=value overrides")
    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise ConfigError("grid key 'resources' must be a mapping, e.g. {cpus: 2, gpus: 0, mem_gb: 16}")
    bad = set(resources) - RESOURCE_KEYS
    if bad:
        raise ConfigError(f"grid key 'resources': unknown {', '.join(sorted(map(str, bad)))}; use {', '.join(sorted(RESOURCE_KEYS))}")
    for k, v in resources.items():
        if k == "partition":
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"grid key 'resources.partition': expected a name, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (k != "mem_gb" and not float(v).is_integer()):
            raise ConfigError(f"grid key 'resources.{k}': expected a number >= 0{'' if k == 'mem_gb' else ' (an integer)'}, got {v!r}")
    noises = _strings(data["noises"], "noises")
    _unique(noises, "noises")
    methods = [m for m in _strings(data["methods"], "methods", required=False) if m != "random"]
    _unique(methods, "methods")
    baselines = _strings(data.get("baselines", ["converged", "early-stop"]), "baselines", required=False)
    _unique(baselines, "baselines")
    grid = Grid(
        name=check_name(data.get("name", default_name), "name"), datasets=tuple(entries),
        noises=tuple(noises), methods=tuple(methods),
        ipcs=tuple(_ints(data["ipcs"], "ipcs", minimum=1)), seeds=tuple(_ints(data.get("seeds", [0]), "seeds", minimum=0)),
        baselines=tuple(baselines),
        n_runs=_int(data, "n_runs", 3, 1), baseline_runs=_int(data, "baseline_runs", 0, 0),
        protocol=_scalar_str(data, "protocol", "common"), preset=_scalar_str(data, "preset", "auto"),
        train_subset=_int(data, "train_subset", 0, 0),
        overrides=tuple(_overrides(data.get("set"), "set")),
        method_overrides={check_name(k, "method_set"): tuple(_overrides(vs, f"method_set.{k}")) for k, vs in method_set.items()},
        resources=dict(resources), variants=_variants(data.get("variants")),
    )
    grid.check()
    return grid


RESOURCE_KEYS = {"cpus", "gpus", "mem_gb", "timeout_min", "partition"}


def _overrides(value: Any, key: str) -> list[str]:
    items = _as_list(value, key)
    for v in items:
        if not isinstance(v, str) or "=" not in v:
            raise ConfigError(f"grid key {key!r}: expected key=value strings, got {v!r}")
    return items


def load_grid(path: str | Path) -> Grid:
    """Read a grid YAML file (its name defaults to the file's stem, made a plain name)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip(".-") or "grid"
    return grid_from_dict(load_yaml(path), default_name=stem)


def default_root(grid: Grid, base: str | Path = Path("runs") / "sweeps") -> Path:
    """``runs/sweeps/<grid name>``; the name is a plain name (checked), so the root stays in ``base``."""
    root = Path(base) / check_name(grid.name, "name")
    if Path(base).resolve() not in root.resolve().parents:
        raise ConfigError(f"grid name {grid.name!r} would leave {base}; use a plain name")
    return root


def save_grid(root: str | Path, grid: Grid) -> Path:
    """Record ``grid`` under ``ROOT/grids/`` (atomically), so reports of the root know its cells."""
    import yaml

    from .utils import atomic_write_text

    path = Path(root) / "grids" / f"{grid.name}.yaml"
    atomic_write_text(path, yaml.safe_dump(grid_to_dict(grid), sort_keys=False))
    return path


def grids_of_root(root: str | Path) -> list[Grid] | None:
    """Every grid that has run in ``root`` (saved by :func:`save_grid`), or None if none was saved."""
    grids = []
    for p in sorted((Path(root) / "grids").glob("*.yaml")):
        try:
            grids.append(load_grid(p))
        except UserError as exc:
            raise ConfigError(f"{p}: {exc}; fix or delete it (`ddlnl sweep` writes it again)") from None
    return grids or None


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
        return self.method in BASELINE_PROTOCOLS.values()

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
                cells += [Cell(entry.name, noise, seed, BASELINE_PROTOCOLS[b]) for b in grid.baselines]
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
                    seed=cell.seed, preset=grid.preset, train_subset=grid.train_subset,
                    baseline_runs=grid.baseline_runs, protocol=grid.protocol)
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
    """Hash of everything that determines a cell's result (not the code version, which is recorded)."""
    resolved = resolved or cell_job(grid, cell)
    parts: dict[str, Any] = {"data": data_key(resolved), "cell": asdict(cell)}
    if cell.is_baseline:
        parts.update(baseline=identity(resolved.baseline), protocol=identity(resolved.baseline_protocol),
                     runs=resolved.job.runs_per_baseline)
    else:
        parts.update(method=identity(resolved.methods[grid.base_method(cell.method)]), train=identity(resolved.train),
                     runs=resolved.job.n_runs)
        if resolved.job.protocol != "common":  # keeps the keys of existing common-protocol records
            parts["protocol"] = resolved.job.protocol
    return json_key(parts)


def record_path(root: Path, cell: Cell, key: str) -> Path:
    return Path(root) / "records" / f"{cell.name}__{key[:10]}.json"


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


# --------------------------------------------------------------------------------------------
# Claiming cells: exclusive-create lock files that survive on a shared filesystem.

def _lock_path(root: Path, cell: Cell, key: str) -> Path:
    return Path(root) / "locks" / f"{cell.name}__{key[:10]}.lock"


def _holder() -> dict[str, Any]:
    """What names this process in a lock: host, pid and the process's start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start_time(os.getpid()),
            "time": time.time()}


def _stale(lock: Path, stale_after: float) -> bool:
    """A lock whose holder is gone: on this host, its pid is dead or now names a process that
    started at another time (a reused pid); elsewhere, older than ``stale_after`` seconds."""
    try:
        info = json.loads(lock.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a lock")
        pid = int(info.get("pid", -1))
        stamp = float(info.get("time", 0))
    except (OSError, ValueError, TypeError):
        # Being written right now (a holder writes its lock at once after creating it), damaged,
        # or unreadable: judge by age only.
        try:
            return time.time() - lock.stat().st_mtime > min(stale_after, 60.0)
        except OSError:
            return True
    if info.get("host") == socket.gethostname():
        if not pid_alive(pid):
            return True
        start = info.get("start")
        if start is not None and process_start_time(pid) not in (None, start):
            return True  # the pid now belongs to another process
    return time.time() - stamp > stale_after


STALE_AFTER = 6 * 3600  # seconds after which a lock whose worker cannot be checked counts as dead


def try_claim(root: Path, cell: Cell, key: str, stale_after: float = STALE_AFTER) -> bool:
    """Claim a cell for this process; False when another live worker holds it."""
    lock = _lock_path(root, cell, key)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if _stale(lock, stale_after):
                try:
                    # Rename first so that only one of several workers reclaiming it wins.
                    tomb = lock.with_suffix(f".stale.{os.getpid()}")
                    os.rename(lock, tomb)
                    tomb.unlink()
                except OSError:
                    return False
                continue
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(_holder(), fh)
        return True
    return False


def release(root: Path, cell: Cell, key: str) -> None:
    try:
        _lock_path(root, cell, key).unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------
# Running one cell.

def _prepare_cached(resolved, root: Path, echo: Callable[[str], None] | None = None):
    """Dataset + noisy labels, the labels cached under artifacts/noise by the data key."""
    job = resolved.job
    key = json_key(data_key(resolved))
    path = Path(root) / "artifacts" / "noise" / f"{job.dataset}-{parse_noise_spec(job.noise).label()}-seed{job.seed}-{key}.npz"
    prepared = prepare_data(job)  # loads data; noise recomputation is cheap and checked below
    if path.exists():
        try:
            cached: NoisyLabels = load_noisy_labels(path)
            sound = torch.equal(cached.noisy, prepared.noisy.noisy) and torch.equal(cached.clean, prepared.noisy.clean)
            reason = "its labels differ from the ones its configuration produces"
        except DataError as exc:
            sound, reason = False, str(exc)
        if sound:
            return prepared, path
        if echo:
            echo(f"{path} is damaged ({reason}); regenerating it")
    prepared.noisy.save(path)
    return prepared, path


def run_cell(grid: Grid, cell: Cell, root: str | Path, *, show_progress: bool = False,
             echo: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Run one cell unless its record exists or another worker holds it; return its record.

    The work is :mod:`ddlnl.cells`' (as for ``ddlnl run``); the methods' caches (experts,
    pre-trained models) live under ``ROOT/artifacts/cache`` for the duration of the cell
    (:func:`ddlnl.utils.cache_at`). Returns None when the cell is held by another live worker.
    """
    root = Path(root)
    resolved = cell_job(grid, cell)
    key = cell_key(grid, cell, resolved)
    out = record_path(root, cell, key)
    if (rec := _existing_record(out, cell, key, None)) is not None:
        return rec
    if not try_claim(root, cell, key):
        return None
    try:
        # finished by another worker between our check and our claim; else (re)compute, saying
        # why when a damaged record is replaced
        if (rec := _existing_record(out, cell, key, echo)) is not None:
            return rec
        with cache_at(root / "artifacts" / "cache"):
            record = _compute_cell(grid, cell, root, resolved, key, show_progress, echo)
        atomic_write_json(out, with_checksum(record))
        if echo:
            echo(f"{cell.name}: {100 * record['mean']:.2f} ± {100 * record['std']:.2f} ({record['seconds']['total']:.0f}s)")
        return record
    finally:
        release(root, cell, key)


def _compute_cell(grid: Grid, cell: Cell, root: Path, resolved: Any, key: str, show_progress: bool,
                  echo: Callable[[str], None] | None) -> dict[str, Any]:
    """The record of one cell, computed by the cell runner (:mod:`ddlnl.cells`)."""
    t0 = time.perf_counter()
    prepared, noise_path = _prepare_cached(resolved, root, echo)
    resolved = fit_to_images(resolved, prepared.dataset.image_size)
    device = resolve_device("auto")
    record: dict[str, Any] = {"cell": asdict(cell), "name": cell.name, "key": key, "grid": grid.name,
                              "noise": prepared.noisy.to_dict(), "code_version": code_version(),
                              "host": socket.gethostname(), "device": str(device),
                              "artifacts": {"noise": str(noise_path.relative_to(root))}}
    if cell.is_baseline:
        bcfg, res = run_baseline_cell(resolved, prepared, cell.method, device=device, show_progress=show_progress)
        record.update(config={"baseline": asdict(resolved.baseline), "protocol": asdict(bcfg)},
                      seconds={"train": res.seconds})
    else:
        base = grid.base_method(cell.method)  # a variant: the same seeds as its base method
        syn_path = root / "artifacts" / "synthetic" / f"{cell.name}__{key[:10]}.safetensors"
        t1 = time.perf_counter()
        syn = distill_cell(resolved, prepared, base, cell.ipc, key=key, path=syn_path, device=device,
                           show_progress=show_progress, echo=echo)
        distill_s = time.perf_counter() - t1
        res = evaluate_cell(resolved, prepared, syn, base, cell.ipc, device=device, show_progress=show_progress)
        record.update(config={"method": asdict(resolved.methods[base]), "train": asdict(resolved.train)},
                      base_method=base, seconds={"distill": distill_s, "evaluate": res.seconds}, learned_lr=syn.lr)
        record["artifacts"]["synthetic"] = str(syn_path.relative_to(root))
    record.update({k: v for k, v in res.to_dict().items() if k != "seconds"})
    record["seconds"]["total"] = time.perf_counter() - t0
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return record


def run_cells_worker(grid_dict: dict[str, Any], cell_dicts: Sequence[dict[str, Any]], root: str) -> list[str]:
    """Entry point for cluster jobs (picklable, plain arguments): run the given cells in order."""
    grid = grid_from_dict(grid_dict)
    done = []
    for cd in cell_dicts:
        rec = run_cell(grid, Cell(**cd), root)
        done.append("done" if rec is not None else "held")
    return done


# --------------------------------------------------------------------------------------------
# Status, executors.

@dataclass
class CellStatus:
    cell: Cell
    key: str
    state: str  # done | running | todo | damaged (a record that fails its check; recomputed)


def status(grid: Grid, root: str | Path, only: Sequence[str] | None = None) -> list[CellStatus]:
    """Where every cell of a grid (or the ``only``-selected ones) stands under ``root``."""
    root = Path(root)
    out = []
    for cell in select_cells(expand(grid), only):
        key = cell_key(grid, cell)
        path = record_path(root, cell, key)
        if path.exists() and _existing_record(path, cell, key, None) is None:
            state = "damaged"  # recomputed by the next run
        elif path.exists():
            state = "done"
        elif (lock := _lock_path(root, cell, key)).exists() and not _stale(lock, STALE_AFTER):
            state = "running"
        else:
            state = "todo"
        out.append(CellStatus(cell, key, state))
    return out


def preflight(grid: Grid, only: Sequence[str] | None = None) -> None:
    """Refuse now what a cell would refuse after others have run: every data setting's data files,
    training subset and noise (drawn once per dataset and noise; cheap), and each method's largest
    IPC against the smallest class. Run by ``ddlnl sweep`` before any cell, also for a dry run, so
    that the dry run never lists as "to do" a cell that the real sweep refuses.

    Raises:
        UserError: the first problem, naming the data setting.
    """
    from .methods.common import check_ipc, class_indices
    cells = select_cells(expand(grid), only)
    settings: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        settings.setdefault((c.dataset, c.noise), []).append(c)
    for (dataset, noise), group in settings.items():
        resolved = cell_job(grid, group[0])
        try:
            prepared = prepare_data(resolved.job)
        except UserError as exc:
            raise type(exc)(f"grid {grid.name!r}, {dataset} {noise}: {exc}") from None
        ipcs = [c.ipc for c in group if not c.is_baseline]
        if ipcs:
            try:
                check_ipc(class_indices(prepared.noisy_train.labels, prepared.dataset.num_classes), max(ipcs))
            except UserError as exc:
                raise ConfigError(f"grid {grid.name!r}, {dataset} {noise}: {exc}") from None


@dataclass
class CellEstimate:
    """A dry run's plan for one cell (:mod:`ddlnl.plan`): None where the dataset's shape is unknown."""

    status: CellStatus
    plan: Any  # ddlnl.plan.CellPlan | None
    fits: bool | None


def plan_grid(grid: Grid, root: str | Path, only: Sequence[str] | None = None, *,
              device: torch.device | None = None, budget: int | None = None,
              states: Sequence[CellStatus] | None = None) -> tuple[list[CellEstimate], int]:
    """Every selected cell's state with its estimated peak memory and time on ``device``.

    ``budget``: the bytes a cell may use (default: what ``device`` has free now, see
    :func:`ddlnl.plan.available_memory`); ``states``: the cells' :func:`status`, if already known.
    Returns the estimates and the budget used.
    """
    from .describe import evaluation_config
    from .plan import DATASET_SHAPES, available_memory, plan_cell

    device = device or resolve_device("auto")
    budget = available_memory(device) if budget is None else int(budget)
    out = []
    for st in (status(grid, root, only) if states is None else states):
        shape = DATASET_SHAPES.get(st.cell.dataset)
        if shape is None:
            out.append(CellEstimate(st, None, None))
            continue
        c, h, w, k, n = shape
        resolved = cell_job(grid, st.cell)
        n = resolved.job.train_subset or n
        base = grid.base_method(st.cell.method)
        kwargs = dict(num_classes=k, n_train=n, channels=c, image_size=(h, w), device=device)
        if st.cell.is_baseline:
            p = plan_cell(resolved, base, 0, baseline=True, **kwargs)
        else:
            p = plan_cell(resolved, base, st.cell.ipc, eval_cfg=evaluation_config(resolved, base, st.cell.ipc), **kwargs)
        out.append(CellEstimate(st, p, p.fits(budget)))
    return out, budget


def shared_artifacts(grid: Grid) -> dict[str, list[str]]:
    """For a dry run: which cells share each artifact (noisy labels; experts for the methods that use them)."""
    shared: dict[str, list[str]] = {}
    for cell in expand(grid):
        label = f"noisy labels {cell.dataset} {cell.noise} seed {cell.seed}"
        shared.setdefault(label, []).append(cell.name)
        if not cell.is_baseline and hasattr(get_method(grid.base_method(cell.method)).config, "expert_config"):
            variant = f" ({cell.method})" if cell.method in grid.variants else ""
            shared.setdefault(f"expert models{variant} {cell.dataset} {cell.noise} seed {cell.seed}", []).append(cell.name)
    return shared


def run_local(grid: Grid, root: str | Path, *, show_progress: bool = True,
              echo: Callable[[str], None] = print, stop_on_error: bool = False,
              only: Sequence[str] | None = None) -> dict[str, int]:
    """Run every missing cell (of ``only``, if given) in this process; other workers may run beside
    it on the same root."""
    from .utils import progress

    root = Path(root)
    clean_stale_tmp(root, echo=echo)
    states = status(grid, root, only)
    cells = [s for s in states if s.state != "done"]
    counts = {"done": 0, "held": 0, "failed": 0, "skipped": len(states) - len(cells)}
    bar = progress(cells, desc=f"sweep {grid.name}", enabled=show_progress, unit="cell")
    for st in bar:
        try:
            rec = run_cell(grid, st.cell, root, echo=echo)
            counts["done" if rec is not None else "held"] += 1
        except UserError:
            raise
        except Exception as exc:  # one failing cell must not lose the others' work
            counts["failed"] += 1
            err = root / "errors" / f"{st.cell.name}.txt"
            err.parent.mkdir(parents=True, exist_ok=True)
            from .utils import atomic_write_text

            atomic_write_text(err, traceback.format_exc())
            echo(f"{st.cell.name}: FAILED ({type(exc).__name__}: {exc}); traceback in {err}")
            if stop_on_error:
                raise
    return counts


def run_submitit(grid: Grid, root: str | Path, *, cluster: str | None = None, cells_per_job: int = 1,
                 wait: bool = True, echo: Callable[[str], None] = print,
                 only: Sequence[str] | None = None) -> list[Any]:
    """Submit the missing cells as a job array through submitit (SLURM, or ``cluster="local"``).

    ``grid.resources`` sets per-job resources: ``cpus`` (default 2), ``gpus`` (0), ``mem_gb`` (16),
    ``timeout_min`` (240), ``partition`` (cluster default). Each array task runs ``cells_per_job``
    cells; records and locks make the result independent of how cells are split into tasks.

    Trust: submitit writes each job's arguments and result as pickles under ``ROOT/submitit/``,
    and ``job.result()`` unpickles them (which can execute code). Use a root only you and your jobs
    can write; ddlnl's own outputs are the JSON records, which are never unpickled.
    """
    if cells_per_job < 1:
        raise UserError(f"--cells-per-job must be >= 1, got {cells_per_job}")
    try:
        import submitit
    except ImportError:
        raise UserError("the cluster executor needs submitit: pip install 'ddlnl[cluster]'") from None
    root = Path(root)
    clean_stale_tmp(root, echo=echo)
    todo = [s.cell for s in status(grid, root, only) if s.state in ("todo", "damaged")]
    if not todo:
        echo("nothing to submit: every cell has a record or is running")
        return []
    res = {"cpus": 2, "gpus": 0, "mem_gb": 16, "timeout_min": 240, "partition": None, **grid.resources}
    executor = submitit.AutoExecutor(folder=str(root / "submitit" / "%j"), cluster=cluster)
    params: dict[str, Any] = {"timeout_min": int(res["timeout_min"]), "cpus_per_task": int(res["cpus"]),
                              "mem_gb": float(res["mem_gb"]), "name": f"ddlnl-{grid.name}"}
    if int(res["gpus"]):
        params["gpus_per_node"] = int(res["gpus"])
    if res.get("partition") and executor.cluster == "slurm":
        params["slurm_partition"] = res["partition"]
    executor.update_parameters(**params)
    chunks = [todo[i:i + cells_per_job] for i in range(0, len(todo), cells_per_job)]
    grid_dict = grid_to_dict(grid)
    jobs = executor.map_array(run_cells_worker, [grid_dict] * len(chunks),
                              [[asdict(c) for c in chunk] for chunk in chunks], [str(root.resolve())] * len(chunks))
    echo(f"submitted {len(todo)} cells as {len(jobs)} {executor.cluster} jobs ({jobs[0].job_id.split('_')[0]})")
    if wait:
        for job in jobs:
            try:
                job.result()
            except Exception as exc:  # a failed task must not hide the others' results
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                echo(f"job {job.job_id} failed ({first[:200]}); its log is under {root / 'submitit'}")
    return jobs


def grid_to_dict(grid: Grid) -> dict[str, Any]:
    """The YAML-form mapping of a grid (round-trips through :func:`grid_from_dict`)."""
    return {"name": grid.name,
            "datasets": {e.name: {"data_root": e.data_root, "noise_file": e.noise_file} for e in grid.datasets},
            "noises": list(grid.noises), "methods": list(grid.methods), "ipcs": list(grid.ipcs),
            "seeds": list(grid.seeds), "baselines": list(grid.baselines), "n_runs": grid.n_runs,
            "baseline_runs": grid.baseline_runs, "protocol": grid.protocol, "preset": grid.preset, "train_subset": grid.train_subset,
            "set": list(grid.overrides), "method_set": {k: list(v) for k, v in grid.method_overrides.items()},
            "variants": {k: {"method": b, "set": list(v)} for k, (b, v) in grid.variants.items()},
            "resources": dict(grid.resources)}
