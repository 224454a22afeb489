"""Where a job's noise remedy gets its ``T`` (:mod:`ddlnl.correction` holds the correction itself).

``estimated``: :data:`N_TEACHERS` models trained only on the job's *unremedied* DM set at
:data:`TEACHER_IPC` (same data, the job's ``dm`` config with ``noise_correction=none``, or DM's
preset config when the job runs DANCE or DATM alone: :func:`teacher_dm_config`) score the
given labels, and :func:`ddlnl.estimate.estimate_noise` reads ``T`` and the class prior off them
(anchor points). ``true``: the realized ``T`` of the injected noise (an oracle).

``correction_rounds=2`` (DM) re-estimates ``T`` once: a second DM set at :data:`TEACHER_IPC`,
remedied with the first estimate (the job's ``correction_init``), trains :data:`N_TEACHERS` new
teachers, and their ``T`` and posteriors are the ones the method uses. Teachers trained on a set
that no longer carries the structured noise read the flips better than teachers trained on one that
does (measured in ``benchmarks/results/structured.md``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .correction import NoiseModel, sample_posterior, true_noise_model
from .errors import DataError

__all__ = ["TEACHER_IPC", "N_TEACHERS", "estimated_noise_model", "teacher_dm_config", "noise_model_for_job"]

# Estimated route inside a job: teachers trained on the job's unremedied DM set at this IPC. Not
# tuned: the IPC at which the estimate benchmark (ddlnl estimate) distils its set, and 3 teachers.
TEACHER_IPC = 10
N_TEACHERS = 3


def estimated_noise_model(teacher_set: Any, noisy_train: Any, train_cfg: Any, *, num_classes: int,
                          n_teachers: int = N_TEACHERS, seed: int, device: torch.device | str = "cpu") -> NoiseModel:
    """``T`` and ``pi`` estimated from ``n_teachers`` models trained only on ``teacher_set`` (a
    :class:`~ddlnl.synthetic.SyntheticSet`), scoring the given labels of ``noisy_train``
    (:func:`ddlnl.estimate.estimate_noise`, anchor points), with each sample's
    ``P(true | x, given)`` (:func:`ddlnl.correction.sample_posterior`) for DM's posterior init."""
    from .estimate import estimate_noise
    from .label_issues import teacher_outputs, train_teachers

    models = train_teachers(teacher_set, train_cfg, n_teachers, seed=seed, device=device)
    probs = teacher_outputs(models, noisy_train.images, batch_size=train_cfg.eval_batch_size,
                            keep_features=False).probs
    est = estimate_noise(probs, noisy_train.labels.numpy(), num_classes)
    post = sample_posterior(probs, noisy_train.labels.numpy(), est.transition)
    return NoiseModel(np.asarray(est.transition), np.asarray(est.class_prior), "estimated", sample_posterior=post)


def teacher_dm_config(resolved: Any, image_size: tuple[int, int] | None = None) -> Any:
    """The DM config of the estimated route's teacher set: the job's ``dm`` config without the
    remedy, or (a job of DANCE or DATM alone) DM under the job's preset, its DSA strategy adapted
    to the dataset, as ``resolve_job`` makes it."""
    from .job import KNOWN_IMAGE_SIZES, _fit
    from .methods import method_config
    from .train import dsa_strategy_for

    cfg = resolved.methods.get("dm")
    if cfg is None:
        cfg = method_config("dm", resolved.preset)
        cfg = replace(cfg, dsa_strategy=dsa_strategy_for(resolved.job.dataset, cfg.dsa_strategy))
        size = image_size or KNOWN_IMAGE_SIZES.get(resolved.job.dataset)
        if size is not None:
            cfg = _fit(cfg, size)
    # Without the remedy, its other settings are neutral too (a posterior init needs an estimated T).
    return replace(cfg, noise_correction="none", correction_init="given", correction_rounds=1)


def noise_model_for_job(resolved: Any, prepared: Any, mcfg: Any, *, device: torch.device | str = "cpu",
                        out: Path | None = None) -> NoiseModel | None:
    """The noise model a method config asks for in a job (None when ``noise_correction`` is off).

    The estimated route's DM teacher set is saved in ``out`` (when given) and reused while it was
    made under the same data and DM config.
    """
    from .job import fit_to_images
    from .methods import dm
    from .synthetic import load_synthetic
    from .utils import derive_seed

    source = getattr(mcfg, "noise_correction", "none")
    if source == "none":
        return None
    if source == "true":
        return true_noise_model(prepared.noisy)
    resolved = fit_to_images(resolved, prepared.dataset.image_size)
    dm_cfg = teacher_dm_config(resolved, prepared.dataset.image_size)
    job = resolved.job
    num_classes = prepared.dataset.num_classes

    def teacher_set(name: str, cfg: Any, noise_model: NoiseModel | None, key_parts: list) -> Any:
        """DM at TEACHER_IPC under ``cfg``, kept in ``out/name`` while made under the same key."""
        key = json.dumps([job.data_identity(), TEACHER_IPC, asdict(cfg), *key_parts], sort_keys=True, default=str)
        path = None if out is None else Path(out) / name
        if path is not None and path.exists():
            try:
                syn = load_synthetic(path)
            except DataError:
                syn = None
            if syn is not None and syn.meta.get("key") == key:
                return syn
        syn = dm.distill(prepared.noisy_train, TEACHER_IPC, cfg, seed=derive_seed(job.seed, "distill", "dm", TEACHER_IPC),
                         num_classes=num_classes, device=device, noise_model=noise_model)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            syn.meta["key"] = key
            syn.save(path)
        return syn

    syn = teacher_set(f"teacher-dm-ipc{TEACHER_IPC}.safetensors", dm_cfg, None, [])
    est = estimated_noise_model(syn, prepared.noisy_train, resolved.train, num_classes=num_classes,
                                seed=derive_seed(job.seed, "correction-teachers"), device=device)
    if getattr(mcfg, "correction_rounds", 1) == 2:
        cfg2 = replace(dm_cfg, noise_correction="estimated", correction_init=getattr(mcfg, "correction_init", "given"))
        first = hashlib.sha256(np.ascontiguousarray(est.transition, dtype=np.float64).tobytes()).hexdigest()[:16]
        syn2 = teacher_set(f"teacher-dm-ipc{TEACHER_IPC}-round2.safetensors", cfg2, est, ["round2", first])
        est = estimated_noise_model(syn2, prepared.noisy_train, resolved.train, num_classes=num_classes,
                                    seed=derive_seed(job.seed, "correction-teachers", 2), device=device)
    return est
