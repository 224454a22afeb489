"""One ``cmd_<name>(args)`` per command: check the inputs, resolve the job, call the library,
print the result."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..errors import UserError


def _job_from_args(args: argparse.Namespace):
    from ..job import JobConfig

    fields = {"dataset": args.dataset, "data_root": args.data_root, "noise": args.noise,
              "noise_file": args.noise_file, "seed": args.seed, "preset": args.preset,
              "train_subset": args.train_subset, "imbalance": getattr(args, "imbalance", None),
              "n_runs": getattr(args, "n_runs", None), "methods": getattr(args, "methods", None),
              "ipcs": getattr(args, "ipc", None) if isinstance(getattr(args, "ipc", None), tuple) else None}
    job = JobConfig()
    return replace(job, **{k: v for k, v in fields.items() if v is not None})


def _resolve(args: argparse.Namespace, job):
    from ..job import resolve_job
    from ..utils import resolve_device

    device = resolve_device(args.device)
    return resolve_job(job, args.overrides, device), device


def _refuse_prefixes(args: argparse.Namespace, unused: dict[str, str]) -> None:
    """Refuse ``--set`` keys that this command would accept and then ignore."""
    for item in args.overrides:
        prefix = item.split("=", 1)[0].partition(".")[0] if "." in item.split("=", 1)[0] else ""
        if prefix in unused:
            raise UserError(f"--set {item!r}: `ddlnl {args.command}` does not use {prefix}.* keys ({unused[prefix]})")


def _check_inputs(args: argparse.Namespace) -> None:
    """The files a data command reads: --noise-file, a file: noise spec, --data-root, --synthetic."""
    from ..utils import check_input_file

    if getattr(args, "noise_file", None):
        check_input_file(args.noise_file, "--noise-file", "give the CIFAR-N .pt file or a saved label file")
    noise = getattr(args, "noise", None) or ""
    if noise.startswith("file:") and noise[5:]:
        path = check_input_file(noise[5:], "--noise file:", "give a label file written by `ddlnl noise --save`")
        if path.suffix.lower() not in (".npz", ".npy", ".csv", ".txt"):
            raise UserError(f"label file {path}: use .npz (written by `ddlnl noise --save`), .npy or .csv")
    if getattr(args, "synthetic", None) and args.command != "evaluate":
        from ..synthetic import load_synthetic

        check_input_file(args.synthetic, "--synthetic", "give a .safetensors file written by `ddlnl distill`")
        load_synthetic(args.synthetic)  # checked now (digest and meaning), not after the data are prepared
    root = getattr(args, "data_root", None)
    if root and not Path(root).expanduser().exists():
        raise UserError(f"--data-root {root} not found; give the folder (or file) holding the dataset")


def _check_cache() -> None:
    """The cache is a writable folder; temporary files of killed writers in it are removed."""
    from ..utils import check_cache_root, clean_stale_tmp

    clean_stale_tmp(check_cache_root(), echo=_warn)


def cmd_run(args: argparse.Namespace) -> int:
    from ..pipeline import default_run_dir, run_job
    from ..utils import check_output_dir

    _check_inputs(args)
    job = _job_from_args(args)
    if args.no_early_stop:
        job = replace(job, early_stop_baseline=False)
    resolved, device = _resolve(args, job)
    out = check_output_dir(Path(args.out) if args.out else default_run_dir(resolved))
    _check_cache()
    results = run_job(resolved, out, device=device, show_progress=not args.quiet, loggers=args.log)
    print((out / "table.md").read_text(), end="")
    print(f"\nrun directory: {out}  (table.md, results.json, records/, figures/, synthetic/)  [{results['seconds']:.0f}s]")
    return 0


def cmd_noise(args: argparse.Namespace) -> int:
    from ..noise import summary_text
    from ..job import prepare_data, resolve_job
    from ..utils import check_output_file

    _check_inputs(args)
    for item in args.overrides:
        if "." in item.split("=", 1)[0]:
            raise UserError(f"--set {item!r}: `ddlnl noise` only draws labels; it takes no train.*, baseline.* or method keys")
    if args.save:
        check_output_file(args.save, "--save", suffixes=(".npz",))
    job = resolve_job(replace(_job_from_args(args), methods=()), args.overrides).job
    prepared = prepare_data(job)
    print(summary_text(prepared.noisy, prepared.dataset.classes))
    if args.save:
        prepared.noisy.save(args.save)
        print(f"saved noisy labels: {args.save}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from ..pipeline import default_run_dir, run_baselines_only
    from ..utils import check_output_dir

    _check_inputs(args)
    _refuse_prefixes(args, {"train": "the baseline trains with baseline.* keys; train.* sets how synthetic sets are evaluated",
                            "random": "no synthetic sets are made"})
    job = replace(_job_from_args(args), methods=(), baseline=not args.early_stop,
                  early_stop_baseline=args.early_stop)
    resolved, device = _resolve(args, job)
    resolved = replace(resolved, job=replace(resolved.job, ipcs=(1,)))
    out = check_output_dir(Path(args.out) if args.out else default_run_dir(resolved))
    rec = run_baselines_only(resolved, out, device=device, show_progress=not args.quiet)
    for name, r in rec.items():
        print(f"{name}: {100 * r['mean']:.2f} +- {100 * r['std']:.2f} (runs: {', '.join(f'{100 * a:.2f}' for a in r['accs'])})")
    print(f"run directory: {out}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from ..methods import get_method
    from ..evaluation import distill_to_file
    from ..utils import check_output_file

    get_method(args.method)
    _check_inputs(args)
    unused = {"train": "it only distils; evaluate the set with `ddlnl evaluate --set train.KEY=V`",
              "baseline": "it trains no baseline", "baseline_protocol": "it trains no baseline"}
    if args.method != "random":
        unused["random"] = f"it runs {args.method}"
    _refuse_prefixes(args, unused)
    check_output_file(args.out, "--out")
    job = replace(_job_from_args(args), methods=(args.method,), ipcs=(args.ipc,))
    resolved, device = _resolve(args, job)
    _check_cache()
    path = distill_to_file(resolved, args.method, args.ipc, Path(args.out), device=device,
                           show_progress=not args.quiet)
    print(f"synthetic set: {path}")
    return 0


# Plain keys `ddlnl evaluate` reads as job settings (as `ddlnl run --set n_runs=5` does); every
# other plain key is a train.* key.
EVALUATE_JOB_KEYS = ("n_runs", "eval_recipe", "protocol")  # protocol: eval_recipe's former name


def evaluate_overrides(overrides: Sequence[str]) -> list[str]:
    """``ddlnl evaluate``'s ``--set`` items in ``ddlnl run``'s form: ``train.KEY=V`` (plain ``KEY=V``
    is a train key too) and the job keys ``n_runs=`` / ``eval_recipe=``; every other key is refused,
    none is ignored."""
    from ..job import split_overrides

    groups = split_overrides(overrides)
    train_keys, job_keys = groups.pop("train", []), []
    for item in groups.pop("job", []):
        (job_keys if item.split("=", 1)[0].strip() in EVALUATE_JOB_KEYS else train_keys).append(item)
    if groups:
        raise UserError(f"`ddlnl evaluate` takes only train.KEY=VALUE overrides (it only trains on the set), "
                        f"not {', '.join(sorted(p + '.*' for p in groups))}")
    return [f"train.{item}" for item in train_keys] + job_keys


def evaluate_config(overrides: Sequence[str], preset: str | None, device, dataset: str, image_size: tuple[int, int]):
    """The TrainConfig ``ddlnl evaluate`` trains with (checked before any data are read): the
    preset, then the overrides of :func:`evaluate_overrides`, the depth fitted to the images and
    the dataset's augmentation, as in ``ddlnl run``."""
    from ..job import JobConfig, resolve_job

    job = replace(JobConfig(), dataset=dataset, methods=(), **({"preset": preset} if preset else {}))
    return resolve_job(job, evaluate_overrides(overrides), device, image_size=image_size).train


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_file
    from ..job import KNOWN_IMAGE_SIZES
    from ..synthetic import load_synthetic
    from ..utils import check_input_file, resolve_device

    device = resolve_device(args.device)
    check_input_file(args.synthetic, "synthetic set", "give the .safetensors file written by `ddlnl distill`")
    syn = load_synthetic(args.synthetic)
    name = args.dataset or syn.meta.get("dataset")
    if not name:
        raise UserError(f"{args.synthetic} does not name its dataset: pass --dataset")
    # The overrides are checked before the dataset is read (a typo costs nothing).
    evaluate_config(args.overrides, args.preset, device, name, KNOWN_IMAGE_SIZES.get(name, tuple(syn.images.shape[2:])))
    res, syn, resolved = evaluate_file(args.synthetic, dataset=args.dataset, data_root=args.data_root,
                                       overrides=evaluate_overrides(args.overrides), seed=args.seed, n_runs=args.n_runs,
                                       preset=args.preset, device=device, show_progress=not args.quiet)
    print(f"{syn.meta.get('method', '?')} IPC {syn.meta.get('ipc', '?')} on {resolved.job.dataset}: "
          f"{100 * res.mean:.2f} ± {100 * res.std:.2f} (runs: {', '.join(f'{100 * a:.2f}' for a in res.accs)}; "
          f"seeds {res.seeds}; eval_recipe {resolved.job.eval_recipe})")
    return 0


def cmd_experts(args: argparse.Namespace) -> int:
    from ..jobs import experts_for_job
    from ..methods import get_method

    get_method(args.method)
    _check_inputs(args)
    job = replace(_job_from_args(args), methods=(args.method,))
    resolved, device = _resolve(args, job)
    _check_cache()
    status = experts_for_job(resolved, method=args.method, device=device, show_progress=not args.quiet,
                             train_missing=not args.status)
    print(status.summary())
    return 0


def _check_cluster(executor: str) -> None:
    """The cluster executors need submitit, and ``slurm`` needs SLURM's commands on this host."""
    import shutil

    if executor == "local":
        return
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError(f"--executor {executor} needs submitit: pip install 'ddlnl[cluster]', or use --executor local") from None
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise UserError("--executor slurm: SLURM's sbatch is not on PATH here; run on a SLURM login node, "
                        "or use --executor local / submitit-local")


def busy_machine_note(device: object, load: float | None = None, cores: int | None = None) -> str | None:
    """A line for a dry run's time plan when the CPU it was measured on is busier than its cores:
    the plan's step times are measured now, so other jobs inflate them (with several torch threads
    contending for cores, by 20x or more on a 2-core machine), while the memory plan is unaffected."""
    import os

    if getattr(device, "type", str(device)) != "cpu":
        return None
    load = os.getloadavg()[0] if load is None else load
    cores = (os.cpu_count() or 1) if cores is None else cores
    if load <= cores:
        return None
    return (f"note: this machine is busy (load {load:.1f} on {cores} cores), so the times above, measured now, are "
            "inflated; rerun it on a quiet machine (with OMP_NUM_THREADS=1 a busy machine inflates them far less)")


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..sweep import (HELD_EXIT, default_root, load_grid, preflight, run_local, run_submitit, save_grid,
                        shared_artifacts, status)
    from ..utils import check_input_file, check_output_dir

    check_input_file(args.grid, "grid", "give a grid YAML (see configs/grids/)")
    _check_cluster(args.executor)
    grid = load_grid(args.grid)
    root = Path(args.root) if args.root else default_root(grid)
    if not args.dry_run:
        check_output_dir(root, "--root")
    # Everything the real sweep would refuse (overrides, data files, IPC against the class sizes,
    # the --only filters) is refused here, for a dry run too, before any cell runs.
    states = status(grid, root, args.only)
    if not states:
        raise UserError(f"--only {' '.join(args.only)} matches no cell of grid {grid.name!r}; see `ddlnl sweep {args.grid} --dry-run`")
    preflight(grid, only=args.only)
    if args.dry_run:
        from ..plan import fmt_bytes, fmt_seconds
        from ..sweep import plan_grid
        from ..utils import resolve_device

        if args.memory_gb is not None and args.memory_gb <= 0:
            raise UserError(f"--memory-gb must be > 0, got {args.memory_gb}")
        device = resolve_device(args.device)
        budget = None if args.memory_gb is None else int(args.memory_gb * 2 ** 30)
        estimates, budget = plan_grid(grid, root, args.only, device=device, budget=budget, states=states)
        import torch

        print(f"{'state':8s} {'peak mem':>10s} {'time':>8s}  cell  (estimates on {device}, "
              f"{torch.get_num_threads()} torch thread(s): ddlnl.plan)")
        for e in estimates:
            st = e.status
            mem = fmt_bytes(e.plan.peak_bytes) if e.plan else "?"
            secs = fmt_seconds(e.plan.seconds) if e.plan else "?"
            flag = "  DOES NOT FIT" if e.fits is False else ""
            print(f"{st.state:8s} {mem:>10s} {secs:>8s}  {st.cell.name}  [{st.key[:10]}]{flag}")
        counts = {s: sum(1 for x in states if x.state == s) for s in ("done", "running", "todo", "damaged")}
        damaged = f", {counts['damaged']} damaged (recomputed by the next run)" if counts["damaged"] else ""
        print(f"\n{len(states)} cells: {counts['done']} done, {counts['running']} running, {counts['todo']} to do{damaged}; root {root}")
        over = [e for e in estimates if e.fits is False]
        total = sum(e.plan.seconds for e in estimates if e.plan and e.status.state != "done")
        print(f"estimated time of the cells to do on {device}: {fmt_seconds(total)} (one worker); memory budget "
              f"{fmt_bytes(budget)}: {len(over)} cell(s) will not fit")
        note = busy_machine_note(device)
        if note:
            print(note)
        print("shared artifacts:")
        for name, users in shared_artifacts(grid).items():
            print(f"  {name}: {len(users)} cells")
        return 0
    save_grid(root, grid)
    if args.executor == "local":
        counts = run_local(grid, root, show_progress=not args.quiet, only=args.only)
        print(f"{grid.name}: {counts['done']} run, {counts['skipped']} already done, {counts['held']} held by other workers, "
              f"{counts['failed']} failed; records in {root / 'records'}")
        if counts["failed"]:
            return 1
        if counts["held"]:
            print(f"ddlnl sweep: {counts['held']} cell(s) are held by other live workers and were not run here; "
                  f"re-run this command when they finish (exit status {HELD_EXIT})", file=sys.stderr)
            return HELD_EXIT
        return 0
    cluster = "slurm" if args.executor == "slurm" else "local"
    run_submitit(grid, root, cluster=cluster, cells_per_job=args.cells_per_job, wait=not args.no_wait, only=args.only)
    after = status(grid, root, args.only)
    done = sum(1 for st in after if st.state == "done")
    print(f"{grid.name}: {done}/{len(after)} cells have records in {root / 'records'}")
    if args.no_wait or done == len(after):
        return 0
    running = sum(1 for st in after if st.state == "running")
    print(f"ddlnl sweep: {len(after) - done} cell(s) have no record ({running} held by other live workers); "
          f"see {root / 'submitit'} for failed jobs and re-run this command", file=sys.stderr)
    return 1 if running < len(after) - done else HELD_EXIT


def cmd_config(args: argparse.Namespace) -> int:
    import json

    from ..describe import describe_cell, describe_text
    from ..job import JobConfig
    from ..utils import resolve_device

    job = JobConfig(dataset=args.dataset, noise=args.noise, preset=args.preset or "auto")
    desc = describe_cell(job, args.method, args.ipc, args.overrides, resolve_device(args.device))
    print(json.dumps(desc, indent=1, default=str) if args.json else describe_text(desc))
    return 0


def _check_root(root: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"{root} is not a folder: give a run directory of `ddlnl run` or the root directory of a "
                        "`ddlnl sweep`")
    return path


def cmd_results(args: argparse.Namespace) -> int:
    from ..results import ROW_FIELDS, filter_rows, load_records, record_row, rows_table, rows_to_csv, sort_rows
    from ..sweep import grids_of_root
    from ..utils import atomic_write_text, check_output_file

    root = _check_root(args.root)
    filter_rows([dict.fromkeys(ROW_FIELDS)], args.filter)  # a bad filter is refused before reading
    if args.csv:
        check_output_file(args.csv, "--csv", suffixes=(".csv",))
    grids = None if args.all else grids_of_root(root)
    rows = sort_rows(filter_rows([record_row(r) for r in load_records(root, grids, echo=_warn)], args.filter))
    print(rows_table(rows))
    if args.csv:
        atomic_write_text(args.csv, rows_to_csv(rows))
        print(f"\n{len(rows)} rows written to {args.csv}")
    return 0


def _warn(msg: str) -> None:
    print(f"ddlnl: warning: {msg}", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report
    from ..sweep import grids_of_root
    from ..utils import check_output_dir

    root = _check_root(args.root)
    check_output_dir(args.out or root / "report")
    for path in write_report(root, args.out, grid=grids_of_root(root)):
        print(path)
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from ..estimate import estimate_text
    from ..jobs import default_out_dir, read_run, run_estimate
    from ..label_issues import split_issues_overrides
    from ..utils import check_output_dir

    _check_inputs(args)
    args.overrides, icfg = split_issues_overrides(args.overrides)
    record = None
    if args.run:
        given = [f"--{k.replace('_', '-')}" for k in ("dataset", "data_root", "noise", "noise_file", "train_subset")
                 if getattr(args, k) is not None]
        if given:
            raise UserError(f"--run takes its data from the run directory; drop {', '.join(given)}")
        record = read_run(args.run, echo=_warn)
    job = record.job if record is not None else _job_from_args(args)
    resolved, device = _resolve(args, job)
    out = check_output_dir(Path(args.out) if args.out else default_out_dir(resolved, "estimate"))
    _check_cache()
    result = run_estimate(resolved, icfg.n_models, record=record, synthetic=args.synthetic, ipc=args.ipc, out=out,
                          device=device, show_progress=not args.quiet)
    print(estimate_text(result))
    print(f"written: {out / 'estimate.json'}")
    return 0


def cmd_issues(args: argparse.Namespace) -> int:
    from ..jobs import default_out_dir, run_issues
    from ..label_issues import issues_text, split_issues_overrides
    from ..utils import check_output_dir

    _check_inputs(args)
    args.overrides, icfg = split_issues_overrides(args.overrides)
    resolved, device = _resolve(args, _job_from_args(args))
    out = check_output_dir(Path(args.out) if args.out else default_out_dir(resolved, "issues"))
    _check_cache()
    summary = run_issues(resolved, icfg, out, synthetic=args.synthetic, ipc=args.ipc,
                         mode="filter" if args.filter else "relabel", train_downstream=not args.no_train,
                         n_runs=args.n_runs, device=device, show_progress=not args.quiet)
    print(issues_text(summary, out))
    return 0


def cmd_denoise(args: argparse.Namespace) -> int:
    from ..denoise import denoise_text, split_denoise_overrides
    from ..jobs import default_out_dir, run_denoise
    from ..label_issues import split_issues_overrides

    from ..utils import check_output_dir

    _check_inputs(args)
    args.overrides, dcfg = split_denoise_overrides(args.overrides)
    args.overrides, icfg = split_issues_overrides(args.overrides)
    resolved, device = _resolve(args, _job_from_args(args))
    out = check_output_dir(Path(args.out) if args.out else default_out_dir(resolved, "denoise"))
    _check_cache()
    summary = run_denoise(resolved, dcfg, icfg, out, synthetic=args.synthetic, ipc=args.ipc, device=device,
                          show_progress=not args.quiet)
    print(denoise_text(summary, out))
    return 0
