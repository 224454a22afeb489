"""Experiment grids: one YAML of axes -> independent cells -> one result record per cell.

A grid is ``datasets x noises x seeds x (baselines + methods x ipcs)``. Each cell writes one JSON
record atomically under ``ROOT/records/``; its file name carries a hash of everything that
produced it (data, noise, seed, method config, evaluation config, code-independent), so

* a cell whose record exists is skipped on a re-run;
* a cell whose configuration changed gets a new record (the old one stays, never overwritten);
* a killed worker leaves no partial record (records are written by rename), only a stale lock that
  the next worker detects (its process is gone, or it is older than ``stale_after`` seconds);
* concurrent workers on a shared filesystem claim cells with an exclusive-create lock file, so
  each record is produced exactly once.

Shared artifacts live under ``ROOT/artifacts/``, keyed by content: noisy labels
(``noise/<key>.npz``), synthetic sets (``synthetic/<key>.safetensors``) and everything the methods
cache through :func:`ddlnl.utils.cache_root` (expert trajectories, pre-trained models), which a
sweep points at ``ROOT/artifacts/cache`` so that cluster workers share it.

Grid YAML (every key optional except ``datasets``, ``noises``, ``methods``, ``ipcs``)::

    name: fashion-mnist-cpu
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
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from .config import identity, load_yaml
from .errors import ConfigError, UserError
from .methods import METHODS, get_method
from .noise import NoisyLabels, load_noisy_labels, parse_noise_spec
from .utils import CACHE_ENV, atomic_write_json, code_version, derive_seed, json_key, resolve_device

BASELINE_PROTOCOLS = {"converged": "baseline", "early-stop": "baseline_early_stop"}


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
        if not self.datasets or not self.noises or not self.ipcs:
            raise ConfigError(f"grid {self.name!r}: datasets, noises and ipcs must each list at least one value")
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
        out[str(name)] = (str(spec["method"]), tuple(str(v) for v in _as_list(spec.get("set"), f"variants.{name}.set")))
    return out


def _as_list(value: Any, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, int, float)):
        return [value]
    raise ConfigError(f"grid key {key!r}: expected a list, got {type(value).__name__}")


def grid_from_dict(data: dict[str, Any], default_name: str = "grid") -> Grid:
    """Build and check a :class:`Grid` from a parsed YAML mapping; unknown keys are refused by name."""
    unknown = set(data) - GRID_KEYS
    if unknown:
        raise ConfigError(f"unknown grid key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(GRID_KEYS))}")
    for key in ("datasets", "noises", "methods", "ipcs"):
        if key not in data:
            raise ConfigError(f"grid is missing {key!r} (e.g. {key}: [...])")
    raw = data["datasets"]
    entries = []
    if isinstance(raw, dict):
        for name, opts in raw.items():
            opts = opts or {}
            bad = set(opts) - {"data_root", "noise_file"}
            if bad:
                raise ConfigError(f"dataset {name!r}: unknown option(s) {', '.join(sorted(bad))}; use data_root, noise_file")
            entries.append(DatasetEntry(str(name), opts.get("data_root"), opts.get("noise_file")))
    else:
        entries = [DatasetEntry(str(n)) for n in _as_list(raw, "datasets")]
    try:
        ipcs = tuple(int(i) for i in _as_list(data["ipcs"], "ipcs"))
        seeds = tuple(int(s) for s in _as_list(data.get("seeds", [0]), "seeds"))
        n_runs = int(data.get("n_runs", 3))
        baseline_runs = int(data.get("baseline_runs", 0))
        train_subset = int(data.get("train_subset", 0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"grid: ipcs, seeds, n_runs, baseline_runs and train_subset must be integers ({exc})") from None
    method_set = data.get("method_set") or {}
    if not isinstance(method_set, dict):
        raise ConfigError("grid key 'method_set' must map a method name to a list of key=value overrides")
    grid = Grid(
        name=str(data.get("name", default_name)), datasets=tuple(entries),
        noises=tuple(str(n) for n in _as_list(data["noises"], "noises")),
        methods=tuple(str(m) for m in _as_list(data["methods"], "methods") if str(m) != "random"),
        ipcs=ipcs, seeds=seeds,
        baselines=tuple(str(b) for b in _as_list(data.get("baselines", ["converged", "early-stop"]), "baselines")),
        n_runs=n_runs, baseline_runs=baseline_runs, protocol=str(data.get("protocol", "common")),
        preset=str(data.get("preset", "auto")),
        train_subset=train_subset, overrides=tuple(str(s) for s in _as_list(data.get("set"), "set")),
        method_overrides={str(k): tuple(str(v) for v in _as_list(vs, f"method_set.{k}")) for k, vs in method_set.items()},
        resources=dict(data.get("resources") or {}), variants=_variants(data.get("variants")),
    )
    grid.check()
    return grid


def load_grid(path: str | Path) -> Grid:
    """Read a grid YAML file."""
    return grid_from_dict(load_yaml(path), default_name=Path(path).stem)


def save_grid(root: str | Path, grid: Grid) -> Path:
    """Record ``grid`` under ``ROOT/grids/`` (atomically), so reports of the root know its cells."""
    import yaml

    from .utils import atomic_write_text

    path = Path(root) / "grids" / f"{grid.name}.yaml"
    atomic_write_text(path, yaml.safe_dump(grid_to_dict(grid), sort_keys=False))
    return path


def grids_of_root(root: str | Path) -> list[Grid] | None:
    """Every grid that has run in ``root`` (saved by :func:`save_grid`), or None if none was saved."""
    return [load_grid(p) for p in sorted((Path(root) / "grids").glob("*.yaml"))] or None


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
    from .pipeline import JobConfig, resolve_job

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
    # Overrides for methods that are not in this cell would be refused by resolve_job; keep only
    # those whose prefix this cell knows.
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
        parts.update(baseline=identity(resolved.baseline), protocol=asdict(resolved.baseline_protocol),
                     runs=resolved.job.runs_per_baseline)
    else:
        parts.update(method=identity(resolved.methods[grid.base_method(cell.method)]), train=identity(resolved.train),
                     runs=resolved.job.n_runs)
        if resolved.job.protocol != "common":  # keeps the keys of existing common-protocol records
            parts["protocol"] = resolved.job.protocol
    return json_key(parts)


def record_path(root: Path, cell: Cell, key: str) -> Path:
    return Path(root) / "records" / f"{cell.name}__{key[:10]}.json"


# --------------------------------------------------------------------------------------------
# Claiming cells: exclusive-create lock files that survive on a shared filesystem.

def _lock_path(root: Path, cell: Cell, key: str) -> Path:
    return Path(root) / "locks" / f"{cell.name}__{key[:10]}.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(lock: Path, stale_after: float) -> bool:
    try:
        info = json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        # Being written right now, or unreadable: judge by age only.
        try:
            return time.time() - lock.stat().st_mtime > stale_after
        except OSError:
            return True
    if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
        return True
    return time.time() - float(info.get("time", 0)) > stale_after


STALE_AFTER = 6 * 3600  # seconds after which a lock whose worker cannot be checked counts as dead


def try_claim(root: Path, cell: Cell, key: str, stale_after: float = STALE_AFTER) -> bool:
    """Claim a cell for this process; False when another live worker holds it."""
    lock = _lock_path(root, cell, key)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
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
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, fh)
        return True
    return False


def release(root: Path, cell: Cell, key: str) -> None:
    try:
        _lock_path(root, cell, key).unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------
# Running one cell.

def _prepare_cached(resolved, root: Path):
    """Dataset + noisy labels, the labels cached under artifacts/noise by the data key."""
    from .pipeline import prepare_data

    job = resolved.job
    key = json_key(data_key(resolved))
    path = Path(root) / "artifacts" / "noise" / f"{job.dataset}-{parse_noise_spec(job.noise).label()}-seed{job.seed}-{key}.npz"
    prepared = prepare_data(job)  # loads data; noise recomputation is cheap and checked below
    if path.exists():
        cached: NoisyLabels = load_noisy_labels(path)
        if not torch.equal(cached.noisy, prepared.noisy.noisy):
            raise UserError(f"{path} disagrees with the labels its configuration produces; delete it to regenerate")
    else:
        prepared.noisy.save(path)
    return prepared, path


def run_cell(grid: Grid, cell: Cell, root: str | Path, *, show_progress: bool = False,
             echo: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Run one cell unless its record exists or another worker holds it; return its record.

    Returns None when the cell is held by another live worker.
    """
    from .pipeline import distill_cached, evaluate_synthetic, fit_to_images
    from .train import run_baseline

    root = Path(root)
    resolved = cell_job(grid, cell)
    key = cell_key(grid, cell, resolved)
    out = record_path(root, cell, key)
    if out.exists():
        return json.loads(out.read_text())
    if not try_claim(root, cell, key):
        return None
    try:
        if out.exists():  # finished by another worker between our check and our claim
            return json.loads(out.read_text())
        os.environ[CACHE_ENV] = str(root / "artifacts" / "cache")
        t0 = time.perf_counter()
        prepared, noise_path = _prepare_cached(resolved, root)
        resolved = fit_to_images(resolved, prepared.dataset.image_size)
        ds = prepared.dataset
        device = resolve_device("auto")
        record: dict[str, Any] = {"cell": asdict(cell), "name": cell.name, "key": key, "grid": grid.name,
                                  "noise": prepared.noisy.to_dict(), "code_version": code_version(),
                                  "host": socket.gethostname(), "device": str(device),
                                  "artifacts": {"noise": str(noise_path.relative_to(root))}}
        if cell.is_baseline:
            protocol = next(p for p, name in BASELINE_PROTOCOLS.items() if name == cell.method)
            bcfg = replace(resolved.baseline_protocol, protocol=protocol)
            res = run_baseline(prepared.noisy_train, ds.test, resolved.baseline, bcfg, num_classes=ds.num_classes,
                               n_runs=resolved.job.runs_per_baseline,
                               seed=derive_seed(cell.seed, cell.method), device=device, show_progress=show_progress)
            record.update(config={"baseline": asdict(resolved.baseline), "protocol": asdict(bcfg)},
                          seconds={"train": res.seconds})
        else:
            base = grid.base_method(cell.method)  # a variant: the same seeds as its base method
            mcfg = resolved.methods[base]
            syn_path = root / "artifacts" / "synthetic" / f"{cell.name}__{key[:10]}.safetensors"
            t1 = time.perf_counter()
            syn = distill_cached(prepared, base, cell.ipc, mcfg,
                                 seed=derive_seed(cell.seed, "distill", base, cell.ipc), key=key,
                                 path=syn_path, device=device, show_progress=show_progress)
            distill_s = time.perf_counter() - t1
            res = evaluate_synthetic(syn, prepared, resolved.train, n_runs=resolved.job.n_runs,
                                     seed=derive_seed(cell.seed, "eval", base, cell.ipc), device=device,
                                     show_progress=show_progress, protocol=resolved.job.protocol)
            record.update(config={"method": asdict(mcfg), "train": asdict(resolved.train)}, base_method=base,
                          seconds={"distill": distill_s, "evaluate": res.seconds}, learned_lr=syn.lr)
            record["artifacts"]["synthetic"] = str(syn_path.relative_to(root))
        record.update({k: v for k, v in res.to_dict().items() if k != "seconds"})
        record["seconds"]["total"] = time.perf_counter() - t0
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(out, record)
        if echo:
            echo(f"{cell.name}: {100 * record['mean']:.2f} ± {100 * record['std']:.2f} ({record['seconds']['total']:.0f}s)")
        return record
    finally:
        release(root, cell, key)


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
    state: str  # done | running | todo


def status(grid: Grid, root: str | Path, only: Sequence[str] | None = None) -> list[CellStatus]:
    """Where every cell of a grid (or the ``only``-selected ones) stands under ``root``."""
    root = Path(root)
    out = []
    for cell in select_cells(expand(grid), only):
        key = cell_key(grid, cell)
        if record_path(root, cell, key).exists():
            state = "done"
        elif (lock := _lock_path(root, cell, key)).exists() and not _stale(lock, STALE_AFTER):
            state = "running"
        else:
            state = "todo"
        out.append(CellStatus(cell, key, state))
    return out


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
            err.write_text(traceback.format_exc())
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
    """
    try:
        import submitit
    except ImportError:
        raise UserError("the cluster executor needs submitit: pip install 'ddlnl[cluster]'") from None
    root = Path(root)
    todo = [s.cell for s in status(grid, root, only) if s.state == "todo"]
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
            job.result()
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
