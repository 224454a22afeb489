"""``ddlnl run``: noise -> full-noisy baseline -> for each method and IPC: distill -> evaluate.

A run directory belongs to one data setting (dataset, noise, seed, training subset) and only ever
grows: a later ``ddlnl run`` into it with other methods, IPCs, run counts or configurations adds
its records beside the earlier ones, and ``table.md`` lists them all. Each record is named by its
key (a hash of everything that produced it), so a re-run with the same configuration skips
finished steps, and a record is never overwritten by a different configuration; a second
configuration's synthetic set gets its own file (``<method>-ipc<k>-<key>``).

It is a one-setting grid: each baseline and each method-IPC cell is run by :mod:`ddlnl.cells`
and recorded exactly as a sweep cell is (:func:`ddlnl.sweep.cell_record`,
:func:`ddlnl.sweep.record_cell`: the same record format, key formula, checksum, atomic write and
checked read), so ``ddlnl results``, ``ddlnl report`` and ``ddlnl estimate --run`` read a run
directory as they read a sweep root. This module keeps the run directory's own files and renders
its table.

Layout::

    RUN/config.json                    layout version, the data setting, every resolved configuration run here
    RUN/noise.npz, RUN/noise.json      noisy labels and their realized statistics
    RUN/records/<cell>__<key>.json     one record per baseline and per method-IPC cell (as in a sweep root)
    RUN/synthetic/<method>-ipc<k>.safetensors
    RUN/figures/<method>-ipc<k>.png    synthetic images, one row per class
    RUN/results.json, RUN/table.md     the comparison table of every record in the directory
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .cells import BASELINE_CELLS
from .describe import (EXPERT_FIELD_OF, KNOWN_NUM_CLASSES, describe_cell, describe_text,  # noqa: F401 (re-exported)
                       evaluation_config)
from .errors import DamagedFile, UserError
from .evaluation import (check_compatible, distill_cached, distill_to_file, eval_seed,  # noqa: F401 (re-exported)
                         evaluate_file, evaluate_set, evaluate_synthetic, evaluation_recipe)
from .figures import image_grid_png
from .longtail import thirds_text
from .formatting import fmt_acc, fmt_delta, markdown_table
from .job import (BASELINE_PRESETS, KNOWN_IMAGE_SIZES, TRAIN_PRESETS, JobConfig, Prepared,  # noqa: F401 (re-exported)
                  ResolvedJob, fit_to_images, fit_train_config, prepare_data, resolve_job, split_overrides,
                  study_cell)
from .methods.common import check_ipc, class_indices
from .noise import parse_noise_spec, summary_text
from .progress import position as progress_position
from .sweep.execute import cell_record, record_cell
from .sweep.records import Cell, earlier_layout, read_records, record_key
from .synthetic import load_synthetic
from .train import EvalResult  # noqa: F401 (re-exported)
from .utils import atomic_write_json, atomic_write_text, clean_stale_tmp, code_version, json_key, log, read_json_checked

# The run command's own names, and those of the layers below that ``ddlnl.pipeline`` has always
# offered (the job's configuration and data, the evaluation path, ``config show``).
__all__ = ["RUN_LAYOUT", "default_run_dir", "run_job", "run_baselines_only", "collect_results", "comparison_rows",
           "render_table", "log", "EvalResult", "BASELINE_PRESETS", "KNOWN_IMAGE_SIZES", "TRAIN_PRESETS", "JobConfig",
           "Prepared", "ResolvedJob", "fit_to_images", "fit_train_config", "prepare_data", "resolve_job",
           "split_overrides", "study_cell", "check_compatible", "distill_cached", "distill_to_file", "eval_seed",
           "evaluate_file", "evaluate_set", "evaluate_synthetic", "evaluation_recipe", "EXPERT_FIELD_OF",
           "KNOWN_NUM_CLASSES", "describe_cell", "describe_text", "evaluation_config"]


def default_run_dir(resolved: ResolvedJob, root: str | Path = "runs") -> Path:
    """``runs/<dataset>-<noise>-seed<seed>-<hash>``, the hash of the data setting only
    (:meth:`JobConfig.data_identity`): a later run of the same data with other methods, IPCs, run
    counts or settings finds the same directory and adds to it."""
    job = resolved.job
    spec = parse_noise_spec(job.noise)
    return Path(root) / f"{job.dataset}-{spec.label()}-seed{job.seed}-{json_key(job.data_identity())[:8]}"


# Version of the run-directory layout and record keys; a directory of another version is refused
# with a message (its records would be keyed differently and silently duplicated). 3: the records
# of a sweep root under records/ (2 kept them as cells/*.json and baseline*.json).
RUN_LAYOUT = 3


def _check_run_dir(out: Path, resolved: ResolvedJob, echo: Callable[[str], None] | None = None,
                   write: bool = True) -> None:
    """A run directory belongs to one data setting (dataset, noise, seed, subset).

    Methods, IPCs, run counts and configurations may be added to it later (their records carry
    their own keys); ``config.json`` lists every resolved configuration that ran in it.
    """
    clean_stale_tmp(out, echo=echo or log)  # left by a run that was killed while writing
    if (message := earlier_layout(out)) is not None:
        raise UserError(message)
    cfg_path = out / "config.json"
    entry = json.loads(json.dumps(resolved.to_dict(), default=str))
    data = json.loads(json.dumps(resolved.job.data_identity(), default=str))
    runs: list[dict] = []
    previous = None
    if cfg_path.exists():
        try:
            previous = read_json_checked(cfg_path, required=("data", "runs"))
            if not isinstance(previous["runs"], list) or not isinstance(previous["data"], dict):
                raise DamagedFile(cfg_path, "its data or runs are not a mapping and a list")
        except DamagedFile as exc:
            # Rewritten from this run's configuration; the records beside it carry their own keys,
            # so one made by another configuration is never taken for this one's.
            if write:
                (echo or log)(f"{exc}; rewriting it from this run's configuration")
            previous = None
    if previous is not None:
        if previous.get("layout") != RUN_LAYOUT:
            raise UserError(f"{out} was written by an earlier ddlnl whose records are keyed differently; it is kept "
                            "as it is: run this job again with --out NEW_DIR (or move it away)")
        if previous.get("data") != data:
            theirs = previous.get("data") or {}
            keys = [*data, *(k for k in theirs if k not in data)]  # imbalance is absent when balanced
            diff = ", ".join(f"{k} {theirs.get(k)!r} there, {data.get(k)!r} here" for k in keys if theirs.get(k) != data.get(k))
            raise UserError(f"{out} holds a run on other data ({diff}); choose another --out")
        runs = list(previous.get("runs", []))
        if entry in runs:
            return
    if write:
        atomic_write_json(cfg_path, {"layout": RUN_LAYOUT, "data": data, "runs": runs + [entry],
                                     "code_version": code_version()})


def _synthetic_key_of(path: Path) -> str | None:
    try:
        return str(load_synthetic(path).meta.get("key", ""))
    except Exception:  # a damaged or foreign file is remade; load_synthetic refuses it by its checksum
        return None


def _slot(folder: Path, stem: str, suffix: str, key: str, key_of: Callable[[Path], str | None]) -> Path:
    """Where the artifact ``stem`` made under ``key`` lives in ``folder``: ``stem+suffix`` when that is
    free, damaged or already holds ``key``; otherwise ``stem-<key[:8]>+suffix``, so a second
    configuration of the same step never overwrites the first."""
    plain = folder / f"{stem}{suffix}"
    if not plain.exists() or key_of(plain) in (key, None):
        return plain
    return folder / f"{stem}-{key[:8]}{suffix}"


def _job_steps(job: JobConfig) -> list[str]:
    """The steps of a job in order, for the whole-job position in progress lines."""
    steps = [n for n, on in (("baseline", job.baseline), ("baseline_early_stop", job.early_stop_baseline)) if on]
    return steps + [f"{m}-ipc{k}" for m in _job_methods(job) for k in job.ipcs]


def _job_methods(job: JobConfig) -> list[str]:
    return ["random", *[m for m in job.methods if m != "random"]]


def run_job(resolved: ResolvedJob, out: Path, *, device: torch.device,
            show_progress: bool = True, echo: Callable[[str], None] = log,
            loggers: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or resume) the whole job into ``out`` and return the results dict also written there.

    ``results["cells"]`` and ``table.md`` hold every record in ``out``, this job's and earlier
    ones'; ``results["baseline"]`` is this job's converged baseline (the "Δ baseline" reference).
    ``loggers``: ``csv`` writes every record's curves to ``out/curves.csv``, ``tensorboard`` to
    ``out/tensorboard/``; ``figures/training_curves.png`` shows the baselines' curves.
    """
    from .curves import check_loggers

    job = resolved.job
    out = Path(out)
    loggers = check_loggers(loggers)
    t0 = time.perf_counter()
    _check_run_dir(out, resolved, write=False)  # a directory that cannot take this job: say so before any work
    prepared = prepare_data(job)
    ds = prepared.dataset
    resolved = fit_to_images(resolved, ds.image_size)
    # Refuse an impossible IPC now, not after the baseline has trained for minutes.
    check_ipc(class_indices(prepared.noisy_train.labels, ds.num_classes), max(job.ipcs))
    out.mkdir(parents=True, exist_ok=True)
    _check_run_dir(out, resolved, echo)
    tail = "" if float(job.imbalance) == 1.0 else f" (long-tailed, imbalance {job.imbalance:g})"
    echo(f"data: {ds.name}, {len(ds.train)} train{tail} / {len(ds.test)} test, {ds.num_classes} classes, preset {resolved.preset}, device {device}")
    echo(summary_text(prepared.noisy, ds.classes))
    for note in resolved.notes:
        echo(f"paper preset: {note}")
    _save_noise(prepared, out, echo)

    steps = _job_steps(job)
    current = _run_baselines(resolved, prepared, out, device, show_progress, echo, steps=steps)
    for method in _job_methods(job):
        for ipc in job.ipcs:
            name = f"{method}-ipc{ipc}"
            with progress_position(f"step {steps.index(name) + 1}/{len(steps)} {name}"):
                _run_cell(resolved, prepared, _cell(job, method, ipc), out, device, show_progress, echo)

    results = collect_results(out, echo)
    for name in ("baseline", "baseline_early_stop"):
        if name in current:
            results[name] = current[name]
    results["seconds"] = time.perf_counter() - t0
    results["table"] = comparison_rows(results)
    atomic_write_text(out / "table.md", render_table(results) + "\n")
    atomic_write_json(out / "results.json", results)
    _write_curves(out, results, loggers)
    return results


def _write_curves(out: Path, results: dict[str, Any], loggers: Sequence[str]) -> None:
    """The baselines' training-curve figure, and the curve logs asked for."""
    from .curves import write_csv, write_tensorboard
    from .figures import curves_figure

    named, seen = [], set()
    for r in results["baselines"] + results["cells"]:
        name = _step_name(r)
        named.append((name if name not in seen else f"{name}-{r['key'][:8]}", r))
        seen.add(name)
    panel = {r["cell"]["method"]: r.get("histories") or [] for r in results["baselines"][::-1]}
    curves_figure({f"{results['dataset']}, {results['noise']['spec'].get('kind')} {results['noise']['spec'].get('rate')}":
                   panel}, out / "figures" / "training_curves.png")
    if "csv" in loggers:
        write_csv(out / "curves.csv", named)
    if "tensorboard" in loggers:
        write_tensorboard(out / "tensorboard", named)


def collect_results(out: Path, echo: Callable[[str], None] = log) -> dict[str, Any]:
    """Every record of run directory ``out`` (the records of a sweep root: :mod:`ddlnl.sweep.records`):
    ``baselines`` and ``cells`` (ordered: random first, then methods in the order they first ran,
    each by IPC), plus ``dataset`` and ``noise``; ``baseline``/``baseline_early_stop`` default to
    the first record of each.

    Every record is checked (JSON, fields, checksum); a damaged one is left out and reported
    through ``echo`` in one line, so a table is never silently one row short (the next
    ``ddlnl run`` of its job recomputes it)."""
    out = Path(out)
    found, damaged = read_records(out)
    for exc in damaged:
        echo(f"{exc}; left out of the table (a re-run of its job recomputes it)")
    order: list[str] = ["random"]
    try:
        for entry in read_json_checked(out / "config.json", required=("runs",))["runs"]:
            order += [m for m in entry.get("job", {}).get("methods", []) if m not in order]
    except (OSError, DamagedFile, AttributeError, TypeError):
        pass  # the order of the rows only; a damaged config.json is rewritten by the next run
    found = sorted(found, key=lambda r: str(r.get("finished", "")))
    baselines = sorted((r for r in found if r["cell"]["method"] in BASELINE_CELLS.values()),
                       key=lambda r: r["cell"]["method"] != "baseline")
    cells = sorted((r for r in found if r["cell"]["method"] not in BASELINE_CELLS.values()),
                   key=lambda r: (order.index(r["cell"]["method"]) if r["cell"]["method"] in order else len(order),
                                  r["cell"]["method"], r["cell"]["ipc"]))
    noise = found[0]["noise"] if found else read_json_checked(out / "noise.json", required=("spec",))
    results: dict[str, Any] = {"dataset": noise.get("dataset"), "noise": noise, "baselines": baselines, "cells": cells,
                               "baseline": None, "baseline_early_stop": None}
    for rec in baselines:
        if results[rec["cell"]["method"]] is None:
            results[rec["cell"]["method"]] = rec
    return results


def _step_name(rec: dict[str, Any]) -> str:
    """``baseline``, ``baseline_early_stop`` or ``<method>-ipc<k>``: a record's step in a run."""
    cell = rec["cell"]
    return cell["method"] if cell["method"] in BASELINE_CELLS.values() else f"{cell['method']}-ipc{cell['ipc']}"


def _cell(job: JobConfig, method: str, ipc: int = 0) -> Cell:
    """The cell of ``method`` (or baseline name) at ``ipc`` on the job's one data setting."""
    return Cell(job.dataset, job.noise, job.seed, method, ipc)


def _save_noise(prepared: Prepared, out: Path, echo: Callable[[str], None]) -> None:
    """Write the run's noisy labels, or check the ones there: a damaged or different noise.npz is
    reported and rewritten (the labels are a pure function of the configuration)."""
    from .noise import load_noisy_labels

    path = out / "noise.npz"
    if path.exists():
        try:
            kept = load_noisy_labels(path)
            if torch.equal(kept.noisy, prepared.noisy.noisy) and torch.equal(kept.clean, prepared.noisy.clean):
                if not (out / "noise.json").exists():
                    atomic_write_json(out / "noise.json", prepared.noisy.to_dict())
                return
            reason = "its labels differ from the ones this configuration draws"
        except UserError as exc:
            reason = str(exc)
        echo(f"{path} is damaged ({reason}); rewriting it")
    prepared.noisy.save(path)
    atomic_write_json(out / "noise.json", prepared.noisy.to_dict())


def _run_baselines(resolved: ResolvedJob, prepared: Prepared, out: Path, device: torch.device,
                   show_progress: bool, echo: Callable[[str], None],
                   steps: Sequence[str] | None = None) -> dict[str, dict]:
    """The converged and/or early-stopping full-noisy baselines, resumed from their records.

    A baseline record is keyed by what it depends on: the data setting, the baseline's training
    and protocol configs and its run count (not the methods or IPCs of the job).
    """
    job = resolved.job
    wanted = [name for name, on in (("baseline", job.baseline), ("baseline_early_stop", job.early_stop_baseline)) if on]
    records = {}
    for name in wanted:
        where = f"step {list(steps).index(name) + 1}/{len(steps)} {name}" if steps and name in steps else name
        with progress_position(where):
            records[name] = _run_cell(resolved, prepared, _cell(job, name), out, device, show_progress, echo)
    return records


def run_baselines_only(resolved: ResolvedJob, out: Path, *, device: torch.device,
                       show_progress: bool = True, echo: Callable[[str], None] = log) -> dict[str, dict]:
    """``ddlnl baseline``: only the full-noisy baseline(s) of a job, into run directory ``out``."""
    out = Path(out)
    _check_run_dir(out, resolved, write=False)
    prepared = prepare_data(resolved.job)
    resolved = fit_to_images(resolved, prepared.dataset.image_size)
    out.mkdir(parents=True, exist_ok=True)
    _check_run_dir(out, resolved, echo)
    echo(summary_text(prepared.noisy, prepared.dataset.classes))
    _save_noise(prepared, out, echo)
    return _run_baselines(resolved, prepared, out, device, show_progress, echo)


def _run_cell(resolved: ResolvedJob, prepared: Prepared, cell: Cell, out: Path, device: torch.device,
              show_progress: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """One baseline, or one method at one IPC: its record in ``out`` if there is one, else computed
    by :func:`ddlnl.sweep.cell_record` (distilled, or the set made under the same synthetic key
    reused; evaluated) and kept by :func:`ddlnl.sweep.record_cell`, as in a sweep root.

    The synthetic set is keyed by the data, method, IPC and method config
    (:func:`ddlnl.cells.synthetic_key`); the record adds the evaluation config, recipe and run
    count, so a job with more runs or another evaluation recipe re-evaluates the same set and
    records beside the earlier result.
    """
    job = resolved.job
    ds = prepared.dataset
    name = _step_name({"cell": asdict(cell)})
    key = record_key(cell, resolved, cell.method)

    def compute() -> dict[str, Any]:
        if cell.is_baseline:
            echo(f"{name}: {resolved.baseline.epochs} epochs on {len(prepared.noisy_train)} noisy labels x "
                 f"{job.runs_per_baseline} runs")
        run = cell_record(cell, resolved, prepared, key=key, base=cell.method, root=out, noise_path=out / "noise.npz",
                          syn_path=lambda k: _slot(out / "synthetic", name, ".safetensors", k, _synthetic_key_of),
                          grid_name=None, device=device, show_progress=show_progress, echo=echo)
        rec = run.record
        if run.syn is None:
            return rec
        for w in rec["warnings"]:
            echo(f"{name}: warning: {w}")
        syn_file = Path(rec["artifacts"]["synthetic"])
        image_grid_png(run.shown, run.syn.hard_labels, ds.classes, ds.mean, ds.std,
                       out / "figures" / f"{syn_file.stem}.png",  # named as its set: one figure per synthetic set
                       title=f"{cell.method}, IPC {cell.ipc}, {ds.name}, {prepared.noisy.spec.label()}",
                       soft=run.syn.labels.ndim == 2, space_note=run.space_note)
        echo(f"{name}: {fmt_acc(rec['mean'], rec['std'])} (distill {rec['seconds']['distill']:.0f}s, "
             f"evaluate {rec['seconds']['evaluate']:.0f}s)")
        return rec

    rec, fresh = record_cell(out, cell, key, compute, echo=echo)
    if rec is None:
        raise UserError(f"{name} of {out} is being computed by another live ddlnl process; wait for it to finish "
                        "and run this again")
    if cell.is_baseline:
        echo(f"{name}: {fmt_acc(rec['mean'], rec['std'])}")
    elif not fresh:
        echo(f"{name}: done before, {fmt_acc(rec['mean'], rec['std'])}")
    return rec


def _flat(prefix: str, cfg: dict[str, Any] | None) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in (cfg or {}).items()}


def _cell_setting(rec: dict[str, Any]) -> dict[str, Any]:
    """What a method record's accuracy depends on besides its cell, by ``--set`` name."""
    cfg = rec.get("config") or {}
    return {"n_runs": len(rec["accs"]), "eval_recipe": rec.get("eval_recipe", "common"), **_flat("train", cfg.get("train")),
            **_flat(rec["cell"]["method"], cfg.get("method"))}


def _baseline_setting(rec: dict[str, Any]) -> dict[str, Any]:
    cfg = rec.get("config") or {}
    return {"runs": len(rec["accs"]), **_flat("baseline", cfg.get("baseline")),
            **_flat("baseline_protocol", cfg.get("protocol"))}


def _evaluation_of(rec: dict[str, Any]) -> str:
    """How a method record's set was evaluated (config, recipe, run count): a method is compared
    with the random record evaluated the same way."""
    cfg = rec.get("config") or {}
    return json.dumps([cfg.get("train"), rec.get("eval_recipe", "common"), len(rec["accs"])], sort_keys=True,
                      default=str)


def _tags(group: Sequence[dict[str, Any]], setting: Callable[[dict], dict[str, Any]]) -> list[str]:
    """For records of the same step under different configurations: what tells them apart
    (``"n_runs=5"``), at most three settings; empty strings for a single record."""
    if len(group) < 2:
        return [""] * len(group)
    flat = [setting(r) for r in group]
    keys = sorted({k for f in flat for k in f if len({json.dumps(g.get(k), sort_keys=True, default=str) for g in flat}) > 1})
    tags = []
    for f in flat:
        parts = [f"{k}={f.get(k)}" for k in keys[:3]] + (["..."] if len(keys) > 3 else [])
        tags.append(" (" + ", ".join(parts) + ")" if parts else "")
    return tags


def comparison_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per cell: accuracy and its difference to the baseline and to random at the same IPC
    (random evaluated with the same config, recipe and run count)."""
    base = results.get("baseline")
    base_mean = base["mean"] if base else float("nan")
    cells = results["cells"]
    random_at = {(c["cell"]["ipc"], _evaluation_of(c)): c["mean"] for c in cells if c["cell"]["method"] == "random"}
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["cell"]["method"], c["cell"]["ipc"]), []).append(c)
    tag_of = {id(c): t for g in groups.values() for c, t in zip(g, _tags(g, _cell_setting))}
    rows = []
    for c in cells:
        method, ipc = c["cell"]["method"], c["cell"]["ipc"]
        rnd = random_at.get((ipc, _evaluation_of(c)))
        rows.append({"method": method + tag_of[id(c)], "ipc": ipc, "mean": c["mean"], "std": c["std"],
                     "vs_baseline": c["mean"] - base_mean,
                     "vs_random": (c["mean"] - rnd) if method != "random" and rnd is not None else float("nan"),
                     "warnings": list(c.get("warnings") or []), "thirds": thirds_text(c)})
    return rows


def render_table(results: dict[str, Any]) -> str:
    """The run's comparison as a markdown table, baseline(s) first; one note line under the table
    for each degenerate distillation run."""
    rows = []
    labels = {"baseline": "full noisy set", "baseline_early_stop": "full noisy set, early stop"}
    baselines = results.get("baselines")
    if baselines is None:  # a results dict of one job only
        baselines = [b for b in (results.get("baseline"), results.get("baseline_early_stop")) if b]
    for name, label in labels.items():
        group = [b for b in baselines if b["cell"]["method"] == name]
        for b, tag in zip(group, _tags(group, _baseline_setting)):
            rows.append([label + tag, "all", fmt_acc(b["mean"], b["std"]), "-", "-", thirds_text(b)])
    notes = []
    for r in results["table"]:
        rows.append([r["method"], r["ipc"], fmt_acc(r["mean"], r["std"]), fmt_delta(r["vs_baseline"]), fmt_delta(r["vs_random"]),
                     r.get("thirds", "-")])
        if r.get("warnings"):
            notes.append(f"warning: {r['method']} IPC {r['ipc']} is a degenerate run: {'; '.join(r['warnings'])}")
    noise = results["noise"]
    head = (f"{results['dataset']}, noise {noise['spec'].get('kind')} requested {noise['spec'].get('rate')}, "
            f"realized {noise['realized_rate']:.3f}; clean-test accuracy (%) at the end of training, mean ± std")
    head += "; head/middle/tail: mean accuracy of the class thirds (class 0 first)"
    table = head + "\n\n" + markdown_table(["method", "IPC", "accuracy", "Δ baseline", "Δ random", "head/middle/tail (%)"], rows)
    return table + ("\n\n" + "\n".join(notes) if notes else "")
