"""One cell of an experiment, run the same way by ``ddlnl run`` and ``ddlnl sweep``.

A cell is a full-noisy baseline, or one method at one IPC, on one data setting (dataset, noise,
seed, training subset) with one resolved configuration (:class:`ddlnl.job.ResolvedJob`). Its
seeds derive from the job's seed and the cell alone, so the same cell gives the same accuracies
in either command (and in ``ddlnl evaluate`` of its saved set):

* baseline ``name`` (``baseline`` or ``baseline_early_stop``): trained with
  ``derive_seed(seed, name)`` under the stopping rule of that name;
* ``method`` at ``ipc``: distilled with ``derive_seed(seed, "distill", method, ipc)``
  (:func:`distill_cell`, cached by key), then evaluated with :func:`ddlnl.evaluation.eval_seed`
  under the job's evaluation recipe (:func:`evaluate_cell`).

Both keep a cell's record in the same format under the same key (:mod:`ddlnl.sweep.records`);
they differ only in where the artifacts go: ``ddlnl run`` keeps its synthetic sets as
``synthetic/<method>-ipc<k>.safetensors`` beside its records, the sweep under ``artifacts/``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from .config import identity
from .evaluation import distill_cached, eval_seed, evaluate_synthetic
from .remedy import noise_model_for_job
from .job import Prepared, ResolvedJob
from .synthetic import SyntheticSet
from .train import BaselineConfig, EvalResult, run_baseline
from .utils import derive_seed, json_key

# A baseline's stopping rule (BaselineConfig.stopping) -> the cell (and record) name of that baseline.
BASELINE_CELLS = {"converged": "baseline", "early-stop": "baseline_early_stop"}


def baseline_config(resolved: ResolvedJob, name: str) -> BaselineConfig:
    """The job's baseline protocol (:class:`BaselineConfig`) for baseline cell ``name``: its stopping
    rule is the one the name says."""
    stopping = next(p for p, n in BASELINE_CELLS.items() if n == name)
    return replace(resolved.baseline_protocol, stopping=stopping)


def run_baseline_cell(resolved: ResolvedJob, prepared: Prepared, name: str, *, device: torch.device,
                      show_progress: bool = False) -> tuple[BaselineConfig, EvalResult]:
    """Train the full-noisy baseline ``name`` of the job: ``runs_per_baseline`` models on the noisy
    training labels, each measured on the clean test split."""
    bcfg = baseline_config(resolved, name)
    ds = prepared.dataset
    res = run_baseline(prepared.noisy_train, ds.test, resolved.baseline, bcfg, num_classes=ds.num_classes,
                       n_runs=resolved.job.runs_per_baseline, seed=derive_seed(resolved.job.seed, name),
                       device=device, show_progress=show_progress)
    return bcfg, res


def synthetic_key(resolved: ResolvedJob, method: str, ipc: int) -> str:
    """The key a cell's synthetic set is kept under (:func:`distill_cell`): the data, the method,
    the IPC and the method's config, so that another evaluation of the same set (more runs, another
    recipe) reuses it. An estimated noise correction adds what its teachers depend on: the
    evaluation config that trains them and the DM config of their set
    (:func:`ddlnl.remedy.noise_model_for_job`)."""
    mcfg = resolved.method_cfg(method, ipc)
    parts: list = [resolved.job.data_identity(), method, ipc, identity(mcfg)]
    if getattr(mcfg, "noise_correction", "none") not in ("none", "true"):
        dm = resolved.methods.get("dm")
        # A job without DM: its teachers' set is DM's preset config (teacher_dm_config), named here
        # as None, as before that config was made explicit (same preset, same set).
        parts.append([identity(resolved.train), identity(dm) if dm is not None else None])
    return json_key(parts)


def distill_cell(resolved: ResolvedJob, prepared: Prepared, method: str, ipc: int, *, key: str | None,
                 path: Path | None, device: torch.device, show_progress: bool = False,
                 echo: Callable[[str], None] | None = None) -> SyntheticSet:
    """The cell's synthetic set: the one at ``path`` if it was made under ``key``, else distilled now
    with the job's config of ``method`` at ``ipc`` and saved there (:func:`distill_cached`). A
    ``noise_correction`` config gets its ``T`` from :func:`ddlnl.remedy.noise_model_for_job` (only
    when the set is distilled; the estimated route's teacher set is kept beside ``path``)."""
    mcfg = resolved.method_cfg(method, ipc)
    out = None if path is None else Path(path).parent / "correction"
    return distill_cached(prepared, method, ipc, mcfg,
                          seed=derive_seed(resolved.job.seed, "distill", method, ipc), key=key, path=path,
                          device=device, show_progress=show_progress, echo=echo,
                          noise_model=lambda: noise_model_for_job(resolved, prepared, mcfg, device=device, out=out))


def evaluate_cell(resolved: ResolvedJob, prepared: Prepared, syn: SyntheticSet, method: str, ipc: int, *,
                  device: torch.device, show_progress: bool = False) -> EvalResult:
    """``n_runs`` fresh models trained on the cell's set under the job's evaluation config and
    recipe (``eval_recipe``: common or the method's own), each measured on the clean test split."""
    job = resolved.job
    return evaluate_synthetic(syn, prepared, resolved.train, n_runs=job.n_runs, seed=eval_seed(job.seed, method, ipc),
                              device=device, show_progress=show_progress, recipe=job.eval_recipe)
