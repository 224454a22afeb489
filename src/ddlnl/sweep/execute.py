"""Running a grid's cells (through :mod:`ddlnl.cells`, the runner ``ddlnl run`` uses too), locally
or as submitit jobs; the status of every cell, the preflight checks and the dry-run plan."""

from __future__ import annotations

import socket
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch

from ..cells import distill_cell, evaluate_cell, run_baseline_cell, synthetic_key
from ..diagnostics import degenerate_run_warnings
from ..evaluation import eval_seed
from ..errors import ConfigError, DataError, UserError
from ..methods import get_method
from ..job import fit_to_images, prepare_data
from ..noise import NoisyLabels, load_noisy_labels, parse_noise_spec
from ..synthetic import SyntheticSet, display_images
from ..utils import atomic_write_json, cache_at, clean_stale_tmp, code_version, json_key, resolve_device, with_checksum

from .grid import Grid, grid_from_dict, grid_to_dict
from .locks import STALE_AFTER, _lock_path, _stale, release, try_claim
from .records import (Cell, _existing_record, cell_job, cell_key, data_key, expand, record_path, select_cells,
                      synthetic_path)


# Exit status of `ddlnl sweep` when cells were left to other live workers (not run, not failed).
HELD_EXIT = 3


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


class CellRun(NamedTuple):
    """What computing a cell gives (:func:`cell_record`): its record, not yet written; for a method
    cell also its synthetic set, its images as shown (a ZCA-space set un-whitened) and the note
    saying how they are shown."""

    record: dict[str, Any]
    syn: SyntheticSet | None = None
    shown: torch.Tensor | None = None
    space_note: str | None = None


def cell_record(cell: Cell, resolved: Any, prepared: Any, *, key: str, base: str, root: Path, noise_path: Path,
                syn_path: Callable[[str], Path] | None, grid_name: str | None, device: torch.device,
                show_progress: bool = False, echo: Callable[[str], None] | None = None) -> CellRun:
    """Compute one cell with the cell runner (:mod:`ddlnl.cells`) and build its record: the one
    record format of a sweep root and of a ``ddlnl run`` directory.

    ``key``: the cell's :func:`ddlnl.sweep.records.record_key`; ``base``: the METHODS name it runs;
    ``noise_path``: the saved noisy labels; ``syn_path``: where the synthetic set made under a
    given :func:`ddlnl.cells.synthetic_key` is kept (reused when it holds that key). Artifact
    paths are recorded relative to ``root``.
    """
    t0 = time.perf_counter()
    resolved = fit_to_images(resolved, prepared.dataset.image_size)
    record: dict[str, Any] = {"cell": asdict(cell), "name": cell.name, "key": key, "grid": grid_name,
                              "noise": prepared.noisy.to_dict(), "code_version": code_version(),
                              "host": socket.gethostname(), "device": str(device),
                              "artifacts": {"noise": str(Path(noise_path).relative_to(root))}}
    if cell.is_baseline:
        bcfg, res = run_baseline_cell(resolved, prepared, cell.method, device=device, show_progress=show_progress)
        record.update(config={"baseline": asdict(resolved.baseline), "protocol": asdict(bcfg)},
                      seconds={"train": res.seconds})
        run = CellRun(record)
    else:
        ds = prepared.dataset
        path = syn_path(synthetic_key(resolved, base, cell.ipc)) if syn_path is not None else None
        t1 = time.perf_counter()
        syn = distill_cell(resolved, prepared, base, cell.ipc, key=synthetic_key(resolved, base, cell.ipc), path=path,
                           device=device, show_progress=show_progress, echo=echo)
        # the seconds its set took to distil (also when it was made earlier and reused here)
        distill_s = float(syn.meta.get("distill_seconds", time.perf_counter() - t1))
        shown, space_note = display_images(syn, ds.train.images)
        res = evaluate_cell(resolved, prepared, syn, base, cell.ipc, device=device, show_progress=show_progress)
        record.update(config={"method": asdict(resolved.method_cfg(base, cell.ipc)), "train": asdict(resolved.train)},
                      base_method=base, eval_recipe=resolved.job.eval_recipe,
                      eval_seed=eval_seed(resolved.job.seed, base, cell.ipc),
                      seconds={"distill": distill_s, "evaluate": res.seconds}, learned_lr=syn.lr,
                      warnings=degenerate_run_warnings(syn, ds.mean, ds.std, images=shown))
        if syn.meta.get("loss"):
            record["objective_first_last"] = [syn.meta["loss"][0], syn.meta["loss"][-1]]
        if path is not None:
            record["artifacts"]["synthetic"] = str(Path(path).relative_to(root))
        run = CellRun(record, syn, shown, space_note)
    record.update({k: v for k, v in res.to_dict().items() if k != "seconds"})
    record["seconds"]["total"] = time.perf_counter() - t0
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return run


def record_cell(root: Path, cell: Cell, key: str, compute: Callable[[], dict[str, Any]], *,
                echo: Callable[[str], None] | None = None) -> tuple[dict[str, Any] | None, bool]:
    """The one way a cell's record is kept, in a sweep root and in a run directory: the sound
    record at :func:`record_path` if there is one; else the cell is claimed (a lock under
    ``root/locks``), ``compute()``-d, written by rename with its SHA-256, and released. A damaged
    record is reported through ``echo`` and recomputed.

    Returns:
        ``(record, True)`` when computed here, ``(record, False)`` when it was there, and
        ``(None, False)`` when another live worker holds the cell.
    """
    out = record_path(root, cell, key)
    if (rec := _existing_record(out, cell, key, None)) is not None:
        return rec, False
    if not try_claim(root, cell, key):
        return None, False
    try:
        # finished by another worker between our check and our claim; else (re)compute, saying
        # why when a damaged record is replaced
        if (rec := _existing_record(out, cell, key, echo)) is not None:
            return rec, False
        record = with_checksum(compute())
        atomic_write_json(out, record)
        return record, True
    finally:
        release(root, cell, key)


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

    def compute() -> dict[str, Any]:
        with cache_at(root / "artifacts" / "cache"):
            prepared, noise_path = _prepare_cached(resolved, root, echo)
            record = cell_record(cell, resolved, prepared, key=key, base=grid.base_method(cell.method), root=root,
                                 noise_path=noise_path, syn_path=lambda k: synthetic_path(root, cell, k),
                                 grid_name=grid.name, device=resolve_device("auto"), show_progress=show_progress,
                                 echo=echo).record
        if echo:
            echo(f"{cell.name}: {100 * record['mean']:.2f} ± {100 * record['std']:.2f} ({record['seconds']['total']:.0f}s)")
        return record

    return record_cell(root, cell, key, compute, echo=echo)[0]


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
    from ..methods.common import check_ipc, class_indices
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
    from ..describe import evaluation_config
    from ..plan import DATASET_SHAPES, available_memory, plan_cell

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
    from ..utils import progress

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
            from ..utils import atomic_write_text

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
