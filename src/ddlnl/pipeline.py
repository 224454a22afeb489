"""``ddlnl run``: noise -> full-noisy baseline -> for each method and IPC: distill -> evaluate.

A run directory belongs to one data setting (dataset, noise, seed, training subset) and only ever
grows: a later ``ddlnl run`` into it with other methods, IPCs, run counts or configurations adds
its records beside the earlier ones, and ``table.md`` lists them all. Each record carries a key (a
hash of everything that produced it), so a re-run with the same configuration skips finished
steps, and a record is never overwritten by a different configuration: a second configuration of
the same step gets its own file (``<name>-<key>``).

Layout::

    RUN/config.json                    layout version, the data setting, every resolved configuration run here
    RUN/noise.npz, RUN/noise.json      noisy labels and their realized statistics
    RUN/baseline.json                  full-noisy baseline (accuracy per run, curves); baseline_early_stop.json
    RUN/cells/<method>-ipc<k>.json     one evaluated synthetic set
    RUN/synthetic/<method>-ipc<k>.safetensors
    RUN/figures/<method>-ipc<k>.png    synthetic images, one row per class
    RUN/results.json, RUN/table.md     the comparison table of every record in the directory

Every accuracy comes from :func:`evaluate_synthetic`, the one path from a synthetic set (or any
labelled tensors), a dataset and a training config to trained models and clean-test accuracies;
``ddlnl run``, ``ddlnl evaluate``, the sweep and the Python API all call it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from .config import apply_overrides, identity
from .data import Dataset, LabeledTensors, load_dataset
from .diagnostics import degenerate_run_warnings
from .errors import ConfigError, DamagedFile, DataError, UserError
from .methods import METHODS, get_method, method_config, paper_resolution
from .methods.common import check_ipc, class_indices
from .models import fit_depth, resolve_model
from .noise import NoisyLabels, make_noise, parse_noise_spec, summary_text
from .progress import position as progress_position
from .figures import image_grid_png
from .formatting import fmt_acc, fmt_delta, markdown_table
from .study import StudyCell, eval_facts
from .synthetic import SyntheticSet, display_images, load_synthetic, to_set_space
from .train import (BaselineConfig, EvalResult, TrainConfig, dsa_strategy_for, evaluate, run_baseline,
                    stratified_split)
from .utils import (atomic_write_json, log, atomic_write_text, clean_stale_tmp, code_version, derive_seed, json_key,
                    read_json_checked, with_checksum)

# Evaluation and baseline settings for a 2-core CPU. ConvNet width 64 trains ~3.6x faster than
# width 128 (measured on this project's 2-core development machine).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "cpu": {"width": 64}}
# The converged baseline must fit its noisy labels, as the study's dashed lines do. Measured on
# digits at 60% symmetric noise: lr 0.01 x 40 epochs fits only 39% of the noisy training labels
# (test 92.8%, an early-stopping regime), lr 0.05 x 100 epochs (cosine) fits 95% (test 62.6%).
# No augmentation, so that memorisation is not slowed down.
BASELINE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 200, "schedule": "cosine", "lr": 0.05, "augment": "none"},
    "cpu": {"epochs": 100, "schedule": "cosine", "lr": 0.05, "augment": "none", "width": 64},
}


# Input sizes of the registered datasets, so a configuration resolves before any data are read.
KNOWN_IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "digits": (8, 8), "fashion-mnist": (28, 28), "cifar10": (32, 32), "cifar100": (32, 32),
    "cifar100-coarse": (32, 32), "tiny-imagenet": (64, 64),
}


@dataclass(frozen=True)
class JobConfig:
    """What ``ddlnl run`` does. The defaults are the main job on the embedded digits data."""

    dataset: str = "digits"  # registry name (ddlnl.data.DATASETS)
    data_root: str | None = None  # where file-based datasets live (else $DDLNL_DATA, then defaults)
    noise: str = "symmetric:0.6"  # noise spec, e.g. symmetric:0.6, asymmetric:0.4, natural:aggre
    noise_file: str | None = None  # CIFAR-N .pt file (natural) or saved label file (file)
    methods: tuple[str, ...] = ("dm",)  # distillers; "random" at the same IPCs is always added
    ipcs: tuple[int, ...] = (1, 10)  # images per class
    n_runs: int = 3  # fresh evaluation models per synthetic set and for the baseline
    seed: int = 0  # everything random derives from this
    preset: str = "auto"  # auto (cpu on CPU, paper on CUDA) | cpu | paper
    train_subset: int = 0  # 0: whole training set; N: a stratified N-image subset (CPU demos)
    baseline: bool = True  # run the full-noisy baseline
    early_stop_baseline: bool = True  # also the early-stopping baseline (noisy validation split)
    baseline_runs: int = 0  # training runs per baseline; 0 = n_runs (a baseline costs a full-data schedule)
    protocol: str = "common"  # common: one recipe for every method | own: each method's published recipe

    def data_identity(self) -> dict[str, Any]:
        """The fields that determine the (noisy) training data, for cache and result keys."""
        return {k: getattr(self, k) for k in ("dataset", "noise", "noise_file", "seed", "train_subset")}

    @property
    def runs_per_baseline(self) -> int:
        return self.baseline_runs or self.n_runs

    def check(self) -> None:
        for m in self.methods:
            get_method(m)
        if not self.ipcs or min(self.ipcs) < 1:
            raise ConfigError(f"ipcs must be positive integers, got {self.ipcs}")
        if self.n_runs < 1:
            raise ConfigError(f"n_runs must be >= 1, got {self.n_runs}")
        if self.preset not in {"auto", "cpu", "paper"}:
            raise ConfigError(f"preset {self.preset!r}: use auto, cpu or paper")
        if self.train_subset < 0:
            raise ConfigError(f"train_subset must be >= 0, got {self.train_subset}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.baseline_runs < 0:
            raise ConfigError(f"baseline_runs must be >= 0 (0 = n_runs), got {self.baseline_runs}")
        if self.protocol not in {"common", "own"}:
            raise ConfigError(f"protocol {self.protocol!r}: use common (one recipe for all) or own (each method's)")


@dataclass(frozen=True)
class ResolvedJob:
    """A job with every config resolved: presets applied, then ``--set`` overrides."""

    job: JobConfig
    preset: str
    train: TrainConfig
    baseline: TrainConfig
    baseline_protocol: BaselineConfig
    methods: dict[str, Any] = field(default_factory=dict)
    # The paper preset resolves a method per IPC (the study's tables): name -> {ipc: config} where
    # some IPC of the job differs from ``methods[name]`` (the config at the job's first IPC).
    per_ipc: dict[str, dict[int, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # how the paper preset resolved (study neighbours, deviations)

    def method_cfg(self, name: str, ipc: int) -> Any:
        """The config of method ``name`` at ``ipc``."""
        return self.per_ipc.get(name, {}).get(ipc, self.methods[name])

    def to_dict(self) -> dict[str, Any]:
        out = {"job": asdict(self.job), "preset": self.preset, "train": asdict(self.train),
               "baseline": asdict(self.baseline), "baseline_protocol": asdict(self.baseline_protocol),
               "methods": {k: asdict(v) for k, v in self.methods.items()}}
        if self.per_ipc:  # only then, so that the run directories of other jobs keep their names
            out["per_ipc"] = {k: {str(i): asdict(c) for i, c in v.items()} for k, v in self.per_ipc.items()}
        return out


def split_overrides(items: Sequence[str] | None) -> dict[str, list[str]]:
    """``["train.width=64", "dm.iterations=10", "n_runs=2"]`` -> ``{"train": [...], "dm": [...], "job": [...]}``."""
    groups: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. train.epochs=100, dm.iterations=50)")
        key = item.split("=", 1)[0]
        prefix, _, rest = key.partition(".")
        if rest:
            groups.setdefault(prefix, []).append(item[len(prefix) + 1:])
        else:
            groups.setdefault("job", []).append(item)
    return groups


def resolve_job(job: JobConfig, overrides: Sequence[str] | None = None,
                device: torch.device | None = None,
                image_size: tuple[int, int] | None = None) -> ResolvedJob:
    """Apply presets and ``--set`` overrides (``train.*``, ``baseline.*``, ``baseline_protocol.*``,
    ``<method>.*`` and plain job keys). Unknown prefixes and keys are refused by name.

    With ``image_size`` (default: looked up from the dataset registry's known sizes, else left as
    is) every ConvNet depth is fitted so the last feature map is at least 2x2.
    """
    groups = split_overrides(overrides)
    job = apply_overrides(job, groups.pop("job", None))
    job.check()
    if image_size is None:
        image_size = KNOWN_IMAGE_SIZES.get(job.dataset)
    preset = job.preset
    if preset == "auto":
        preset = "paper" if device is not None and device.type == "cuda" else "cpu"
    train_cfg = apply_overrides(apply_overrides(TrainConfig(), TRAIN_PRESETS[preset]), groups.pop("train", None))
    train_cfg = train_cfg.for_dataset(job.dataset)
    base_cfg = apply_overrides(apply_overrides(TrainConfig(), BASELINE_PRESETS[preset]), groups.pop("baseline", None))
    base_cfg = base_cfg.for_dataset(job.dataset)
    bproto = apply_overrides(BaselineConfig(), groups.pop("baseline_protocol", None))
    for cfg in (train_cfg, base_cfg):  # a model that cannot be built is refused before any work
        resolve_model(cfg.model)
    methods, per_ipc, notes = {}, {}, []
    for name in ("random", *job.methods):
        over = groups.pop(name, None)
        at = {}
        for ipc in job.ipcs:
            cell = study_cell(job, ipc) if preset == "paper" else None
            cfg = method_config(name, preset, over, cell=cell)
            if hasattr(cfg, "dsa_strategy"):
                cfg = replace(cfg, dsa_strategy=dsa_strategy_for(job.dataset, cfg.dsa_strategy))
            at[ipc] = cfg
            if cell is not None:
                res = paper_resolution(name, cell)
                notes += [f"{name} IPC {ipc}: {n}" for n in res.notes]
                notes += [f"{name} IPC {ipc}: {k} not as in the study: {why}" for k, (_, why) in res.deviations.items()]
        methods[name] = at[job.ipcs[0]]
        if any(c != methods[name] for c in at.values()):
            per_ipc[name] = at
    if groups:
        unknown = ", ".join(sorted(groups))
        valid = ", ".join(["train", "baseline", "baseline_protocol", *sorted(METHODS)])
        raise ConfigError(f"unknown --set prefix {unknown!r} (or a method not in this run); valid: {valid}")
    for section, cfg in (("train", train_cfg), ("baseline", base_cfg), *methods.items()):
        _check_depth(cfg, section)
    resolved = ResolvedJob(job=job, preset=preset, train=train_cfg, baseline=base_cfg,
                           baseline_protocol=bproto, methods=methods, per_ipc=per_ipc, notes=tuple(notes))
    return fit_to_images(resolved, image_size) if image_size is not None else resolved


def fit_to_images(resolved: ResolvedJob, image_size: tuple[int, int]) -> ResolvedJob:
    """Every ConvNet depth of ``resolved`` fitted to ``image_size`` (idempotent)."""
    return replace(resolved, train=_fit(resolved.train, image_size), baseline=_fit(resolved.baseline, image_size),
                   methods={k: _fit(v, image_size) for k, v in resolved.methods.items()},
                   per_ipc={k: {i: _fit(c, image_size) for i, c in v.items()} for k, v in resolved.per_ipc.items()})


def study_cell(job: JobConfig, ipc: int) -> StudyCell:
    """The study cell (dataset, IPC, noise) whose settings the paper preset takes for ``job``."""
    return StudyCell.of(job.dataset, ipc, job.noise)


def _fit(cfg: Any, image_size: tuple[int, int]) -> Any:
    """Reduce a config's ConvNet depth so its last feature map stays >= 2x2 (see models.fit_depth)."""
    if hasattr(cfg, "depth"):
        _check_depth(cfg)
        return replace(cfg, depth=fit_depth(cfg.depth, image_size))
    return cfg


def _check_depth(cfg: Any, where: str = "") -> None:
    # fit_depth only lowers a depth; a depth below 1 is a mistake, not something to round up.
    for name in ("depth", "expert_depth", "width"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            section = where or type(cfg).__name__
            raise ConfigError(f"{section}: {name} must be >= 1, got {value}")


def fit_train_config(cfg: TrainConfig, image_size: tuple[int, int]) -> TrainConfig:
    """``cfg`` with its depth checked and fitted to ``image_size`` (as every run's configs are)."""
    return _fit(cfg, image_size)


def default_run_dir(resolved: ResolvedJob, root: str | Path = "runs") -> Path:
    """``runs/<dataset>-<noise>-seed<seed>-<hash>``, the hash of the data setting only
    (:meth:`JobConfig.data_identity`): a later run of the same data with other methods, IPCs, run
    counts or settings finds the same directory and adds to it."""
    job = resolved.job
    spec = parse_noise_spec(job.noise)
    return Path(root) / f"{job.dataset}-{spec.label()}-seed{job.seed}-{json_key(job.data_identity())[:8]}"


@dataclass
class Prepared:
    """The data of a run: the dataset with noisy training labels, and the noise record."""

    dataset: Dataset
    noisy: NoisyLabels
    noisy_train: Any  # LabeledTensors with noisy labels


def prepare_data(job: JobConfig) -> Prepared:
    """Load the dataset, take the optional stratified subset, and apply the label noise."""
    dataset = load_dataset(job.dataset, job.data_root)
    if len(dataset.train) == 0 or len(dataset.test) == 0:
        raise ConfigError(f"dataset {dataset.name} has no {'training' if len(dataset.train) == 0 else 'test'} images: "
                          "give a dataset with both splits")
    if job.train_subset:
        if job.train_subset >= len(dataset.train):
            raise ConfigError(f"train_subset={job.train_subset} is not smaller than the {len(dataset.train)} training images: use 0 for all")
        frac = job.train_subset / len(dataset.train)
        _, keep = stratified_split(dataset.train.labels, frac, derive_seed(job.seed, "subset"))
        counts = torch.bincount(dataset.train.labels, minlength=dataset.num_classes)
        present = counts[counts > 0]
        if keep.numel() == 0 or torch.unique(dataset.train.labels[keep]).numel() < present.numel():
            # The subset is stratified: a class of n images keeps round(frac * n), which is 0 for
            # the smallest class when the subset is too small.
            need = int(math.ceil(0.5 * len(dataset.train) / int(present.min())))
            raise ConfigError(f"train_subset={job.train_subset} leaves {'no training images' if keep.numel() == 0 else 'a class without images'} "
                              f"in {dataset.name}: use at least {need} (or 0 for all)")
        meta = dict(dataset.meta, train_subset=keep.tolist())
        for per_image in ("coarse_labels", "fine_labels"):  # cifar100 / cifar100-coarse
            if per_image in meta:
                meta[per_image] = meta[per_image][keep]
        dataset = replace(dataset, train=dataset.train.subset(keep), meta=meta)
    spec = parse_noise_spec(job.noise)
    if job.noise_file:
        spec = replace(spec, path=job.noise_file)
    noisy = make_noise(spec, dataset, derive_seed(job.seed, "noise"))
    return Prepared(dataset=dataset, noisy=noisy, noisy_train=dataset.train.with_labels(noisy.noisy))


# Version of the run-directory layout and record keys; a directory of another version is refused
# with a message (its records would be keyed differently and silently duplicated).
RUN_LAYOUT = 2


def _check_run_dir(out: Path, resolved: ResolvedJob, echo: Callable[[str], None] | None = None,
                   write: bool = True) -> None:
    """A run directory belongs to one data setting (dataset, noise, seed, subset).

    Methods, IPCs, run counts and configurations may be added to it later (their records carry
    their own keys); ``config.json`` lists every resolved configuration that ran in it.
    """
    clean_stale_tmp(out, echo=echo or log)  # left by a run that was killed while writing
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
                            "as it is: pass --out NEW_DIR (or move it away) to run this job")
        if previous.get("data") != data:
            theirs = previous.get("data") or {}
            diff = ", ".join(f"{k} {theirs.get(k)!r} there, {v!r} here" for k, v in data.items() if theirs.get(k) != v)
            raise UserError(f"{out} holds a run on other data ({diff}); choose another --out")
        runs = list(previous.get("runs", []))
        if entry in runs:
            return
    if write:
        atomic_write_json(cfg_path, {"layout": RUN_LAYOUT, "data": data, "runs": runs + [entry],
                                     "code_version": code_version()})


def _json_key_of(path: Path) -> str | None:
    """The ``key`` of a JSON record, or None when it is damaged (then it is recomputed in place)."""
    try:
        return str(read_json_checked(path, required=("key",), checksum=True).get("key", ""))
    except DamagedFile:
        return None


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


def _load_record(path: Path, key: str, echo: Callable[[str], None] | None = None) -> dict | None:
    """The record at ``path`` if it was produced under ``key``, else None (a damaged record is
    reported through ``echo`` and recomputed)."""
    if not path.exists():
        return None
    try:
        rec = read_json_checked(path, required=("key", "mean", "std", "accs"), checksum=True)
    except DamagedFile as exc:
        (echo or log)(f"{exc}; recomputing it")  # written by rename, so damage came from outside
        return None
    return rec if rec.get("key") == key else None


def eval_seed(seed: int, method: str, ipc: int) -> int:
    """The evaluation seed of ``method`` at ``ipc`` in a job seeded ``seed`` (``ddlnl run``, the sweep
    and ``ddlnl evaluate`` all use it, so the same file gives the same accuracies)."""
    return derive_seed(seed, "eval", method, ipc)


def evaluation_recipe(syn: SyntheticSet | LabeledTensors, dataset: Dataset, cfg: TrainConfig,
                      protocol: str = "common") -> tuple[TrainConfig, LabeledTensors, float | None]:
    """The training config, data and learning rate with which ``syn`` is evaluated on ``dataset``.

    In one place for every entry point: the ConvNet depth fitted to the images (last feature map
    >= 2x2, :func:`ddlnl.models.fit_depth`), no horizontal flip for digit datasets, with
    ``protocol="own"`` the method's published recipe where it has one, and the set's learned lr
    when it carries one and ``cfg.use_learned_lr``. Idempotent in ``cfg``.
    """
    if protocol not in {"common", "own"}:
        raise ConfigError(f"protocol {protocol!r}: use common (one recipe for all) or own (each method's)")
    cfg = _fit(cfg.for_dataset(dataset.name), dataset.image_size)
    if isinstance(syn, LabeledTensors):
        return cfg, syn, None
    data = syn.as_labeled()
    method = syn.meta.get("method")
    if protocol == "own" and method in METHODS and METHODS[method].own_protocol is not None:
        cfg, data = METHODS[method].own_protocol(cfg, syn, dataset.name)
    lr = syn.lr if (syn.lr is not None and cfg.use_learned_lr) else None
    return cfg, data, lr


def check_compatible(syn: SyntheticSet | LabeledTensors, dataset: Dataset, what: str = "the synthetic set") -> None:
    """Refuse a set whose image shape or class count is not ``dataset``'s."""
    shape = tuple(syn.images.shape[1:])
    k = syn.num_classes if isinstance(syn, SyntheticSet) else dataset.num_classes
    if shape != tuple(dataset.train.images.shape[1:]) or k != dataset.num_classes:
        raise UserError(f"{what} holds {shape} images of {k} classes, but {dataset.name} has "
                        f"{tuple(dataset.train.images.shape[1:])} and {dataset.num_classes}: pass the right --dataset")


def evaluate_synthetic(syn: SyntheticSet | LabeledTensors, data: "Prepared | Dataset", cfg: TrainConfig, *,
                       n_runs: int, seed: int, device: torch.device | str = "cpu", show_progress: bool = False,
                       protocol: str = "common", desc: str | None = None) -> EvalResult:
    """Train ``n_runs`` fresh models on ``syn`` and measure each on the clean test split.

    The one evaluation path (``ddlnl run``, ``ddlnl evaluate``, the sweep, ``ddlnl.evaluate``): the
    recipe comes from :func:`evaluation_recipe`; run ``r`` uses seed ``derive_seed(seed, "run", r)``.

    Args:
        syn: a synthetic set (images ``N x C x H x W`` in the dataset's normalised space, hard or
            soft labels) or any labelled tensors.
        data: the dataset (or a :class:`Prepared` job's data) whose test split is measured.
        cfg: the common training config (before fitting; fitting is done here).
        protocol: ``common`` (``cfg`` for every method) or ``own`` (the method's published recipe).
    """
    dataset = data.dataset if isinstance(data, Prepared) else data
    cfg, train_data, lr = evaluation_recipe(syn, dataset, cfg, protocol)
    method = syn.meta.get("method") if isinstance(syn, SyntheticSet) else None
    test = dataset.test
    # a set distilled in ZCA space is tested on test images whitened the same way
    test = LabeledTensors(to_set_space(syn, test.images, dataset.train.images), test.labels)
    return evaluate(train_data, test, cfg, num_classes=dataset.num_classes, n_runs=n_runs, seed=seed,
                    device=device, lr=lr, show_progress=show_progress, desc=desc or f"evaluate {method or 'set'}")


def evaluate_set(syn: SyntheticSet | LabeledTensors, dataset: Dataset, *, overrides: Sequence[str] | None = None,
                 seed: int = 0, n_runs: int | None = None, preset: str | None = None, protocol: str | None = None,
                 device: torch.device | str = "cpu", show_progress: bool = False) -> tuple[EvalResult, ResolvedJob]:
    """Evaluate ``syn`` on ``dataset`` exactly as a ``ddlnl run`` of that dataset would.

    The configuration resolves as the run's does (same preset, same ``--set`` overrides, including
    ``n_runs=`` and ``protocol=``), and the seed is :func:`eval_seed` of ``seed`` and the set's
    method and IPC (``meta``), so a set made by ``ddlnl run`` gets that run's accuracies back.
    """
    method = syn.meta.get("method") if isinstance(syn, SyntheticSet) else None
    fields: dict[str, Any] = {"dataset": dataset.name, "seed": seed,
                              "methods": (method,) if method in METHODS and method != "random" else ()}
    for name, value in (("n_runs", n_runs), ("preset", preset), ("protocol", protocol)):
        if value is not None:
            fields[name] = value
    check_compatible(syn, dataset)
    device = torch.device(device) if isinstance(device, str) else device
    resolved = resolve_job(replace(JobConfig(), **fields), overrides, device, image_size=dataset.image_size)
    ipc = syn.meta.get("ipc") if isinstance(syn, SyntheticSet) else None
    run_seed = eval_seed(resolved.job.seed, method, ipc) if method is not None and ipc is not None else \
        derive_seed(resolved.job.seed, "eval")
    res = evaluate_synthetic(syn, dataset, resolved.train, n_runs=resolved.job.n_runs, seed=run_seed, device=device,
                             show_progress=show_progress, protocol=resolved.job.protocol)
    return res, resolved


def evaluate_file(path: str | Path, *, dataset: str | None = None, data_root: str | None = None,
                  overrides: Sequence[str] | None = None, seed: int = 0, n_runs: int | None = None,
                  preset: str | None = None, device: torch.device | str = "cpu",
                  show_progress: bool = False) -> tuple[EvalResult, SyntheticSet, ResolvedJob]:
    """``ddlnl evaluate``: a saved synthetic set evaluated exactly as ``ddlnl run`` evaluated it
    (:func:`evaluate_set`); the test split is that of ``dataset`` (default: the set's own)."""
    syn = load_synthetic(path)
    name = dataset or syn.meta.get("dataset")
    if not name:
        raise UserError(f"{path} does not name its dataset: pass --dataset")
    ds = load_dataset(name, data_root)
    check_compatible(syn, ds, str(path))
    res, resolved = evaluate_set(syn, ds, overrides=overrides, seed=seed, n_runs=n_runs, preset=preset,
                                 device=device, show_progress=show_progress)
    return res, syn, resolved


def _one_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


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
    echo(f"data: {ds.name}, {len(ds.train)} train / {len(ds.test)} test, {ds.num_classes} classes, preset {resolved.preset}, device {device}")
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
                _run_cell(resolved, prepared, method, ipc, out, device, show_progress, echo)

    results = collect_results(out)
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

    named = [(Path(str(r.get("file", f"baseline-{i}"))).stem, r) for i, r in enumerate(results["baselines"])]
    named += [(Path(c["synthetic"]).stem, c) for c in results["cells"]]
    by_protocol = {"converged": "baseline", "early-stop": "baseline_early_stop"}
    panel = {by_protocol.get(r.get("protocol"), "baseline"): r.get("histories") or [] for r in results["baselines"][::-1]}
    curves_figure({f"{results['dataset']}, {results['noise']['spec'].get('kind')} {results['noise']['spec'].get('rate')}":
                   panel}, out / "figures" / "training_curves.png")
    if "csv" in loggers:
        write_csv(out / "curves.csv", named)
    if "tensorboard" in loggers:
        write_tensorboard(out / "tensorboard", named)


def collect_results(out: Path) -> dict[str, Any]:
    """Every record of run directory ``out``: ``baselines`` and ``cells`` (ordered: random first,
    then methods in the order they first ran, each by IPC), plus ``dataset`` and ``noise``;
    ``baseline``/``baseline_early_stop`` default to the first record of each protocol."""
    out = Path(out)
    noise = json.loads((out / "noise.json").read_text())
    order: list[str] = ["random"]
    try:
        for entry in json.loads((out / "config.json").read_text()).get("runs", []):
            order += [m for m in entry.get("job", {}).get("methods", []) if m not in order]
    except (OSError, json.JSONDecodeError):
        pass

    def records(paths: Iterable[Path]) -> list[dict]:
        found = []
        for p in sorted(paths):
            try:
                rec = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(rec, dict) and "mean" in rec and "key" in rec:
                found.append({**rec, "file": str(p.relative_to(out))})
        return sorted(found, key=lambda r: r.get("finished", 0.0))

    baselines = sorted(records(out.glob("baseline*.json")), key=lambda r: r.get("protocol") != "converged")
    cells = sorted(records((out / "cells").glob("*.json")),
                   key=lambda r: (order.index(r["method"]) if r["method"] in order else len(order), r["method"], r["ipc"]))
    results: dict[str, Any] = {"dataset": noise.get("dataset"), "noise": noise, "baselines": baselines, "cells": cells,
                               "baseline": None, "baseline_early_stop": None}
    for rec in baselines:
        name = "baseline" if rec.get("protocol") == "converged" else "baseline_early_stop"
        if results[name] is None:
            results[name] = rec
    return results


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
    ds = prepared.dataset
    wanted = []
    if job.baseline:
        wanted.append(("baseline", replace(resolved.baseline_protocol, protocol="converged")))
    if job.early_stop_baseline:
        wanted.append(("baseline_early_stop", replace(resolved.baseline_protocol, protocol="early-stop")))
    records = {}
    for name, bcfg in wanted:
        key = json_key([job.data_identity(), identity(resolved.baseline), identity(bcfg), job.runs_per_baseline])
        path = _slot(out, name, ".json", key, _json_key_of)
        rec = _load_record(path, key, echo)
        if rec is None:
            where = f"step {list(steps).index(name) + 1}/{len(steps)} {name}" if steps and name in steps else name
            echo(f"{name}: {resolved.baseline.epochs} epochs on {len(prepared.noisy_train)} noisy labels x {job.runs_per_baseline} runs")
            with progress_position(where):
                res = run_baseline(prepared.noisy_train, ds.test, resolved.baseline, bcfg, num_classes=ds.num_classes,
                                   n_runs=job.runs_per_baseline, seed=derive_seed(job.seed, name), device=device,
                                   show_progress=show_progress)
            rec = with_checksum({"key": key, "protocol": bcfg.protocol, "config": asdict(resolved.baseline),
                                 "protocol_config": asdict(bcfg), "runs": job.runs_per_baseline, "finished": time.time(),
                                 **res.to_dict()})
            atomic_write_json(path, rec)
        echo(f"{name}: {fmt_acc(rec['mean'], rec['std'])}")
        records[name] = rec
    return records


def run_baselines_only(resolved: ResolvedJob, out: Path, *, device: torch.device,
                       show_progress: bool = True, echo: Callable[[str], None] = log) -> dict[str, dict]:
    """``ddlnl baseline``: only the full-noisy baseline(s) of a job, into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare_data(resolved.job)
    resolved = fit_to_images(resolved, prepared.dataset.image_size)
    echo(summary_text(prepared.noisy, prepared.dataset.classes))
    return _run_baselines(resolved, prepared, out, device, show_progress, echo)


def distill_to_file(resolved: ResolvedJob, method: str, ipc: int, path: Path, *, device: torch.device,
                    show_progress: bool = True) -> Path:
    """``ddlnl distill``: one synthetic set, saved with its provenance."""
    prepared = prepare_data(resolved.job)
    mcfg = fit_to_images(resolved, prepared.dataset.image_size).method_cfg(method, ipc)
    distill_cached(prepared, method, ipc, mcfg, seed=derive_seed(resolved.job.seed, "distill", method, ipc),
                   key=None, path=path, device=device, show_progress=show_progress)
    return Path(path)


def distill_cached(prepared: Prepared, method: str, ipc: int, mcfg: Any, *, seed: int, key: str | None,
                   path: Path | None, device: torch.device, show_progress: bool = False,
                   echo: Callable[[str], None] | None = None) -> SyntheticSet:
    """The synthetic set at ``path`` if it was made under ``key``; otherwise distil it, attach its
    provenance (``key``, and the seconds it took as ``distill_seconds``) and save it there
    atomically. ``key=None`` always distils; ``path=None`` keeps the set in memory. A damaged file
    at ``path`` is reported through ``echo`` and distilled again."""
    echo = echo or log
    if key is not None and path is not None and Path(path).exists():
        try:
            syn = load_synthetic(path)
        except DataError as exc:  # truncated, edited or meaningless: distil it again
            echo(f"{_one_line(exc)}; distilling it again")
        else:
            if syn.meta.get("key") == key:
                return syn
    t0 = time.perf_counter()
    syn = get_method(method).distill(prepared.noisy_train, ipc, mcfg, seed=seed,
                                     num_classes=prepared.dataset.num_classes, device=device, progress=show_progress)
    syn = _with_provenance(syn, prepared, key, distill_seconds=time.perf_counter() - t0)
    if path is not None:
        syn.save(path)
    return syn


def _with_provenance(syn: SyntheticSet, prepared: Prepared, key: str | None, **extra: Any) -> SyntheticSet:
    ds = prepared.dataset
    meta = {**syn.meta, "dataset": ds.name, "noise": prepared.noisy.spec.to_dict(), "code_version": code_version(),
            "mean": list(ds.mean), "std": list(ds.std), "classes": list(ds.classes), **extra}
    if key is not None:
        meta["key"] = key
    return SyntheticSet(syn.images, syn.labels, syn.lr, meta=meta)


def _run_cell(resolved: ResolvedJob, prepared: Prepared, method: str, ipc: int, out: Path,
              device: torch.device, show_progress: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """One method at one IPC: distil (or reuse the set made under the same key), evaluate, record.

    The synthetic set is keyed by the data, method, IPC and method config; the record adds the
    evaluation config, protocol and run count, so a job with more runs or another evaluation
    recipe re-evaluates the same set and records beside the earlier result.
    """
    job = resolved.job
    ds = prepared.dataset
    mcfg = resolved.method_cfg(method, ipc)
    name = f"{method}-ipc{ipc}"
    syn_key = json_key([job.data_identity(), method, ipc, identity(mcfg)])
    eval_key = json_key([identity(resolved.train), job.protocol, job.n_runs])
    key = json_key([syn_key, eval_key])
    rec_path = _slot(out / "cells", name, ".json", key, _json_key_of)
    rec = _load_record(rec_path, key, echo)
    if rec is not None:
        echo(f"{name}: done before, {fmt_acc(rec['mean'], rec['std'])}")
        return rec
    syn_path = _slot(out / "synthetic", name, ".safetensors", syn_key, _synthetic_key_of)
    t0 = time.perf_counter()
    syn = distill_cached(prepared, method, ipc, mcfg, seed=derive_seed(job.seed, "distill", method, ipc), key=syn_key,
                         path=syn_path, device=device, show_progress=show_progress, echo=echo)
    distill_seconds = float(syn.meta.get("distill_seconds", time.perf_counter() - t0))
    shown, space_note = display_images(syn, ds.train.images)  # a ZCA-space set un-whitened
    warnings = degenerate_run_warnings(syn, ds.mean, ds.std, images=shown)
    for w in warnings:
        echo(f"{name}: warning: {w}")
    fig_path = out / "figures" / f"{syn_path.stem}.png"  # named as its set: one figure per synthetic set
    image_grid_png(shown, syn.hard_labels, ds.classes, ds.mean, ds.std, fig_path,
                   title=f"{method}, IPC {ipc}, {ds.name}, {prepared.noisy.spec.label()}",
                   soft=syn.labels.ndim == 2, space_note=space_note)
    seed = eval_seed(job.seed, method, ipc)
    res = evaluate_synthetic(syn, prepared, resolved.train, n_runs=job.n_runs, seed=seed, device=device,
                             show_progress=show_progress, protocol=job.protocol)
    rec = {"key": key, "synthetic_key": syn_key, "eval_key": eval_key, "method": method, "ipc": ipc,
           "config": asdict(mcfg), "train": asdict(resolved.train), "n_runs": job.n_runs, "protocol": job.protocol,
           "eval_seed": seed, "distill_seconds": distill_seconds, "synthetic": str(syn_path.relative_to(out)),
           "learned_lr": syn.lr, "warnings": warnings, "finished": time.time(), **res.to_dict()}
    if "loss" in syn.meta:
        rec["objective_first_last"] = [syn.meta["loss"][0], syn.meta["loss"][-1]] if syn.meta["loss"] else None
    rec = with_checksum(rec)
    atomic_write_json(rec_path, rec)
    echo(f"{name}: {fmt_acc(rec['mean'], rec['std'])} (distill {distill_seconds:.0f}s, evaluate {res.seconds:.0f}s)")
    return rec


def _flat(prefix: str, cfg: dict[str, Any] | None) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in (cfg or {}).items()}


def _cell_setting(rec: dict[str, Any]) -> dict[str, Any]:
    return {"n_runs": rec.get("n_runs"), "protocol": rec.get("protocol"), **_flat("train", rec.get("train")),
            **_flat(rec["method"], rec.get("config"))}


def _baseline_setting(rec: dict[str, Any]) -> dict[str, Any]:
    return {"runs": rec.get("runs", len(rec.get("accs", []))), **_flat("baseline", rec.get("config")),
            **_flat("baseline_protocol", rec.get("protocol_config"))}


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
    (random evaluated with the same config, protocol and run count)."""
    base = results.get("baseline")
    base_mean = base["mean"] if base else float("nan")
    cells = results["cells"]
    random_at = {(c["ipc"], c.get("eval_key")): c["mean"] for c in cells if c["method"] == "random"}
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["method"], c["ipc"]), []).append(c)
    tag_of = {id(c): t for g in groups.values() for c, t in zip(g, _tags(g, _cell_setting))}
    rows = []
    for c in cells:
        rnd = random_at.get((c["ipc"], c.get("eval_key")))
        rows.append({"method": c["method"] + tag_of[id(c)], "ipc": c["ipc"], "mean": c["mean"], "std": c["std"],
                     "vs_baseline": c["mean"] - base_mean,
                     "vs_random": (c["mean"] - rnd) if c["method"] != "random" and rnd is not None else float("nan"),
                     "warnings": list(c.get("warnings") or [])})
    return rows


def render_table(results: dict[str, Any]) -> str:
    """The run's comparison as a markdown table, baseline(s) first; one note line under the table
    for each degenerate distillation run."""
    rows = []
    labels = {"converged": "full noisy set", "early-stop": "full noisy set, early stop"}
    baselines = results.get("baselines")
    if baselines is None:  # a results dict of one job only
        baselines = [b for b in (results.get("baseline"), results.get("baseline_early_stop")) if b]
    for protocol, label in labels.items():
        group = [b for b in baselines if b.get("protocol", "converged") == protocol]
        for b, tag in zip(group, _tags(group, _baseline_setting)):
            rows.append([label + tag, "all", fmt_acc(b["mean"], b["std"]), "-", "-"])
    notes = []
    for r in results["table"]:
        rows.append([r["method"], r["ipc"], fmt_acc(r["mean"], r["std"]), fmt_delta(r["vs_baseline"]), fmt_delta(r["vs_random"])])
        if r.get("warnings"):
            notes.append(f"warning: {r['method']} IPC {r['ipc']} is a degenerate run: {'; '.join(r['warnings'])}")
    noise = results["noise"]
    head = (f"{results['dataset']}, noise {noise['spec'].get('kind')} requested {noise['spec'].get('rate')}, "
            f"realized {noise['realized_rate']:.3f}; clean-test accuracy (%) at the end of training, mean ± std")
    table = head + "\n\n" + markdown_table(["method", "IPC", "accuracy", "Δ baseline", "Δ random"], rows)
    return table + ("\n\n" + "\n".join(notes) if notes else "")


# --------------------------------------------------------------------------------------------
# `ddlnl config show`: one cell's resolved configuration, every value with its source.

KNOWN_NUM_CLASSES: dict[str, int] = {"digits": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100,
                                     "tiny-imagenet": 200}

# ExpertConfig field -> the method config field it is made from (``expert_config()``).
EXPERT_FIELD_OF: dict[str, dict[str, str]] = {
    "datm": {"num_experts": "num_experts", "epochs": "expert_train_epochs", "lr": "expert_lr",
             "batch_size": "expert_batch", "augment": "dsa_strategy", "dsa_strategy": "dsa_strategy",
             "width": "width", "depth": "depth", "norm": "norm", "sam_rho": "expert_sam_rho",
             "sam_alpha": "expert_sam_alpha", "sam_adaptive": "expert_ftd"},
    "dance": {"num_experts": "num_pretrained", "epochs": "pretrain_epochs", "lr": "pretrain_lr",
              "batch_size": "pretrain_batch", "momentum": "pretrain_momentum",
              "weight_decay": "pretrain_weight_decay", "augment": "pretrain_dsa_strategy",
              "dsa_strategy": "pretrain_dsa_strategy", "width": "width", "depth": "depth", "norm": "norm",
              "lr_milestones": "pretrain_epochs", "lr_gamma": "pretrain_lr_gamma"},
}


def _layered_sources(cls: type, preset: str, preset_keys: Sequence[str], study_sources: dict[str, str],
                     set_keys: Sequence[str], before: Any, after: Any, adapted: str) -> dict[str, str]:
    """Where each field of ``after`` came from: default < preset or study < --set < adaptation."""
    sources = {f: f"ddlnl default ({cls.__name__})" for f in asdict(after)}
    for k in preset_keys:
        sources[k] = f"ddlnl preset {preset}"
    sources.update(study_sources)
    for k in set_keys:
        sources[k] = "--set"
    for k, v in asdict(after).items():
        if asdict(before)[k] != v:
            sources[k] = adapted
    return sources


def _set_keys(items: Sequence[str] | None) -> list[str]:
    return [item.split("=", 1)[0].strip() for item in items or []]


def _placeholder_set(method: str, ipc: int, num_classes: int) -> SyntheticSet:
    """A set of the cell's size (no pixel memory: one expanded zero) for a method's own protocol."""
    n = ipc * num_classes
    return SyntheticSet(torch.zeros(1, 1, 1, 1).expand(n, 1, 1, 1), torch.arange(n) % num_classes,
                        meta={"method": method, "ipc": ipc, "num_classes": num_classes})


def evaluation_config(resolved: ResolvedJob, method: str, ipc: int) -> TrainConfig:
    """The TrainConfig a ``method`` set of ``ipc`` images per class is evaluated with under the
    job's protocol (the common config, or the method's own recipe), before any set exists."""
    own = METHODS[method].own_protocol
    if resolved.job.protocol != "own" or own is None:
        return resolved.train
    classes = KNOWN_NUM_CLASSES.get(resolved.job.dataset)
    if classes is None:
        raise ConfigError(f"the number of classes of {resolved.job.dataset!r} is not known before loading it; "
                          f"use one of {', '.join(sorted(KNOWN_NUM_CLASSES))}")
    cfg, _ = own(resolved.train, _placeholder_set(method, ipc, classes), resolved.job.dataset)
    return cfg


def describe_cell(job: JobConfig, method: str, ipc: int, overrides: Sequence[str] | None = None,
                  device: torch.device | None = None) -> dict[str, Any]:
    """The fully resolved configuration of one cell (``method`` at ``ipc`` on ``job``'s data).

    Returns one JSON-able dict: ``cell`` (method, dataset, ipc, noise, preset, protocol), the
    config sections ``method``, ``experts`` (methods with expert trajectories or pre-trained
    models), ``train`` (the common evaluation config) and ``evaluation`` (what this cell is
    evaluated with under its protocol), each a mapping of config field -> value; ``sources`` with
    the same sections, field -> where the value came from (``study: <repo>@<commit> <file>``,
    ``ddlnl default (<Class>)``, ``ddlnl preset <name>``, ``--set``, or a ddlnl adaptation);
    ``study_evaluation`` (the study's evaluation recipe, ``configs/study/eval.csv``, as text) and
    ``notes`` (neighbour rows used, study values not applied, evaluation differences).
    """
    from .data import DATASETS

    if ipc < 1:
        raise ConfigError(f"--ipc must be >= 1, got {ipc}")
    get_method(method)
    if job.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {job.dataset!r}: use one of {', '.join(sorted(DATASETS))}")
    parse_noise_spec(job.noise)
    job = replace(job, methods=(method,), ipcs=(ipc,))
    resolved = resolve_job(job, overrides, device)
    job = resolved.job
    groups = split_overrides(overrides)
    preset = resolved.preset
    cls = get_method(method).config
    cell = study_cell(job, ipc) if preset == "paper" else None
    res = paper_resolution(method, cell) if cell is not None else None
    raw_cfg = method_config(method, preset, groups.get(method), cell=cell)
    mcfg = resolved.method_cfg(method, ipc)
    preset_keys = list(getattr(cls, "PRESETS", {}).get(preset, {})) if preset != "paper" else []
    sources: dict[str, dict[str, str]] = {}
    sources["method"] = _layered_sources(cls, preset, preset_keys, res.sources if res else {},
                                         _set_keys(groups.get(method)), raw_cfg, mcfg,
                                         f"ddlnl: adapted to {job.dataset} (DSA without flip on digits; depth fitted to the image size)")
    out: dict[str, Any] = {"cell": {"method": method, "dataset": job.dataset, "ipc": ipc, "noise": job.noise,
                                    "preset": preset, "protocol": job.protocol},
                           "method": asdict(mcfg)}
    if hasattr(mcfg, "expert_config"):
        ecfg = mcfg.expert_config()
        out["experts"] = asdict(ecfg)
        fields_of = EXPERT_FIELD_OF.get(method, {})
        sources["experts"] = {k: (f"method.{fields_of[k]}: {sources['method'][fields_of[k]]}" if k in fields_of
                                  else f"ddlnl default (ExpertConfig), via {cls.__name__}.expert_config()")
                              for k in out["experts"]}
    train_raw = apply_overrides(apply_overrides(TrainConfig(), TRAIN_PRESETS[preset]), groups.get("train"))
    sources["train"] = _layered_sources(TrainConfig, preset, list(TRAIN_PRESETS[preset]), {},
                                        _set_keys(groups.get("train")), train_raw, resolved.train,
                                        f"ddlnl: adapted to {job.dataset} (DSA without flip on digits; depth fitted to the image size)")
    out["train"] = asdict(resolved.train)
    eval_sources = dict(sources["train"])
    evaluation = evaluation_config(resolved, method, ipc)
    own = METHODS[method].own_protocol
    for k, v in asdict(evaluation).items():
        if asdict(resolved.train)[k] != v:
            eval_sources[k] = f"ddlnl: {method} own protocol ({own.__module__}.{own.__name__})"
    out["evaluation"] = asdict(evaluation)
    notes = list(resolved.notes)
    study_eval: dict[str, str] = {}
    if preset == "paper":
        study_eval, study_eval_src = eval_facts(method, study_cell(job, ipc))
        if job.protocol == "own":
            for k, text in study_eval.items():
                if k not in out["evaluation"]:
                    notes.append(f"evaluation: the study's {k}={text} has no ddlnl field ({study_eval_src[k]})")
                elif str(out["evaluation"][k]).lower() == text.lower() or _same_number(out["evaluation"][k], text):
                    eval_sources[k] = study_eval_src[k]
                else:
                    notes.append(f"evaluation.{k}: ddlnl {out['evaluation'][k]!r}, the study {text} ({study_eval_src[k]})")
        elif study_eval:
            notes.append("evaluation: protocol common (one recipe for every method); --set protocol=own "
                         "evaluates with the method's own recipe, as the study does")
    sources["evaluation"] = eval_sources
    out["sources"] = sources
    out["study_evaluation"] = study_eval
    out["notes"] = notes
    return out


def _same_number(value: Any, text: str) -> bool:
    try:
        return not isinstance(value, bool) and float(value) == float(text)
    except (TypeError, ValueError):
        return False


def describe_text(desc: dict[str, Any]) -> str:
    """``describe_cell``'s dict as aligned text: one ``section.field = value  [source]`` a line."""
    c = desc["cell"]
    lines = [f"{c['method']} on {c['dataset']}, IPC {c['ipc']}, noise {c['noise']}; preset {c['preset']}, "
             f"protocol {c['protocol']}"]
    for section in ("method", "experts", "train", "evaluation"):
        if section not in desc:
            continue
        lines.append(f"\n[{section}]")
        width = max((len(k) for k in desc[section]), default=0)
        for k, v in desc[section].items():
            lines.append(f"  {k:<{width}} = {v!r:<24} {desc['sources'][section].get(k, '')}")
    if desc["study_evaluation"]:
        lines.append("\n[study evaluation recipe]")
        lines += [f"  {k} = {v}" for k, v in desc["study_evaluation"].items()]
    if desc["notes"]:
        lines.append("\n[notes]")
        lines += [f"  - {n}" for n in desc["notes"]]
    return "\n".join(lines)
