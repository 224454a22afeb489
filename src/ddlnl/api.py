"""The Python API: one call per step of the study, each resolved exactly as ``ddlnl run`` resolves it.

::

    import ddlnl
    data = ddlnl.load_dataset("digits")
    noisy = ddlnl.make_noise(data, "symmetric:0.6", seed=0)
    syn = ddlnl.distill(data, "dm", ipc=10, labels=noisy, preset="cpu")
    print(ddlnl.evaluate(syn, data, preset="cpu"))

Settings are the command line's ``--set`` strings (``["train.epochs=100", "dm.iterations=50"]``)
on top of a preset (``cpu``, ``paper``, or ``auto``: by device). The same data, seed, preset and
settings give the same synthetic set and the same accuracies as ``ddlnl run``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch
from torch import nn

from .data import Dataset, LabeledTensors
from .noise import NoisyLabels, make_noise as _make_noise, parse_noise_spec
from .synthetic import SyntheticSet, to_set_space
from .train import EvalResult
from .utils import derive_seed, resolve_device


def make_noise(dataset: Dataset, spec: str = "symmetric:0.6", *, seed: int = 0,
               noise_file: str | None = None) -> NoisyLabels:
    """Noisy training labels for ``dataset`` (the test split is never touched).

    Args:
        spec: ``symmetric:R``, ``asymmetric:R``, ``pairflip:R``, ``instance:R``, ``natural:VARIANT``
            (with ``noise_file``), ``file:labels.npz``, ``none``.
        seed: the job seed, as ``ddlnl run --seed``: the labels equal that run's.

    Returns:
        :class:`~ddlnl.noise.NoisyLabels`: ``noisy`` and ``clean`` (``int64`` N), ``realized_rate``,
        ``realized_T`` (``T[i, j] = P(noisy = j | true = i)``).
    """
    noise_spec = parse_noise_spec(spec)
    if noise_file:
        noise_spec = replace(noise_spec, path=noise_file)
    return _make_noise(noise_spec, dataset, derive_seed(seed, "noise"))


def _train_split(dataset: Dataset | LabeledTensors, labels: NoisyLabels | torch.Tensor | None) -> LabeledTensors:
    train = dataset.train if isinstance(dataset, Dataset) else dataset
    if labels is None:
        return train
    noisy = labels.noisy if isinstance(labels, NoisyLabels) else torch.as_tensor(labels)
    return train.with_labels(noisy)


def _resolve(dataset: Dataset, *, methods: Sequence[str] = (), settings: Sequence[str] | None = None,
             preset: str = "auto", seed: int = 0, device: torch.device | None = None):
    from .job import JobConfig, fit_to_images, resolve_job

    job = replace(JobConfig(), dataset=dataset.name, methods=tuple(m for m in methods if m != "random"),
                  preset=preset, seed=seed)
    return fit_to_images(resolve_job(job, settings, device, image_size=dataset.image_size), dataset.image_size)


def distill(dataset: Dataset, method: str = "dm", ipc: int = 10, *, labels: NoisyLabels | torch.Tensor | None = None,
            settings: Sequence[str] | None = None, preset: str = "auto", seed: int = 0,
            device: str | torch.device = "auto", show_progress: bool = False) -> SyntheticSet:
    """Distil ``dataset``'s training split, with ``labels`` (e.g. from :func:`make_noise`) in place of
    its own, into ``ipc`` images per class with ``method`` (``sorted(ddlnl.METHODS)``).

    Returns:
        :class:`~ddlnl.synthetic.SyntheticSet`: ``images`` float32 ``N x C x H x W`` in the
        dataset's normalised space, ``labels`` (``int64`` N or soft ``N x K``), ``lr`` (learned, or
        None), ``meta`` (method, config, dataset, normalisation); ``.save(path)`` writes the same
        file as ``ddlnl distill``.
    """
    from .methods import get_method
    from .evaluation import _with_provenance
    from .job import Prepared

    dev = resolve_device(device)
    resolved = _resolve(dataset, methods=(method,), settings=settings, preset=preset, seed=seed, device=dev)
    train = _train_split(dataset, labels)
    syn = get_method(method).distill(train, ipc, resolved.methods[method],
                                     seed=derive_seed(seed, "distill", method, ipc),
                                     num_classes=dataset.num_classes, device=dev, progress=show_progress)
    noisy = labels if isinstance(labels, NoisyLabels) else None
    if noisy is None:  # the labels came as a tensor (or are the dataset's own): say so in the provenance
        meta = {**syn.meta, "dataset": dataset.name, "noise": {"kind": "none" if labels is None else "given"},
                "mean": list(dataset.mean), "std": list(dataset.std), "classes": list(dataset.classes)}
        return SyntheticSet(syn.images, syn.labels, syn.lr, meta=meta)
    return _with_provenance(syn, Prepared(dataset=dataset, noisy=noisy, noisy_train=train), None)


def evaluate(syn: SyntheticSet | LabeledTensors, dataset: Dataset, *, n_runs: int = 3,
             settings: Sequence[str] | None = None, preset: str = "auto", eval_recipe: str = "common",
             seed: int = 0, device: str | torch.device = "auto", show_progress: bool = False) -> EvalResult:
    """Train ``n_runs`` fresh models on ``syn`` and return their clean-test accuracies at the end
    of training (:class:`~ddlnl.train.EvalResult`: ``accs``, ``seeds``, ``mean``, ``std``).

    The same path as ``ddlnl run`` and ``ddlnl evaluate``: ConvNet depth fitted to the images,
    no flips for digits, the set's learned lr; ``eval_recipe="own"`` for the method's own recipe.
    """
    from .evaluation import evaluate_set

    res, _ = evaluate_set(syn, dataset, overrides=settings, seed=seed, n_runs=n_runs, preset=preset,
                          eval_recipe=eval_recipe, device=resolve_device(device), show_progress=show_progress)
    return res


def train_model(syn: SyntheticSet | LabeledTensors, dataset: Dataset, *, settings: Sequence[str] | None = None,
                preset: str = "auto", eval_recipe: str = "common", seed: int = 0, device: str | torch.device = "auto",
                show_progress: bool = False) -> tuple[nn.Module, float]:
    """One model trained on ``syn`` as :func:`evaluate` trains its first run, and its clean-test
    accuracy: ``(model, accuracy)``; the model maps ``N x C x H x W`` to logits ``N x K``."""
    from .evaluation import eval_seed, evaluation_recipe
    from .train import accuracy, build_model, train

    dev = resolve_device(device)
    method = syn.meta.get("method") if isinstance(syn, SyntheticSet) else None
    resolved = _resolve(dataset, methods=(method,) if method and method != "random" else (), settings=settings,
                        preset=preset, seed=seed, device=dev)
    cfg, data, lr = evaluation_recipe(syn, dataset, resolved.train, eval_recipe)
    ipc = syn.meta.get("ipc") if isinstance(syn, SyntheticSet) else None
    base = eval_seed(seed, method, ipc) if method is not None and ipc is not None else derive_seed(seed, "eval")
    run_seed = derive_seed(base, "run", 0)
    channels, h, w = data.images.shape[1:]
    model = build_model(cfg, channels=channels, num_classes=dataset.num_classes, image_size=(h, w), seed=run_seed,
                        device=dev)
    train(model, data, cfg, seed=run_seed, lr=lr, show_progress=show_progress, desc="train")
    test = LabeledTensors(to_set_space(syn, dataset.test.images, dataset.train.images), dataset.test.labels)
    return model, accuracy(model, test, cfg.eval_batch_size)


def label_issues(syn: SyntheticSet, dataset: Dataset, labels: NoisyLabels | torch.Tensor | None = None, *,
                 settings: Sequence[str] | None = None, preset: str = "auto", seed: int = 0,
                 device: str | torch.device = "auto", show_progress: bool = False) -> Any:
    """Score every training label (``labels``, default the dataset's own) with models trained only
    on ``syn``, as ``ddlnl issues`` does.

    ``settings`` may hold ``issues.*`` keys (``issues.n_models=5``, ``issues.neighbours=0``) beside
    ``train.*``. Returns :class:`~ddlnl.label_issues.LabelIssues` (per-sample ``quality``,
    ``is_issue``, ``suggested`` label; ``.to_csv(path)``, ``.cleaned_labels()``, ``.summary()``).
    """
    from .label_issues import score_labels, split_issues_overrides

    dev = resolve_device(device)
    rest, icfg = split_issues_overrides(list(settings or []))
    resolved = _resolve(dataset, settings=rest, preset=preset, seed=seed, device=dev)
    return score_labels(syn, _train_split(dataset, labels), icfg, resolved.train, seed=derive_seed(seed, "issues"),
                        device=dev, show_progress=show_progress)
