"""``ddlnl`` command line: parse, validate, call the library. Nothing else lives here.

A user's mistake (unknown name, bad value, missing or unwritable file, a damaged input) prints one
line naming the problem and the fix and exits with status 2, before any work starts; no traceback,
no usage block. Every command checks what it needs up front: its options, its ``--set`` keys and
their types, the paths it will write (``--out``, ``--save``, ``--csv``, the cache) and the files it
will read. Every data command takes ``--seed``, ``--device`` and ``--set key=value``.

Exit status: 0 done; 1 some sweep cells failed (their tracebacks are under ROOT/errors/);
2 a user error; 3 a sweep left cells undone because other live workers hold them; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from .errors import UserError


class ArgumentError(UserError):
    """A command-line syntax error (unknown option, missing value, bad integer)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (raised, not printed with a usage block)."""

    def error(self, message: str):  # type: ignore[override]
        raise ArgumentError(f"{message}; see `{self.prog} --help`")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    if min(vals) < 1:
        raise argparse.ArgumentTypeError(f"images per class must be >= 1, got {text!r}")
    return vals


def _str_list(text: str) -> tuple[str, ...]:
    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    if not vals:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return vals


def _common(p: argparse.ArgumentParser, *, data: bool = True) -> None:
    if data:
        p.add_argument("--dataset", default=None, help="dataset name (default: digits)")
        p.add_argument("--data-root", default=None, help="folder holding the dataset files (else $DDLNL_DATA, then the dataset's default)")
        p.add_argument("--noise", default=None, help="label noise: symmetric:R, symmetric-inclusive:R, asymmetric:R, pairflip:R, instance:R, natural:VARIANT, file, none (default symmetric:0.6)")
        p.add_argument("--noise-file", default=None, help="CIFAR-N .pt file (natural noise) or a saved label file (file)")
        p.add_argument("--train-subset", type=_nonneg_int, default=None, help="use a stratified subset of N training images (0 = all)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed from which every random choice derives (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--preset", choices=["auto", "cpu", "paper"], default=None,
                   help="hyperparameter preset: paper = published settings, cpu = sized for a 2-core CPU; auto picks by device")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. train.epochs=100, dm.iterations=50, baseline.width=32 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from .methods import METHODS

    from ._version import __version__

    parser = _Parser(prog="ddlnl", description="Dataset distillation as a label denoiser.",
                     epilog="exit status: 0 done, 1 sweep cells failed, 2 user error (one line, before any work), "
                            "3 sweep cells left to other live workers, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"ddlnl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="the main job: noise -> full-noisy baseline -> distill and evaluate each method and IPC, beside random real subsets")
    _common(p)
    p.add_argument("--methods", type=_str_list, default=None, help=f"comma-separated, from {', '.join(sorted(METHODS))} (default dm)")
    p.add_argument("--ipc", type=_int_list, default=None, help="images per class, comma-separated (default 1,10)")
    p.add_argument("--n-runs", type=_positive_int, default=None, help="evaluation models per synthetic set (default 3)")
    p.add_argument("--no-early-stop", action="store_true", help="skip the early-stopping baseline (noisy validation split)")
    p.add_argument("--log", type=_str_list, default=(), metavar="csv,tensorboard",
                   help="also write the recorded training curves: csv (RUN/curves.csv), tensorboard (RUN/tensorboard/)")
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<noise>-seed<seed>-<hash of the data setting>; "
                   "a later run adds its methods, IPCs and run counts to it)")

    p = sub.add_parser("noise", help="make noisy labels, print requested vs realized rate and the largest flips")
    _common(p)
    p.add_argument("--save", default=None, help="write the noisy labels to this .npz")

    p = sub.add_parser("baseline", help="train on the full noisy training set; clean-test accuracy at the end of training")
    _common(p)
    p.add_argument("--n-runs", type=_positive_int, default=None)
    p.add_argument("--early-stop", action="store_true", help="select the epoch on a noisy validation split instead")
    p.add_argument("--out", default=None, help="run directory (default runs/...)")

    p = sub.add_parser("distill", help="distill the noisy training set into a synthetic set")
    _common(p)
    p.add_argument("--method", required=True, help=f"one of {', '.join(sorted(METHODS))}")
    p.add_argument("--ipc", type=_positive_int, required=True, help="images per class")
    p.add_argument("--out", required=True, help="output .safetensors file")

    p = sub.add_parser("evaluate", help="train fresh models on a synthetic set; clean-test accuracy")
    p.add_argument("synthetic", help="a .safetensors file written by `ddlnl distill` or `ddlnl run`")
    p.add_argument("--dataset", default=None, help="dataset for the test split (default: the one the set was made from)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--n-runs", type=_positive_int, default=None, help="evaluation models (default 3, as `ddlnl run`)")
    _common(p, data=False)

    p = sub.add_parser("experts", help="train (or, with --status, only report) the cached expert trajectories a method needs")
    _common(p)
    p.add_argument("--method", default="datm", help="the method whose experts to train (datm, or dance once landed)")
    p.add_argument("--status", action="store_true", help="report what is cached; train nothing")

    p = sub.add_parser("sweep", help="run an experiment grid from one YAML (resumable; local or SLURM via submitit)")
    p.add_argument("grid", help="grid YAML (see configs/grids/)")
    p.add_argument("--root", default=None, help="where records and artifacts go (default runs/sweeps/<grid name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the cells, their state, estimated peak memory and time, and the artifacts they share")
    p.add_argument("--device", default="auto", help="device the dry run plans for (auto: CUDA if present)")
    p.add_argument("--memory-gb", type=float, default=None,
                   help="dry run: memory a cell may use (default: free memory of the device now)")
    p.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local",
                   help="local: in this process; slurm: a SLURM job array through submitit; submitit-local: submitit's local executor")
    p.add_argument("--cells-per-job", type=_positive_int, default=1, help="cells per cluster array task")
    p.add_argument("--no-wait", action="store_true", help="submit and return without waiting for the jobs")
    p.add_argument("--only", action="append", default=[], metavar="FIELD=V1,V2",
                   help="run only matching cells: dataset, noise, seed, method, ipc (baselines: ipc=0); repeatable")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("config", help="show the fully resolved configuration of one cell, every value with its source")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = csub.add_parser("show", help="method, experts and evaluation config of a (method, dataset, IPC, noise) cell")
    p.add_argument("--method", required=True, help=f"one of {', '.join(sorted(METHODS))}")
    p.add_argument("--dataset", required=True, help="dataset name, e.g. cifar10")
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--noise", required=True, help="noise spec, e.g. symmetric:0.4, asymmetric:0.4, natural:aggre, none")
    p.add_argument("--json", action="store_true", help="print one JSON object (sections method/experts/train/evaluation, "
                                                       "a parallel 'sources' object, study_evaluation, notes)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda: decides --preset auto")
    p.add_argument("--preset", choices=["auto", "cpu", "paper"], default=None,
                   help="paper = the study's settings for this cell (configs/study/), cpu = sized for a 2-core CPU")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. datm.iterations=10, train.epochs=100, protocol=own (repeatable)")

    p = sub.add_parser("results", help="list a sweep's result records as a table (filter, export CSV)")
    p.add_argument("root", help="the sweep's root directory")
    p.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE", help="e.g. method=dm, ipc=1,10 (repeatable)")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    p.add_argument("--all", action="store_true", help="include records of configurations no longer in the grid")

    p = sub.add_parser("report", help="figures (accuracy vs IPC, synthetic image grids) and a table from a sweep's records")
    p.add_argument("root", help="the sweep's root directory")
    p.add_argument("--out", default=None, help="output folder (default ROOT/report)")

    p = sub.add_parser("estimate", help="estimate the noise rate and transition matrix with models trained on a synthetic set; IPC advice")
    _common(p)
    p.add_argument("--run", default=None, help="a `ddlnl run` directory: its data, its accuracy over IPC vs the baseline (the corollary bound) and its largest DM set")
    p.add_argument("--synthetic", default=None, help="a .safetensors synthetic set (default: the run's largest DM set, else DM distilled here)")
    p.add_argument("--ipc", type=_positive_int, default=10, help="IPC of the DM set distilled when none is given (default 10)")
    p.add_argument("--out", default=None, help="folder for estimate.json and a distilled set (default runs/estimate-...)")

    p = sub.add_parser("issues", help="flag likely wrong training labels with models trained only on a synthetic set; write a table and cleaned labels")
    _common(p)
    p.add_argument("--synthetic", default=None, help="a .safetensors synthetic set (default: DM distilled here from the noisy data)")
    p.add_argument("--ipc", type=_positive_int, default=10, help="IPC of the DM set distilled when none is given (default 10)")
    p.add_argument("--filter", action="store_true", help="downstream training drops flagged samples instead of relabelling them")
    p.add_argument("--no-train", action="store_true", help="only score and write the files; no downstream training")
    p.add_argument("--n-runs", type=_positive_int, default=1, help="downstream training runs (default 1)")
    p.add_argument("--out", default=None, help="output folder (default runs/issues-...)")

    p = sub.add_parser("denoise", help="train on the full noisy set guided by teachers trained only on a synthetic set (selection, pseudo-labels, soft targets)")
    _common(p)
    p.add_argument("--synthetic", default=None, help="a .safetensors synthetic set (default: DM distilled here from the noisy data)")
    p.add_argument("--ipc", type=_positive_int, default=10, help="IPC of the DM set distilled when none is given (default 10)")
    p.add_argument("--out", default=None, help="output folder (default runs/denoise-...)")
    return parser


def _job_from_args(args: argparse.Namespace):
    from .job import JobConfig

    fields = {"dataset": args.dataset, "data_root": args.data_root, "noise": args.noise,
              "noise_file": args.noise_file, "seed": args.seed, "preset": args.preset,
              "train_subset": args.train_subset,
              "n_runs": getattr(args, "n_runs", None), "methods": getattr(args, "methods", None),
              "ipcs": getattr(args, "ipc", None) if isinstance(getattr(args, "ipc", None), tuple) else None}
    job = JobConfig()
    return replace(job, **{k: v for k, v in fields.items() if v is not None})


def _resolve(args: argparse.Namespace, job):
    from .job import resolve_job
    from .utils import resolve_device

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
    from .utils import check_input_file

    if getattr(args, "noise_file", None):
        check_input_file(args.noise_file, "--noise-file", "give the CIFAR-N .pt file or a saved label file")
    noise = getattr(args, "noise", None) or ""
    if noise.startswith("file:") and noise[5:]:
        path = check_input_file(noise[5:], "--noise file:", "give a label file written by `ddlnl noise --save`")
        if path.suffix.lower() not in (".npz", ".npy", ".csv", ".txt"):
            raise UserError(f"label file {path}: use .npz (written by `ddlnl noise --save`), .npy or .csv")
    if getattr(args, "synthetic", None) and args.command != "evaluate":
        from .synthetic import load_synthetic

        check_input_file(args.synthetic, "--synthetic", "give a .safetensors file written by `ddlnl distill`")
        load_synthetic(args.synthetic)  # checked now (digest and meaning), not after the data are prepared
    root = getattr(args, "data_root", None)
    if root and not Path(root).expanduser().exists():
        raise UserError(f"--data-root {root} not found; give the folder (or file) holding the dataset")


def _check_cache() -> None:
    """The cache is a writable folder; temporary files of killed writers in it are removed."""
    from .utils import check_cache_root, clean_stale_tmp

    clean_stale_tmp(check_cache_root(), echo=_warn)


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import default_run_dir, run_job
    from .utils import check_output_dir

    _check_inputs(args)
    job = _job_from_args(args)
    if args.no_early_stop:
        job = replace(job, early_stop_baseline=False)
    resolved, device = _resolve(args, job)
    out = check_output_dir(Path(args.out) if args.out else default_run_dir(resolved))
    _check_cache()
    results = run_job(resolved, out, device=device, show_progress=not args.quiet, loggers=args.log)
    print((out / "table.md").read_text(), end="")
    print(f"\nrun directory: {out}  (table.md, results.json, figures/, synthetic/)  [{results['seconds']:.0f}s]")
    return 0


def cmd_noise(args: argparse.Namespace) -> int:
    from .noise import summary_text
    from .job import prepare_data, resolve_job
    from .utils import check_output_file

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
    from .pipeline import default_run_dir, run_baselines_only
    from .utils import check_output_dir

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
    from .methods import get_method
    from .evaluation import distill_to_file
    from .utils import check_output_file

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
EVALUATE_JOB_KEYS = ("n_runs", "protocol")


def evaluate_overrides(overrides: Sequence[str]) -> list[str]:
    """``ddlnl evaluate``'s ``--set`` items in ``ddlnl run``'s form: ``train.KEY=V`` (plain ``KEY=V``
    is a train key too) and the job keys ``n_runs=`` / ``protocol=``; every other key is refused,
    none is ignored."""
    from .job import split_overrides

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
    from .job import JobConfig, resolve_job

    job = replace(JobConfig(), dataset=dataset, methods=(), **({"preset": preset} if preset else {}))
    return resolve_job(job, evaluate_overrides(overrides), device, image_size=image_size).train


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_file
    from .job import KNOWN_IMAGE_SIZES
    from .synthetic import load_synthetic
    from .utils import check_input_file, resolve_device

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
          f"seeds {res.seeds}; protocol {resolved.job.protocol})")
    return 0


def cmd_experts(args: argparse.Namespace) -> int:
    from .jobs import experts_for_job
    from .methods import get_method

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


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import (HELD_EXIT, default_root, load_grid, preflight, run_local, run_submitit, save_grid,
                        shared_artifacts, status)
    from .utils import check_input_file, check_output_dir

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
        from .plan import fmt_bytes, fmt_seconds
        from .sweep import plan_grid
        from .utils import resolve_device

        if args.memory_gb is not None and args.memory_gb <= 0:
            raise UserError(f"--memory-gb must be > 0, got {args.memory_gb}")
        device = resolve_device(args.device)
        budget = None if args.memory_gb is None else int(args.memory_gb * 2 ** 30)
        estimates, budget = plan_grid(grid, root, args.only, device=device, budget=budget, states=states)
        print(f"{'state':8s} {'peak mem':>10s} {'time':>8s}  cell  (estimates on {device}: ddlnl.plan)")
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

    from .describe import describe_cell, describe_text
    from .job import JobConfig
    from .utils import resolve_device

    job = JobConfig(dataset=args.dataset, noise=args.noise, preset=args.preset or "auto")
    desc = describe_cell(job, args.method, args.ipc, args.overrides, resolve_device(args.device))
    print(json.dumps(desc, indent=1, default=str) if args.json else describe_text(desc))
    return 0


def _check_root(root: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"{root} is not a folder: give the root directory of a `ddlnl sweep`")
    return path


def cmd_results(args: argparse.Namespace) -> int:
    from .results import ROW_FIELDS, filter_rows, load_records, record_row, rows_table, rows_to_csv, sort_rows
    from .sweep import grids_of_root
    from .utils import atomic_write_text, check_output_file

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
    from .report import write_report
    from .sweep import grids_of_root
    from .utils import check_output_dir

    root = _check_root(args.root)
    check_output_dir(args.out or root / "report")
    for path in write_report(root, args.out, grid=grids_of_root(root)):
        print(path)
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from .estimate import estimate_text
    from .jobs import default_out_dir, read_run, run_estimate
    from .label_issues import split_issues_overrides
    from .utils import check_output_dir

    _check_inputs(args)
    args.overrides, icfg = split_issues_overrides(args.overrides)
    record = None
    if args.run:
        given = [f"--{k.replace('_', '-')}" for k in ("dataset", "data_root", "noise", "noise_file", "train_subset")
                 if getattr(args, k) is not None]
        if given:
            raise UserError(f"--run takes its data from the run directory; drop {', '.join(given)}")
        record = read_run(args.run)
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
    from .jobs import default_out_dir, run_issues
    from .label_issues import issues_text, split_issues_overrides
    from .utils import check_output_dir

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
    from .denoise import denoise_text, split_denoise_overrides
    from .jobs import default_out_dir, run_denoise
    from .label_issues import split_issues_overrides

    from .utils import check_output_dir

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


COMMANDS = {"config": cmd_config, "experts": cmd_experts, "sweep": cmd_sweep, "results": cmd_results, "report": cmd_report, "run": cmd_run, "noise": cmd_noise, "baseline": cmd_baseline, "distill": cmd_distill,
            "evaluate": cmd_evaluate, "estimate": cmd_estimate, "issues": cmd_issues,
            "denoise": cmd_denoise}


def _command_of(argv: Sequence[str] | None) -> str:
    """The subcommand named in ``argv`` (for the error line when parsing itself fails)."""
    for a in (sys.argv[1:] if argv is None else argv):
        if not a.startswith("-"):
            return a if a in COMMANDS else ""
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (see the module docstring)."""
    from .errors import os_error_line

    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list == ["--version"]:  # answered before the parser imports torch and the methods
        from . import __version__

        print(f"ddlnl {__version__}")
        return 0
    parser = build_parser()
    command = _command_of(argv)
    prefix = f"ddlnl {command}" if command else "ddlnl"
    try:
        args = parser.parse_args(argv)
    except UserError as exc:
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        print(f"ddlnl: error: no command given; choose one of {', '.join(sorted(COMMANDS))}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"ddlnl {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A path the up-front checks could not foresee (a disk filling up, permissions changed
        # meanwhile): still one line, with what to do.
        print(f"ddlnl {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddlnl {args.command}: interrupted; finished steps are saved and a re-run resumes", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    """A message that must fit one line: later lines (a library's own advice) are dropped."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


if __name__ == "__main__":
    sys.exit(main())
