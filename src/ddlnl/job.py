"""A job's configuration and data: :class:`JobConfig` (what to run), :func:`resolve_job` (presets,
the study's settings under the paper preset, then ``--set`` overrides, every ConvNet depth fitted
to the images) and :func:`prepare_data` (the dataset, its optional stratified subset and the
noisy labels). Every command resolves its configuration here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import torch

from .config import apply_overrides
from .data import DATASET_FACTS, Dataset, load_dataset
from .errors import ConfigError
from .methods import METHODS, get_method, method_config, paper_resolution
from .models import fit_depth, resolve_model
from .noise import NoisyLabels, make_noise, parse_noise_spec
from .study import StudyCell, network_facts
from .train import BaselineConfig, TrainConfig, dsa_strategy_for, stratified_split
from .utils import derive_seed


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


# Input sizes of the registered datasets (ddlnl.data.DATASET_FACTS), so a configuration resolves
# before any data are read.
KNOWN_IMAGE_SIZES: dict[str, tuple[int, int]] = {k: f.image_size for k, f in DATASET_FACTS.items()}


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
    eval_recipe: str = "common"  # how synthetic sets are evaluated: common (one recipe for every method) | own (each method's published recipe)
    imbalance: float = 1.0  # long-tailed training set: head/tail count ratio of the exponential profile (ddlnl.longtail); 1 = off

    def data_identity(self) -> dict[str, Any]:
        """The fields that determine the (noisy) training data, for cache and result keys.

        ``imbalance`` enters only when it is on (!= 1), so the keys, run-directory names and
        records of every balanced job stay what they were before the field existed."""
        out = {k: getattr(self, k) for k in ("dataset", "noise", "noise_file", "seed", "train_subset")}
        if float(self.imbalance) != 1.0:
            out["imbalance"] = float(self.imbalance)  # 100 and 100.0 are one setting, one key
        return out

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
        if self.eval_recipe not in {"common", "own"}:
            raise ConfigError(f"eval_recipe {self.eval_recipe!r}: use common (one recipe for all) or own (each method's)")
        check_imbalance(self.imbalance)


def check_imbalance(value: Any, where: str = "imbalance") -> float:
    """``value`` as a float if it is a finite number >= 1 (the head/tail ratio; 1 = balanced), else
    ConfigError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
        raise ConfigError(f"{where} must be a finite number >= 1 (the head/tail count ratio; 1 = off), got {value!r}")
    return float(value)


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


# ``--set`` keys renamed after they were documented: (prefix, old key) -> new key. The old key is
# still read (the README and grids of earlier versions use it).
RENAMED_KEYS: dict[tuple[str, str], str] = {("job", "protocol"): "eval_recipe",
                                            ("baseline_protocol", "protocol"): "stopping"}


def _renamed(prefix: str, items: Sequence[str] | None) -> list[str] | None:
    """``items`` (``key=value``, without the prefix) with every old key of ``prefix`` renamed."""
    if items is None:
        return None
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        out.append(RENAMED_KEYS.get((prefix, key.strip()), key.strip()) + sep + value)
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
    job = apply_overrides(job, _renamed("job", groups.pop("job", None)))
    job.check()
    if image_size is None:
        image_size = KNOWN_IMAGE_SIZES.get(job.dataset)
    preset = job.preset
    if preset == "auto":
        preset = "paper" if device is not None and device.type == "cuda" else "cpu"
    train_cfg = apply_overrides(preset_train_config(preset, job.dataset, TRAIN_PRESETS)[0], groups.pop("train", None))
    train_cfg = train_cfg.for_dataset(job.dataset)
    base_cfg = apply_overrides(preset_train_config(preset, job.dataset, BASELINE_PRESETS)[0],
                               groups.pop("baseline", None))
    base_cfg = base_cfg.for_dataset(job.dataset)
    bproto = apply_overrides(BaselineConfig(), _renamed("baseline_protocol", groups.pop("baseline_protocol", None)))
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


def preset_train_config(preset: str, dataset: str,
                        presets: dict[str, dict[str, Any]]) -> tuple[TrainConfig, dict[str, str]]:
    """The evaluation (``TRAIN_PRESETS``) or baseline (``BASELINE_PRESETS``) config of ``preset``
    before ``--set``, and the study sources of what the paper preset takes from the study: its
    network on the dataset (``configs/study/network.csv``; ConvNet-4 on Tiny-ImageNet, where the
    study distils, evaluates and trains its baselines on ConvNetD4)."""
    cfg = apply_overrides(TrainConfig(), presets[preset])
    if preset != "paper":
        return cfg, {}
    values, sources = network_facts(dataset, TrainConfig)
    return replace(cfg, **values), sources


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


@dataclass
class Prepared:
    """The data of a run: the dataset with noisy training labels, and the noise record."""

    dataset: Dataset
    noisy: NoisyLabels
    noisy_train: Any  # LabeledTensors with noisy labels


def prepare_data(job: JobConfig) -> Prepared:
    """Load the dataset, take the optional stratified subset, make it long-tailed (``imbalance``),
    and apply the label noise: the clean set is imbalanced first, then noised
    (:mod:`ddlnl.longtail`)."""
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
    if float(job.imbalance) != 1.0:
        dataset = _long_tailed(dataset, float(job.imbalance), derive_seed(job.seed, "imbalance"))
    spec = parse_noise_spec(job.noise)
    if job.noise_file:
        spec = replace(spec, path=job.noise_file)
    noisy = make_noise(spec, dataset, derive_seed(job.seed, "noise"))
    return Prepared(dataset=dataset, noisy=noisy, noisy_train=dataset.train.with_labels(noisy.noisy))


def _long_tailed(dataset: Dataset, ratio: float, seed: int) -> Dataset:
    """The training split cut to the exponential long-tail profile (:func:`ddlnl.longtail.longtail_indices`,
    class 0 the head, ``n_max`` the smallest class's count) on its clean labels."""
    from .longtail import longtail_indices

    labels = dataset.train.labels
    if torch.unique(labels).numel() < dataset.num_classes:
        raise ConfigError(f"imbalance={ratio:g}: {dataset.name}'s training split lacks a class; a long tail needs every class")
    keep = longtail_indices(labels, ratio, seed=seed)
    meta = dict(dataset.meta)
    subset = meta.get("train_subset")
    meta["train_subset"] = (torch.as_tensor(subset)[keep] if subset is not None else keep).tolist()
    meta["imbalance"] = ratio
    for per_image in ("coarse_labels", "fine_labels"):  # cifar100 / cifar100-coarse
        if per_image in meta:
            meta[per_image] = meta[per_image][keep]
    return replace(dataset, train=dataset.train.subset(keep), meta=meta)
