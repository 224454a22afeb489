"""The command-level jobs behind ``ddlnl issues``, ``ddlnl estimate``, ``ddlnl denoise`` and
``ddlnl experts``: each loads a job's data (:func:`ddlnl.pipeline.prepare_data`), obtains a
synthetic set, calls the library function that does the work (label scoring, noise estimation,
denoising, expert training) and writes its outputs; plus :func:`read_run`, the reader of a
``ddlnl run`` directory that ``ddlnl estimate --run`` advises from.

The library modules (:mod:`ddlnl.label_issues`, :mod:`ddlnl.estimate`, :mod:`ddlnl.denoise`,
:mod:`ddlnl.experts`) hold the methods and import nothing from the experiment layer; this module
sits above both (see ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .augment import fit_zca_space
from .data import LabeledTensors
from .denoise import DenoiseConfig, denoise
from .errors import ConfigError, DamagedFile, UserError
from .estimate import RunRecord, advice_text, advise_ipc, estimate_noise
from .experts import ExpertConfig, ExpertStatus, expert_status, get_experts
from .label_issues import (IssuesConfig, cleaned_accuracy, detection_metrics, save_cleaned_labels, score_labels,
                           train_on_cleaned)
from .methods import method_config
from .models import fit_depth
from .noise import load_noisy_labels, parse_noise_spec, summary_text
from .evaluation import distill_cached
from .job import JobConfig, fit_to_images, prepare_data
from .synthetic import SyntheticSet, load_synthetic, to_set_space
from .train import accuracy, dsa_strategy_for
from .utils import atomic_output, atomic_write_json, derive_seed, log, read_json_checked


def obtain_synthetic(prepared: Any, resolved: Any, *, synthetic: str | Path | None, ipc: int,
                     out: Path | None, device: torch.device, show_progress: bool,
                     echo: Callable[[str], None] = log) -> SyntheticSet:
    """The synthetic set to score with: ``synthetic`` if given (checked against the data), else a
    DM set at ``ipc`` distilled from the noisy training data with the job's ``dm`` config (saved
    in ``out`` and reused by a re-run with the same configuration)."""
    ds = prepared.dataset
    if synthetic is not None:
        syn = load_synthetic(synthetic)
        name = syn.meta.get("dataset")
        if name is not None and name != ds.name:
            raise UserError(f"{synthetic} was distilled from {name}, not {ds.name}: pass the matching --dataset")
        if tuple(syn.images.shape[1:]) != tuple(ds.train.images.shape[1:]) or syn.num_classes != ds.num_classes:
            raise UserError(f"{synthetic} holds {tuple(syn.images.shape[1:])} images of {syn.num_classes} "
                            f"classes, but {ds.name} has {tuple(ds.train.images.shape[1:])} and "
                            f"{ds.num_classes}: pass the right --dataset")
        return syn
    methods = fit_to_images(resolved, ds.image_size).methods
    if "dm" not in methods:
        raise UserError("no synthetic set given and the job has no dm config to distil one: pass --synthetic")
    mcfg = methods["dm"]
    job = resolved.job
    key = json.dumps([job.data_identity(), ipc, asdict(mcfg)], sort_keys=True, default=str)
    path = None if out is None else Path(out) / f"synthetic-dm-ipc{ipc}.safetensors"
    echo(f"synthetic set: DM at IPC {ipc} ({mcfg.iterations} iterations) from the noisy labels"
         + ("" if path is None else f", reused from {path} when it holds this configuration"))
    syn = distill_cached(prepared, "dm", ipc, mcfg, seed=derive_seed(job.seed, "distill", "dm", ipc), key=key,
                         path=path, device=device, show_progress=show_progress)
    echo(f"synthetic set: {path or 'in memory'} (distilled in {syn.meta['distill_seconds']:.0f}s)")
    return syn


def _data_and_set(resolved: Any, synthetic: str | Path | None, ipc: int, out: Path, device: torch.device,
                  show_progress: bool, echo: Callable[[str], None]) -> tuple[Any, Any, SyntheticSet]:
    """The start shared by ``ddlnl issues`` and ``ddlnl denoise``: the job's noisy data (its summary
    echoed), the recipe fitted to its images, and the synthetic set (given, or DM distilled here)."""
    prepared = prepare_data(resolved.job)
    resolved = fit_to_images(resolved, prepared.dataset.image_size)
    echo(summary_text(prepared.noisy, prepared.dataset.classes))
    syn = obtain_synthetic(prepared, resolved, synthetic=synthetic, ipc=ipc, out=out, device=device,
                           show_progress=show_progress, echo=echo)
    return resolved, prepared, syn


def run_issues(resolved: Any, cfg: IssuesConfig, out: Path, *, synthetic: str | Path | None = None,
               ipc: int = 10, mode: str = "relabel", train_downstream: bool = True, n_runs: int = 1,
               device: torch.device, show_progress: bool = True,
               echo: Callable[[str], None] = log) -> dict[str, Any]:
    """``ddlnl issues``: score every training label, write the table and the cleaned labels, and
    (optionally) train the baseline recipe on the cleaned set.

    Writes ``out/issues.csv``, ``out/pred_probs.npy`` (``N x K`` float64, rows = training samples
    in order, out-of-sample ``P(true | x)`` for cleanlab / Datalab), ``out/cleaned_labels.npz``
    (accepted by ``--noise file:PATH``),
    ``out/issues.json`` (estimates, thresholds, counts, downstream accuracy) and, when it distils,
    ``out/synthetic-dm-ipc<k>.safetensors``.
    """
    if mode not in ("relabel", "filter"):
        raise UserError(f"cleaning mode {mode!r}: use relabel or filter")
    out = Path(out)  # created by the first file written, so a refused input leaves no empty folder
    job = resolved.job
    resolved, prepared, syn = _data_and_set(resolved, synthetic, ipc, out, device, show_progress, echo)
    ds = prepared.dataset
    echo(f"scoring {len(ds.train)} labels with {cfg.n_models} teachers trained on {len(syn)} synthetic images"
         + (f" and {cfg.neighbours}-neighbour votes" if cfg.neighbours else ""))
    issues = score_labels(syn, prepared.noisy_train, cfg, resolved.train, seed=derive_seed(job.seed, "issues"),
                          device=device, show_progress=show_progress)
    issues.to_csv(out / "issues.csv")
    issues.save_pred_probs(out / "pred_probs.npy")
    save_cleaned_labels(issues, out / "cleaned_labels.npz", reference_labels=prepared.noisy.clean,
                        dataset=ds.name, seed=job.seed)
    summary = issues.summary()
    summary.update({"dataset": ds.name, "train_size": len(ds.train), "noise": prepared.noisy.spec.to_dict(),
                    "synthetic": str(synthetic) if synthetic else f"dm ipc {ipc} (distilled here)", "mode": mode})
    wrong = prepared.noisy.is_noisy.numpy()
    if wrong.any():  # labels were corrupted here, so the truth is known: say how well it did
        summary["against_known_noise"] = {**detection_metrics(issues, wrong),
                                          **cleaned_accuracy(issues, prepared.noisy.clean.numpy())}
    if train_downstream:
        echo(f"downstream: {resolved.baseline.epochs} epochs ({resolved.baseline_protocol.stopping}) on the "
             f"{'relabelled' if mode == 'relabel' else 'filtered'} training set x {n_runs} run(s)")
        res = train_on_cleaned(prepared.noisy_train, issues, ds.test, resolved.baseline, resolved.baseline_protocol,
                               mode=mode, num_classes=ds.num_classes, n_runs=n_runs,
                               seed=derive_seed(job.seed, "issues-downstream"), device=device,
                               show_progress=show_progress)
        summary["downstream"] = {"mode": mode, "stopping": resolved.baseline_protocol.stopping,
                                 "config": asdict(resolved.baseline), **res.to_dict()}
    atomic_write_json(out / "issues.json", summary)
    return summary


def default_out_dir(resolved: Any, kind: str, root: str | Path = "runs") -> Path:
    """``runs/<kind>-<dataset>-<noise>-seed<seed>[-n<subset>]`` for ``ddlnl issues`` / ``estimate``."""
    job = resolved.job
    subset = f"-n{job.train_subset}" if job.train_subset else ""
    return Path(root) / f"{kind}-{job.dataset}-{parse_noise_spec(job.noise).label()}-seed{job.seed}{subset}"


def read_run(run_dir: str | Path, echo: Callable[[str], None] = log) -> RunRecord:
    """Read the records of a (finished or partial) ``ddlnl run`` directory, or of a sweep root of
    one data setting (the same records, :func:`ddlnl.sweep.read_records`): the job, the noise,
    the converged baseline and the cells tried. A damaged record is reported through ``echo`` in
    one line and left out (the ``ddlnl run`` or ``ddlnl sweep`` that wrote it recomputes it).

    Raises:
        UserError: not a folder of records, a run directory of an earlier ddlnl, no records yet,
            or records of several data settings.
    """
    from .sweep import Cell, read_records

    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run} is not a folder: give the --out of `ddlnl run` or the --root of `ddlnl sweep`")
    records, damaged = read_records(run)
    settings = sorted({(r["cell"]["dataset"], r["cell"]["noise"], r["cell"]["seed"]) for r in records})
    if not settings:
        why = f" ({len(damaged)} damaged: {damaged[0]})" if damaged else ""
        raise UserError(f"{run} has no sound records{why}: run its `ddlnl run` (or `ddlnl sweep`) again, which "
                        "computes the missing and damaged ones")
    for exc in damaged:
        echo(f"{exc}; left out (the `ddlnl run` or `ddlnl sweep` that wrote it recomputes it)")
    if len(settings) > 1:
        shown = "; ".join(f"{d} {n} seed {s}" for d, n, s in settings[:4]) + ("; ..." if len(settings) > 4 else "")
        raise UserError(f"{run} holds records of {len(settings)} data settings ({shown}); --run reads one: give a "
                        "run directory, or the root of a sweep of one dataset, noise and seed")
    job = _job_of_records(run, Cell(**records[0]["cell"]))
    best: dict[int, float] = {}
    random: dict[int, float] = {}
    baselines = []
    synthetic = {}
    for r in sorted(records, key=lambda r: str(r.get("finished", ""))):
        cell = r["cell"]
        if cell["method"] == "baseline":
            baselines.append(float(r["mean"]))
        if not cell["ipc"]:
            continue
        into = random if cell["method"] == "random" else best
        into[int(cell["ipc"])] = max(into.get(int(cell["ipc"]), 0.0), float(r["mean"]))
        syn = (r.get("artifacts") or {}).get("synthetic")
        if r.get("base_method", cell["method"]) == "dm" and syn and (run / syn).is_file():
            synthetic[int(cell["ipc"])] = str(run / syn)
    noise = records[0]["noise"]
    noise_file = (records[0].get("artifacts") or {}).get("noise")
    return RunRecord(job=job, tried=tuple(sorted(best.items())), baseline_accuracy=baselines[-1] if baselines else None,
                     train_size=int(noise["train_size"]), num_classes=int(noise["num_classes"]),
                     synthetic=synthetic, run_dir=str(run), random_tried=tuple(sorted(random.items())),
                     noise_file=str(run / noise_file) if noise_file else "")


def _job_of_records(run: Path, cell: Any) -> JobConfig:
    """The job behind the records of ``run``: the latest configuration in a run directory's
    ``config.json``, else that of ``cell`` in a grid saved under a sweep root."""
    from .sweep import cell_job, expand, grids_of_root

    config = run / "config.json"
    if config.is_file():
        try:
            entry = read_json_checked(config, required=("runs",))["runs"][-1]
            job_dict = dict(entry["job"])
        except (DamagedFile, KeyError, IndexError, TypeError) as exc:
            reason = exc.reason if isinstance(exc, DamagedFile) else f"no job in it ({type(exc).__name__})"
            raise UserError(f"{config} is damaged ({reason}); run its `ddlnl run` again to rewrite it") from None
        for key in ("methods", "ipcs"):
            if key in job_dict:
                job_dict[key] = tuple(job_dict[key])
        return JobConfig(**{k: v for k, v in job_dict.items() if k in JobConfig.__dataclass_fields__})
    for grid in grids_of_root(run) or []:
        if cell in expand(grid):
            return cell_job(grid, cell).job
    raise UserError(f"{run} has records but neither a config.json (`ddlnl run`) nor the grid of its cells "
                    "(grids/*.yaml, written by `ddlnl sweep`): give the folder that `ddlnl run` or `ddlnl sweep` wrote")


def run_estimate(resolved: Any, n_models: int, *, record: RunRecord | None = None,
                 synthetic: str | Path | None = None, ipc: int = 10, out: str | Path | None = None,
                 device: Any = "cpu", show_progress: bool = True, echo: Any = None) -> dict[str, Any]:
    """``ddlnl estimate``: direct noise estimate from a synthetic set, plus the corollaries' advice.

    The synthetic set is ``synthetic`` if given, else the run's largest-IPC DM set (with
    ``record``), else a DM set at ``ipc`` distilled here (kept in ``out`` for re-use).

    Returns:
        JSON-able dict: ``estimate`` (:meth:`NoiseEstimate.to_dict`), ``advice``
        (:meth:`IPCAdvice.to_dict`), ``advice_text``, and ``known`` (realized rate and matrix)
        when the noise was injected here.
    """
    from .label_issues.teachers import teacher_outputs, train_teachers  # looked up at call time (tests spy on them)

    echo = echo or log
    job = resolved.job
    prepared = prepare_data(job)
    ds = prepared.dataset
    resolved = fit_to_images(resolved, ds.image_size)
    if record is not None and synthetic is None and record.synthetic:
        synthetic = record.synthetic[max(record.synthetic)]
    if record is not None and record.noise_file:
        saved = Path(record.noise_file)
        if saved.is_file() and not torch.equal(load_noisy_labels(saved).noisy, prepared.noisy.noisy):
            raise UserError(f"{saved} differs from the labels this job makes: was the data changed since the run?")
    out_path = Path(out) if out is not None else None
    syn = obtain_synthetic(prepared, resolved, synthetic=synthetic, ipc=ipc, out=out_path, device=device,
                           show_progress=show_progress, echo=echo)
    t0 = time.perf_counter()
    models = train_teachers(syn, resolved.train, n_models, seed=derive_seed(job.seed, "estimate"), device=device,
                            show_progress=show_progress)
    teachers = teacher_outputs(models, to_set_space(syn, ds.train.images), batch_size=resolved.train.eval_batch_size,
                               keep_features=False)
    labels = prepared.noisy.noisy.numpy()
    est = estimate_noise(teachers.probs, labels, ds.num_classes)
    seconds = time.perf_counter() - t0
    tried = record.tried if record is not None else ()
    base = record.baseline_accuracy if record is not None else None
    advice = advise_ipc(len(ds.train), ds.num_classes, direct_rate=est.noise_rate, results=tried,
                        baseline_accuracy=base, random_results=record.random_tried if record is not None else ())
    result: dict[str, Any] = {"dataset": ds.name, "train_size": len(ds.train), "noise": prepared.noisy.spec.to_dict(),
                              "synthetic_size": len(syn), "teachers": n_models, "seconds": seconds,
                              "estimate": est.to_dict(), "advice": advice.to_dict(), "advice_text": advice_text(advice),
                              "teacher_agreement_with_given": float((teachers.probs.argmax(1) == labels).mean())}
    if prepared.noisy.is_noisy.any():
        realized = prepared.noisy.realized_T
        result["known"] = {"realized_rate": prepared.noisy.realized_rate, "realized_T": realized.tolist(),
                           "max_abs_T_error": float(np.abs(est.transition - realized).max())}
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_path / "estimate.json", result)
    return result


def run_denoise(resolved: Any, cfg: DenoiseConfig, issues_cfg: IssuesConfig, out: Path, *,
                synthetic: str | Path | None = None, ipc: int = 10, device: torch.device,
                show_progress: bool = True, echo: Callable[[str], None] = log) -> dict[str, Any]:
    """``ddlnl denoise``: teachers from a synthetic set (given, or DM distilled here), a student on the
    full noisy set with the job's full-data recipe (``baseline.*``), its clean-test accuracy beside
    that of a model trained on the synthetic set alone (the privacy route).

    Writes ``out/denoise.json`` (accuracies, counts, estimate, timings, configuration),
    ``out/student.safetensors`` (the student's weights) and, when it distils,
    ``out/synthetic-dm-ipc<k>.safetensors``.
    """
    from safetensors.torch import save_file


    out = Path(out)
    job = resolved.job
    resolved, prepared, syn = _data_and_set(resolved, synthetic, ipc, out, device, show_progress, echo)
    ds = prepared.dataset
    echo(f"denoise: {issues_cfg.n_models} teachers on {len(syn)} synthetic images, then a student on "
         f"{len(ds.train)} noisy labels ({resolved.baseline.epochs} epochs, mix {cfg.mix}, threshold {cfg.threshold})")
    res = denoise(prepared.noisy_train, syn, cfg, resolved.baseline, resolved.train, issues_cfg,
                  seed=derive_seed(job.seed, "denoise"), device=device, show_progress=show_progress)
    syn_test = LabeledTensors(to_set_space(syn, ds.test.images, ds.train.images), ds.test.labels)
    summary = {"dataset": ds.name, "train_size": len(ds.train), "noise": prepared.noisy.spec.to_dict(),
               "synthetic": str(synthetic) if synthetic else f"dm ipc {ipc} (distilled here)",
               "accuracy": accuracy(res.model, ds.test),
               "synthetic_only_accuracies": [accuracy(m, syn_test) for m in res.teachers],
               **res.summary(), "denoise_config": asdict(cfg), "issues_config": asdict(issues_cfg),
               "student_config": asdict(resolved.baseline), "teacher_config": asdict(resolved.train)}
    wrong = prepared.noisy.is_noisy.numpy()
    if wrong.any():
        clean = prepared.noisy.clean.numpy()[res.train_index.numpy()]
        kept = res.targets.group.numpy() < 2
        summary["kept_labels_correct"] = float((res.targets.labels.numpy()[kept] == clean[kept]).mean())
        summary["realized_rate"] = prepared.noisy.realized_rate
    with atomic_output(out / "student.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in res.model.state_dict().items()}, str(tmp))
    atomic_write_json(out / "denoise.json", summary)
    return summary


def job_experts(resolved: Any, method: str = "datm") -> tuple[Any, ExpertConfig, dict[str, Any]]:
    """The data and expert settings a job's ``method`` trains on, resolved as ``ddlnl run`` does.

    Loads the job's data and noisy labels (:func:`ddlnl.pipeline.prepare_data`), takes the method's
    resolved config (or its preset when the job does not list the method) and fits its depth to
    the images.

    Returns:
        ``(prepared, expert_config, kwargs)`` where ``kwargs`` holds ``seed`` and ``num_classes``
        for :func:`get_experts` / :func:`expert_status` on ``prepared.noisy_train``.
    """
    prepared = prepare_data(resolved.job)
    ds = prepared.dataset
    mcfg = resolved.methods.get(method)
    if mcfg is None:  # the job does not list the method: its preset, adapted as resolve_job does
        mcfg = method_config(method, resolved.preset)
        if hasattr(mcfg, "dsa_strategy"):
            mcfg = replace(mcfg, dsa_strategy=dsa_strategy_for(resolved.job.dataset, mcfg.dsa_strategy))
    if hasattr(mcfg, "depth"):  # as `ddlnl run` does (pipeline.fit_to_images)
        mcfg = replace(mcfg, depth=fit_depth(mcfg.depth, ds.image_size))
    if not hasattr(mcfg, "expert_config"):
        raise ConfigError(f"method {method!r} uses no expert trajectories")
    if method == "datm" and getattr(mcfg, "noise_correction", "none") != "none":
        raise ConfigError(f"datm.noise_correction={mcfg.noise_correction}: its forward-corrected experts need T, "
                          "which the distillation makes; `ddlnl run` trains them (drop the option here)")
    if getattr(mcfg, "zca", False):  # the method trains its experts on the whitened images (datm.distill)
        space = fit_zca_space(prepared.noisy_train.images, mcfg.ZCA_CONVENTION, mcfg.zca_reg)
        prepared = replace(prepared, noisy_train=LabeledTensors(space.transform(prepared.noisy_train.images),
                                                                prepared.noisy_train.labels))
    return prepared, mcfg.expert_config(), {"seed": mcfg.expert_seed, "num_classes": ds.num_classes}


def experts_for_job(resolved: Any, *, method: str = "datm", device: torch.device | str = "cpu",
                    show_progress: bool = True, train_missing: bool = True,
                    cache_dir: str | Path | None = None) -> ExpertStatus:
    """``ddlnl experts``: report (and, with ``train_missing``, train) the experts a job's method needs
    (:func:`job_experts`, then :func:`get_experts` or only :func:`expert_status`).

    Args:
        resolved: a :class:`ddlnl.pipeline.ResolvedJob`.
        method: a method whose config has ``expert_config()`` and ``expert_seed`` (``"datm"``).

    Returns:
        The cache status after the call.
    """
    prepared, ecfg, kwargs = job_experts(resolved, method)
    if train_missing:  # get_experts has verified or written every file: no need to read them again
        get_experts(prepared.noisy_train, ecfg, device=device, progress=show_progress, cache_dir=cache_dir, **kwargs)
    return expert_status(prepared.noisy_train, ecfg, cache_dir=cache_dir, verify=not train_missing, **kwargs)
