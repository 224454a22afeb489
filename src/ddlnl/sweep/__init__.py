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
    imbalance: 1                       # > 1: long-tailed training sets, head/tail count ratio (ddlnl.longtail)
    set: [train.width=32]              # --set overrides for every cell
    method_set: {dm: [iterations=300]} # per-method overrides (without the method prefix)
    variants:                          # named method variants for ablations: list the name in methods;
      datm-ftd: {method: datm, set: [expert_ftd=true]}  # base method's method_set, then these
    resources: {cpus: 2, gpus: 0, mem_gb: 16, timeout_min: 120, partition: null}

The package: :mod:`.grid` (the grid and its YAML form), :mod:`.records` (cells, their keys and
checked records), :mod:`.locks` (claiming a cell), :mod:`.execute` (running cells locally or through
submitit, status, dry-run plans); every name is re-exported here.
"""

from __future__ import annotations


# Re-exported: ``ddlnl.sweep.X`` keeps working for every name of the former module.
from .grid import (  # noqa: F401
    DatasetEntry, GRID_KEYS, Grid, RESOURCE_KEYS, SAFE_NAME, _as_list, _int, _ints, _overrides, _scalar_str,
    _strings, _unique, _variants, check_name, default_root, grid_from_dict, grid_to_dict, grids_of_root,
    load_grid, save_grid,
)
from .records import (  # noqa: F401
    CELL_FIELDS, Cell, RECORD_FIELDS, _entry, _existing_record, cell_job, cell_key, check_record, data_key,
    earlier_layout, expand, read_record, read_records, record_key, record_path, select_cells, synthetic_path,
)
from .locks import (  # noqa: F401
    STALE_AFTER, _holder, _lock_path, _stale, release, try_claim,
)
from .execute import (  # noqa: F401
    CellEstimate, CellRun, CellStatus, HELD_EXIT, _prepare_cached, cell_record, plan_grid, preflight, record_cell,
    run_cell, run_cells_worker, run_local, run_submitit, shared_artifacts, status,
)



