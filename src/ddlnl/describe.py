"""``ddlnl config show``: one cell's fully resolved configuration, every value with its source
(ddlnl default, preset, the study's file, ``--set``, or an adaptation ddlnl made)."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Sequence

import torch

from .config import apply_overrides
from .data import DATASET_FACTS
from .errors import ConfigError
from .job import (JobConfig, ResolvedJob, TRAIN_PRESETS, preset_train_config, resolve_job, split_overrides,
                  study_cell)
from .methods import METHODS, get_method, method_config, paper_resolution
from .noise import parse_noise_spec
from .study import eval_facts
from .synthetic import SyntheticSet
from .train import TrainConfig


KNOWN_NUM_CLASSES: dict[str, int] = {k: f.num_classes for k, f in DATASET_FACTS.items()}


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
    own = METHODS[method].own_recipe
    if resolved.job.eval_recipe != "own" or own is None:
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
                                    "preset": preset, "eval_recipe": job.eval_recipe},
                           "method": asdict(mcfg)}
    if hasattr(mcfg, "expert_config"):
        ecfg = mcfg.expert_config()
        out["experts"] = asdict(ecfg)
        fields_of = EXPERT_FIELD_OF.get(method, {})
        sources["experts"] = {k: (f"method.{fields_of[k]}: {sources['method'][fields_of[k]]}" if k in fields_of
                                  else f"ddlnl default (ExpertConfig), via {cls.__name__}.expert_config()")
                              for k in out["experts"]}
    train_preset, network_sources = preset_train_config(preset, job.dataset, TRAIN_PRESETS)
    train_raw = apply_overrides(train_preset, groups.get("train"))
    sources["train"] = _layered_sources(TrainConfig, preset, list(TRAIN_PRESETS[preset]), network_sources,
                                        _set_keys(groups.get("train")), train_raw, resolved.train,
                                        f"ddlnl: adapted to {job.dataset} (DSA without flip on digits; depth fitted to the image size)")
    out["train"] = asdict(resolved.train)
    eval_sources = dict(sources["train"])
    evaluation = evaluation_config(resolved, method, ipc)
    own = METHODS[method].own_recipe
    for k, v in asdict(evaluation).items():
        if asdict(resolved.train)[k] != v:
            eval_sources[k] = f"ddlnl: {method} own protocol ({own.__module__}.{own.__name__})"
    out["evaluation"] = asdict(evaluation)
    notes = list(resolved.notes)
    study_eval: dict[str, str] = {}
    if preset == "paper":
        study_eval, study_eval_src = eval_facts(method, study_cell(job, ipc))
        if job.eval_recipe == "own":
            for k, text in study_eval.items():
                if k not in out["evaluation"]:
                    notes.append(f"evaluation: the study's {k}={text} has no ddlnl field ({study_eval_src[k]})")
                elif str(out["evaluation"][k]).lower() == text.lower() or _same_number(out["evaluation"][k], text):
                    eval_sources[k] = study_eval_src[k]
                else:
                    notes.append(f"evaluation.{k}: ddlnl {out['evaluation'][k]!r}, the study {text} ({study_eval_src[k]})")
        elif study_eval:
            notes.append("evaluation: protocol common (one recipe for every method); --set eval_recipe=own "
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
             f"eval_recipe {c['eval_recipe']}"]
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
