"""The one path from a synthetic set (or any labelled tensors), a dataset and a training config to
trained models and clean-test accuracies (:func:`evaluate_synthetic`), and the one way a set is
distilled and cached with its provenance (:func:`distill_cached`). ``ddlnl run``, ``ddlnl
evaluate``, the sweep and the Python API all call them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .data import Dataset, LabeledTensors, load_dataset
from .errors import ConfigError, DataError, UserError
from .job import JobConfig, Prepared, ResolvedJob, _fit, fit_to_images, prepare_data, resolve_job
from .methods import METHODS, get_method
from .remedy import noise_model_for_job
from .synthetic import SyntheticSet, load_synthetic, to_set_space
from .train import EvalResult, TrainConfig, evaluate
from .utils import code_version, derive_seed, log


def eval_seed(seed: int, method: str, ipc: int) -> int:
    """The evaluation seed of ``method`` at ``ipc`` in a job seeded ``seed`` (``ddlnl run``, the sweep
    and ``ddlnl evaluate`` all use it, so the same file gives the same accuracies)."""
    return derive_seed(seed, "eval", method, ipc)


def evaluation_recipe(syn: SyntheticSet | LabeledTensors, dataset: Dataset, cfg: TrainConfig,
                      recipe: str = "common") -> tuple[TrainConfig, LabeledTensors, float | None]:
    """The training config, data and learning rate with which ``syn`` is evaluated on ``dataset``.

    In one place for every entry point: the ConvNet depth fitted to the images (last feature map
    >= 2x2, :func:`ddlnl.models.fit_depth`), no horizontal flip for digit datasets, with
    ``recipe="own"`` the method's published recipe where it has one, and the set's learned lr
    when it carries one and ``cfg.use_learned_lr``. Idempotent in ``cfg``.
    """
    if recipe not in {"common", "own"}:
        raise ConfigError(f"eval_recipe {recipe!r}: use common (one recipe for all) or own (each method's)")
    cfg = _fit(cfg.for_dataset(dataset.name), dataset.image_size)
    if isinstance(syn, LabeledTensors):
        return cfg, syn, None
    data = syn.as_labeled()
    method = syn.meta.get("method")
    if recipe == "own" and method in METHODS and METHODS[method].own_recipe is not None:
        cfg, data = METHODS[method].own_recipe(cfg, syn, dataset.name)
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
                       recipe: str = "common", desc: str | None = None) -> EvalResult:
    """Train ``n_runs`` fresh models on ``syn`` and measure each on the clean test split.

    The one evaluation path (``ddlnl run``, ``ddlnl evaluate``, the sweep, ``ddlnl.evaluate``): the
    recipe comes from :func:`evaluation_recipe`; run ``r`` uses seed ``derive_seed(seed, "run", r)``.

    Args:
        syn: a synthetic set (images ``N x C x H x W`` in the dataset's normalised space, hard or
            soft labels) or any labelled tensors.
        data: the dataset (or a :class:`Prepared` job's data) whose test split is measured.
        cfg: the common training config (before fitting; fitting is done here).
        recipe: ``common`` (``cfg`` for every method) or ``own`` (the method's published recipe).
    """
    dataset = data.dataset if isinstance(data, Prepared) else data
    cfg, train_data, lr = evaluation_recipe(syn, dataset, cfg, recipe)
    method = syn.meta.get("method") if isinstance(syn, SyntheticSet) else None
    test = dataset.test
    # a set distilled in ZCA space is tested on test images whitened the same way
    test = LabeledTensors(to_set_space(syn, test.images, dataset.train.images), test.labels)
    return evaluate(train_data, test, cfg, num_classes=dataset.num_classes, n_runs=n_runs, seed=seed,
                    device=device, lr=lr, show_progress=show_progress, desc=desc or f"evaluate {method or 'set'}")


def evaluate_set(syn: SyntheticSet | LabeledTensors, dataset: Dataset, *, overrides: Sequence[str] | None = None,
                 seed: int = 0, n_runs: int | None = None, preset: str | None = None, eval_recipe: str | None = None,
                 device: torch.device | str = "cpu", show_progress: bool = False) -> tuple[EvalResult, ResolvedJob]:
    """Evaluate ``syn`` on ``dataset`` exactly as a ``ddlnl run`` of that dataset would.

    The configuration resolves as the run's does (same preset, same ``--set`` overrides, including
    ``n_runs=`` and ``eval_recipe=``), and the seed is :func:`eval_seed` of ``seed`` and the set's
    method and IPC (``meta``), so a set made by ``ddlnl run`` gets that run's accuracies back.
    """
    method = syn.meta.get("method") if isinstance(syn, SyntheticSet) else None
    fields: dict[str, Any] = {"dataset": dataset.name, "seed": seed,
                              "methods": (method,) if method in METHODS and method != "random" else ()}
    for name, value in (("n_runs", n_runs), ("preset", preset), ("eval_recipe", eval_recipe)):
        if value is not None:
            fields[name] = value
    check_compatible(syn, dataset)
    device = torch.device(device) if isinstance(device, str) else device
    resolved = resolve_job(replace(JobConfig(), **fields), overrides, device, image_size=dataset.image_size)
    ipc = syn.meta.get("ipc") if isinstance(syn, SyntheticSet) else None
    run_seed = eval_seed(resolved.job.seed, method, ipc) if method is not None and ipc is not None else \
        derive_seed(resolved.job.seed, "eval")
    res = evaluate_synthetic(syn, dataset, resolved.train, n_runs=resolved.job.n_runs, seed=run_seed, device=device,
                             show_progress=show_progress, recipe=resolved.job.eval_recipe)
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


def distill_to_file(resolved: ResolvedJob, method: str, ipc: int, path: Path, *, device: torch.device,
                    show_progress: bool = True) -> Path:
    """``ddlnl distill``: one synthetic set, saved with its provenance."""
    prepared = prepare_data(resolved.job)
    mcfg = fit_to_images(resolved, prepared.dataset.image_size).method_cfg(method, ipc)
    distill_cached(prepared, method, ipc, mcfg, seed=derive_seed(resolved.job.seed, "distill", method, ipc),
                   key=None, path=path, device=device, show_progress=show_progress,
                   noise_model=lambda: noise_model_for_job(resolved, prepared, mcfg, device=device))
    return Path(path)


def distill_cached(prepared: Prepared, method: str, ipc: int, mcfg: Any, *, seed: int, key: str | None,
                   path: Path | None, device: torch.device, show_progress: bool = False,
                   echo: Callable[[str], None] | None = None, noise_model: Any = None) -> SyntheticSet:
    """The synthetic set at ``path`` if it was made under ``key``; otherwise distil it, attach its
    provenance (``key``, and the seconds it took as ``distill_seconds``) and save it there
    atomically. ``key=None`` always distils; ``path=None`` keeps the set in memory. A damaged file
    at ``path`` is reported through ``echo`` and distilled again. ``noise_model``: the ``T`` of a
    method's ``noise_correction`` (:mod:`ddlnl.correction`), or a function making it (called only
    when the set is distilled), passed to the distiller when not None."""
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
    noise_model = noise_model() if callable(noise_model) else noise_model
    extra = {} if noise_model is None else {"noise_model": noise_model}
    syn = get_method(method).distill(prepared.noisy_train, ipc, mcfg, seed=seed,
                                     num_classes=prepared.dataset.num_classes, device=device, progress=show_progress,
                                     **extra)
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
