"""The ``ddlnl`` argument parser: every command's options and the checked value types."""

from __future__ import annotations

import argparse

from ..errors import UserError


class ArgumentError(UserError):
    """A command-line syntax error (unknown option, missing value, bad integer)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (raised, not printed with a usage block)."""

    def error(self, message: str):  # type: ignore[override]
        raise ArgumentError(f"{message}; see `{self.prog} --help`")


def _int_at_least(low: int, wanted: str):
    """An argparse type: an integer >= ``low``; ``wanted`` names it in the error for a non-integer."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


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


def _imbalance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 1 (the head/tail count ratio), got {text!r}") from None
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 1 (1 = balanced), got {text!r}")
    return value


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
    from ..methods import METHODS

    from .._version import __version__

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
    p.add_argument("--imbalance", type=_imbalance, default=None, metavar="R",
                   help="make the training set long-tailed before the noise: exponential profile, head/tail count "
                        "ratio R (class 0 the head; ddlnl.longtail); 1 = balanced (default)")
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
    p.add_argument("--method", default="datm", help="the method whose experts to train (datm or dance)")
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
                   help="override a config field, e.g. datm.iterations=10, train.epochs=100, eval_recipe=own (repeatable)")

    p = sub.add_parser("results", help="list the result records of a sweep or a run directory as a table (filter, export CSV)")
    p.add_argument("root", help="the sweep's root directory, or a `ddlnl run` directory")
    p.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE", help="e.g. method=dm, ipc=1,10 (repeatable)")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    p.add_argument("--all", action="store_true", help="include records of configurations no longer in the grid")

    p = sub.add_parser("report", help="figures (accuracy vs IPC, synthetic image grids) and a table from the records of a sweep or a run directory")
    p.add_argument("root", help="the sweep's root directory, or a `ddlnl run` directory")
    p.add_argument("--out", default=None, help="output folder (default ROOT/report)")

    p = sub.add_parser("estimate", help="estimate the noise rate and transition matrix with models trained on a synthetic set; IPC advice")
    _common(p)
    p.add_argument("--run", default=None, help="a `ddlnl run` directory (or a sweep root of one data setting): its data, its accuracy over IPC vs the baseline (the corollary bound) and its largest DM set")
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
