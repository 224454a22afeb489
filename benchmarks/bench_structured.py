"""Structured noise and long tails on Fashion-MNIST: DM with and without the noise remedy, per-class
IPC budgets, against random subsets and both full-noisy baselines.

Writes ``results/structured.md`` and ``results/longtail.md`` from records kept under ``--root``
(one JSON per row, keyed by its settings, so a re-run resumes and only adds what is missing).

* structured: asymmetric 0.4, pair-flip 0.4, asymmetric 0.2 on a stratified ``--subset``-image
  training set; IPC 1/10/50; DM without the remedy, with it (T estimated by 3 teachers trained on
  the unremedied DM IPC-10 set of the same setting), and with the oracle T (realized T, labelled);
  random subsets; converged and early-stopped CE baselines.
* longtail: the clean training set made long-tailed (exponential profile, ``n_max`` = ``--lt-max``,
  ratio 10 and 100), then symmetric 0.4 noise; a total budget of ``--lt-total`` synthetic images
  split uniform / proportional / by estimated clean count (T and the per-class clean counts from
  teachers trained on the uniform DM set); DM and random at each budget; both baselines.

Nothing is tuned here: DM runs its CPU preset with the stated changes, the remedy has no tunable
(teachers: 3, the module default), and no row is chosen by test accuracy.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_structured.py --part all
    .venv/bin/python benchmarks/bench_structured.py --no-run     # tables only
    # only some rows, added to the committed tables (their measured rows are kept, not recomputed):
    ... bench_structured.py --part structured --noises pairflip:0.4 --ipcs 10 --append
    ... bench_structured.py --part longtail --ratios 100 --append
    # DM with T re-estimated once (needs --posterior-init); another seed; the mean over seeds:
    ... bench_structured.py --part structured --noises asymmetric:0.4 --ipcs 10,50 --posterior-init --iterate
    ... bench_structured.py --seed 1 --part structured ...     # structured_seed1.md, runs/bench-structured-seed1
    ... bench_structured.py --summarize-seeds 0,1,2             # structured_seeds.md (runs nothing)

``--append``: the rows already measured in the existing ``structured.md`` / ``longtail.md`` are read
back from the tables and kept as they are (with the run that measured them: a ``run`` column and
one line per run with its machine, dates and load); only rows that are missing ("not run") are
computed. Rows that the missing ones depend on are recomputed without being evaluated when their
artifacts are not in ``--root`` (e.g. the unremedied DM IPC-10 set whose teachers estimate T), and
the long-tail budgets are taken from the table. A kept row's Δ columns are the ones it was written
with; a new row's Δ are computed from the kept baselines' printed (2-decimal) values.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ddlnl.correction import sample_posterior, true_noise_model, unmixing_matrix
from ddlnl.errors import UserError
from ddlnl.estimate import estimate_noise
from ddlnl.label_issues import teacher_outputs, train_teachers
from ddlnl.longtail import group_accuracy, ipc_budget, longtail_indices
from ddlnl.methods import dm, random_subset
from ddlnl.noise import make_noise, parse_noise_spec
from ddlnl.pipeline import JobConfig, Prepared, evaluate_synthetic, prepare_data, resolve_job
from ddlnl.report import fmt_acc, kept_section, machine_summary, markdown_table, write_result
from ddlnl.train import run_baseline
from ddlnl.utils import atomic_write_json, derive_seed

HERE = Path(__file__).parent
RESULTS = HERE / "results"
# Seed 0 writes structured.md / longtail.md; --seed N writes structured_seedN.md / longtail_seedN.md.
SUFFIX = ""
STRUCTURED_NOISES = ("asymmetric:0.4", "pairflip:0.4", "asymmetric:0.2")
IPCS = (1, 10, 50)
RATIOS = (10, 100)
RULES = ("uniform", "proportional", "clean")
# Distillers besides DM whose remedy rows --distillers adds (their CPU presets, unchanged).
EXTRA_DISTILLERS = ("dance", "datm", "rcig")


def configs(args):
    sets = ["train.width=32", "baseline.width=32", f"baseline.epochs={args.baseline_epochs}",
            "baseline_protocol.record_every=5", "dm.width=32", f"dm.iterations={args.dm_iterations}", *args.set]
    res = resolve_job(JobConfig(dataset="fashion-mnist", preset="cpu", methods=("dm", *EXTRA_DISTILLERS)), sets,
                      torch.device("cpu"), image_size=(28, 28))
    return res, sets


class Store:
    """One JSON record per row under ``root``, keyed by its settings; with ``legacy``, rows read back
    from the committed tables (:func:`read_legacy`) answer where ``root`` has no record."""

    def __init__(self, root: Path, base: dict, legacy: dict | None = None):
        self.root = root
        self.base = base
        self.legacy = legacy or {}
        root.mkdir(parents=True, exist_ok=True)
        started = root / "run.json"
        if not started.exists():
            atomic_write_json(started, {"started": _stamp()})
        self.started = json.loads(started.read_text())["started"]

    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def own(self, name: str):
        """The record computed under ``root`` (this run), or None."""
        p = self.path(name)
        if p.exists():
            rec = json.loads(p.read_text())
            if rec.get("base") == self.base:
                return rec
        return None

    def get(self, name: str):
        return self.own(name) or self.legacy.get(name)

    def put(self, name: str, rec: dict) -> dict:
        rec = {**rec, "base": self.base, "finished": time.time(), "stamp": _stamp(), "load": list(os.getloadavg())}
        atomic_write_json(self.path(name), rec)
        print(f"{name}: {rec.get('mean', rec.get('refused'))}", flush=True)
        return rec


def _stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _eval(syn, prepared, res, args, seed, train_counts):
    r = evaluate_synthetic(syn, prepared, res.train, n_runs=args.n_runs, seed=seed)
    return _summary(r, train_counts)


def _summary(r, train_counts):
    per = np.nanmean(np.asarray(r.per_class), axis=0).tolist()
    groups = [group_accuracy(pc, train_counts) for pc in r.per_class]
    return {"accs": r.accs, "mean": r.mean, "std": r.std, "per_class": per, "eval_seconds": r.seconds,
            "groups": {g: float(np.mean([x[g] for x in groups])) for g in ("head", "middle", "tail")}}


def baselines(store, tag, prepared, res, args, train_counts):
    out = {}
    for proto in ("converged", "early-stop"):
        name = f"{tag}-baseline-{proto}"
        rec = store.get(name)
        if rec is None:
            t0 = time.perf_counter()
            r = run_baseline(prepared.noisy_train, prepared.dataset.test, res.baseline,
                             replace(res.baseline_protocol, stopping=proto), num_classes=10, n_runs=1,
                             seed=derive_seed(args.seed, tag, proto))
            rec = store.put(name, {**_summary(r, train_counts), "seconds": time.perf_counter() - t0})
        out[proto] = rec
    return out


def distil_row(store, name, prepared, res, args, ipc, seed, train_counts, method="dm", noise_model=None, keep=None,
               correction_init="given"):
    """The row ``name`` (computed unless ``store`` has it). With ``keep`` (a dict), the synthetic set is
    made (and put in ``keep["syn"]``) even when the row exists, and then not evaluated again."""
    rec = store.get(name)
    if rec is not None and keep is None:
        return rec
    t0 = time.perf_counter()
    mcfg = res.methods["dm"]
    if method == "random":
        syn = random_subset.distill(prepared.noisy_train, ipc, seed=seed, num_classes=10)
    else:
        if noise_model is not None:
            mcfg = replace(mcfg, noise_correction=noise_model.source, correction_init=correction_init)
            try:
                unmixing_matrix(noise_model)
            except UserError as exc:
                return store.put(name, {"refused": str(exc), "noise_model": noise_model.to_dict()})
        syn = dm.distill(prepared.noisy_train, ipc, mcfg, seed=seed, num_classes=10, noise_model=noise_model)
    distill_s = time.perf_counter() - t0
    if keep is not None:
        keep["syn"] = syn
        print(f"{name}: set made in {distill_s:.0f}s" + (" (row kept, not evaluated again)" if rec else ""), flush=True)
    if rec is not None:
        return rec
    syn.meta.update(dataset="fashion-mnist")
    ev = _eval(syn, prepared, res, args, derive_seed(seed, "eval"), train_counts)
    extra = {"noise_model": noise_model.to_dict()} if noise_model is not None else {}
    return store.put(name, {**ev, "distill_seconds": distill_s, "ipc": ipc, **extra})


def other_distiller_row(store, name, method, prepared, res, args, ipc, seed, train_counts, noise_model=None):
    """A DANCE, DATM or RCIG row (its CPU preset; ``noise_model`` turns its remedy on), evaluated as the DM rows."""
    from ddlnl.methods import get_method

    rec = store.get(name)
    if rec is not None:
        return rec
    mcfg = res.methods[method]
    if noise_model is not None:
        mcfg = replace(mcfg, noise_correction=noise_model.source)
        try:
            unmixing_matrix(noise_model)
        except UserError as exc:
            if method == "dance":  # DANCE unmixes; DATM's and RCIG's forward correction needs no inverse
                return store.put(name, {"refused": str(exc), "noise_model": noise_model.to_dict()})
    t0 = time.perf_counter()
    extra = {"noise_model": noise_model} if noise_model is not None else {}
    syn = get_method(method).distill(prepared.noisy_train, ipc, mcfg, seed=seed, num_classes=10, **extra)
    distill_s = time.perf_counter() - t0
    syn.meta.update(dataset="fashion-mnist")
    ev = _eval(syn, prepared, res, args, derive_seed(seed, "eval"), train_counts)
    return store.put(name, {**ev, "distill_seconds": distill_s, "ipc": ipc, "method_config": asdict(mcfg),
                            **({"noise_model": noise_model.to_dict()} if noise_model is not None else {})})


def teacher_set_model(store, name, syn, prepared, res, seed):
    """T and prior estimated from 3 teachers on ``syn``; cached with its clean-count estimate."""
    from ddlnl.correction import NoiseModel

    rec = store.own(name)
    if rec is None:
        t0 = time.perf_counter()
        models = train_teachers(syn, res.train, 3, seed=seed)
        probs = teacher_outputs(models, prepared.noisy_train.images, keep_features=False).probs
        labels = prepared.noisy_train.labels.numpy()
        est = estimate_noise(probs, labels, 10)
        counts = np.bincount(labels, minlength=10)
        post = sample_posterior(probs, labels, est.transition)
        rec = store.put(name, {"transition": est.transition.tolist(), "class_prior": est.class_prior.tolist(),
                               "sample_posterior": post.tolist(),
                               "noise_rate": est.noise_rate, "clean_counts": (counts - est.expected_wrong_per_class(labels)).tolist(),
                               "realized_rate": prepared.noisy.realized_rate,
                               "max_abs_T_error": float(np.abs(est.transition - prepared.noisy.realized_T).max()),
                               "seconds": time.perf_counter() - t0})
    post = rec.get("sample_posterior")
    return NoiseModel(np.asarray(rec["transition"]), np.asarray(rec["class_prior"]), "estimated",
                      sample_posterior=None if post is None else np.asarray(post)), rec


def run_structured(store, res, args, noise, ipcs=(10, 50, 1)):
    tag = f"s-{noise}"
    todo = [f"{tag}-baseline-{p}" for p in ("converged", "early-stop")]
    todo += [f"{tag}-{m}-ipc{ipc}" for ipc in ipcs for m in ("random", "dm-none", "dm-estimated", "dm-true")]
    todo += [f"{tag}-{d}-{s}-ipc{ipc}" for ipc in ipcs for d in args.distillers if d != "dm"
             for s in ("none", "estimated", "true")]
    todo += [f"{tag}-dm-estimated-post-ipc{ipc}" for ipc in ipcs if args.posterior_init]
    todo += [f"{tag}-dm-estimated2-post-ipc{ipc}" for ipc in ipcs if args.iterate]
    todo += [f"{tag}-{d}-estimated2-ipc{ipc}" for ipc in ipcs for d in args.distillers if d != "dm" and args.iterate]
    if all(store.get(n) is not None for n in todo):
        return
    prepared = prepare_data(JobConfig(dataset="fashion-mnist", noise=noise, train_subset=args.subset, seed=args.seed))
    counts = torch.bincount(prepared.noisy.clean, minlength=10).tolist()
    baselines(store, tag, prepared, res, args, counts)
    seed = derive_seed(args.seed, "bench-structured", noise)
    est = None
    others = [d for d in args.distillers if d != "dm"]
    want_post = args.posterior_init and any(store.get(f"{tag}-dm-estimated-post-ipc{ipc}") is None for ipc in ipcs)
    want_iter = args.iterate and any(store.get(f"{tag}-{m}-ipc{ipc}") is None for ipc in ipcs
                                     for m in ("dm-estimated2-post", *(f"{d}-estimated2" for d in others)))
    want_post = want_post or want_iter
    if want_post or any(store.get(f"{tag}-{d}-estimated-ipc{ipc}") is None for ipc in ipcs for d in ("dm", *others)):
        own = store.own(f"{tag}-estimate")
        if own is not None and want_post and "sample_posterior" not in own:
            # Made before the per-sample posteriors were kept: the same set and teachers again.
            store.path(f"{tag}-estimate").rename(store.path(f"{tag}-estimate-without-posterior"))
        if store.own(f"{tag}-estimate") is None:  # T from teachers on the unremedied DM IPC-10 set
            keep = {}
            distil_row(store, f"{tag}-dm-none-ipc10", prepared, res, args, 10, seed, counts, keep=keep)
            est, _ = teacher_set_model(store, f"{tag}-estimate", keep["syn"], prepared, res, derive_seed(seed, "teachers"))
        else:
            est, _ = teacher_set_model(store, f"{tag}-estimate", None, prepared, res, None)
    est2 = None
    if want_iter:
        # T re-estimated once: 3 new teachers trained on the remedied DM IPC-10 set (first T, posterior
        # init), whose outputs give T and the posteriors again; DM then runs with those.
        try:
            unmixing_matrix(est)
        except UserError as exc:  # no remedied set to re-estimate from: the re-estimated rows are refused too
            for ipc in ipcs:
                if store.get(f"{tag}-dm-estimated2-post-ipc{ipc}") is None:
                    store.put(f"{tag}-dm-estimated2-post-ipc{ipc}", {"refused": f"the first T: {exc}"})
            want_iter = False
    if want_iter:
        if store.own(f"{tag}-estimate2") is None:
            keep = {}
            distil_row(store, f"{tag}-dm-estimated-post-ipc10", prepared, res, args, 10, seed, counts, noise_model=est,
                       correction_init="posterior", keep=keep)
            est2, _ = teacher_set_model(store, f"{tag}-estimate2", keep["syn"], prepared, res,
                                        derive_seed(seed, "teachers", 2))
        else:
            est2, _ = teacher_set_model(store, f"{tag}-estimate2", None, prepared, res, None)
    oracle = true_noise_model(prepared.noisy)
    for ipc in ipcs:
        distil_row(store, f"{tag}-random-ipc{ipc}", prepared, res, args, ipc, seed, counts, method="random")
        distil_row(store, f"{tag}-dm-none-ipc{ipc}", prepared, res, args, ipc, seed, counts)
        if est is not None:
            distil_row(store, f"{tag}-dm-estimated-ipc{ipc}", prepared, res, args, ipc, seed, counts, noise_model=est)
        distil_row(store, f"{tag}-dm-true-ipc{ipc}", prepared, res, args, ipc, seed, counts, noise_model=oracle)
        if args.posterior_init and est is not None:
            distil_row(store, f"{tag}-dm-estimated-post-ipc{ipc}", prepared, res, args, ipc, seed, counts,
                       noise_model=est, correction_init="posterior")
        if est2 is not None:
            distil_row(store, f"{tag}-dm-estimated2-post-ipc{ipc}", prepared, res, args, ipc, seed, counts,
                       noise_model=est2, correction_init="posterior")
        for d in others:
            for source, model in (("none", None), ("estimated", est), ("estimated2", est2), ("true", oracle)):
                if source in ("estimated", "estimated2") and model is None:
                    continue
                other_distiller_row(store, f"{tag}-{d}-{source}-ipc{ipc}", d, prepared, res, args, ipc,
                                    derive_seed(seed, d), counts, noise_model=model)


def longtail_prepared(ratio, args):
    from ddlnl.data import load_dataset

    ds = load_dataset("fashion-mnist")
    keep = longtail_indices(ds.train.labels, ratio, seed=derive_seed(args.seed, "longtail", ratio), n_max=args.lt_max)
    ds = replace(ds, train=ds.train.subset(keep))
    noisy = make_noise(parse_noise_spec("symmetric:0.4"), ds, derive_seed(args.seed, "noise", ratio))
    return Prepared(dataset=ds, noisy=noisy, noisy_train=ds.train.with_labels(noisy.noisy))


def run_longtail(store, res, args, ratio):
    tag = f"lt-{ratio:g}"
    todo = [f"{tag}-baseline-{p}" for p in ("converged", "early-stop")]
    todo += [f"{tag}-{m}-{rule}" for rule in RULES for m in ("random", "dm")]
    if all(store.get(n) is not None for n in todo):
        return
    prepared = longtail_prepared(ratio, args)
    counts = torch.bincount(prepared.noisy.clean, minlength=10).tolist()
    given = torch.bincount(prepared.noisy.noisy, minlength=10).tolist()
    baselines(store, tag, prepared, res, args, counts)
    seed = derive_seed(args.seed, "bench-longtail", ratio)
    total = args.lt_total
    kept = store.get(f"{tag}-budgets")
    if kept is not None and kept.get("given_counts") not in (None, given):
        raise SystemExit(f"{tag}: the table's given counts {kept['given_counts']} differ from this construction's "
                         f"{given}: not the same data; run without --append")
    budgets = dict(kept["budgets"]) if kept else {}
    budgets.setdefault("uniform", ipc_budget("uniform", total, given))
    budgets.setdefault("proportional", ipc_budget("proportional", total, given))
    if "clean" not in budgets:  # split by the clean counts estimated from teachers on the uniform DM set
        keep = {}
        distil_row(store, f"{tag}-dm-uniform", prepared, res, args, budgets["uniform"], seed, counts, keep=keep)
        _, est = teacher_set_model(store, f"{tag}-estimate", keep["syn"], prepared, res, derive_seed(seed, "teachers"))
        budgets["clean"] = ipc_budget("clean", total, given, clean_counts=est["clean_counts"])
    if store.own(f"{tag}-budgets") is None:
        store.put(f"{tag}-budgets", {"budgets": budgets, "clean_counts_true": counts, "given_counts": given})
    for rule in RULES:
        distil_row(store, f"{tag}-random-{rule}", prepared, res, args, budgets[rule], seed, counts, method="random")
        distil_row(store, f"{tag}-dm-{rule}", prepared, res, args, budgets[rule], seed, counts)


# ------------------------------------------------------------------------------------ tables

STRUCT_LABELS = {"random": "random subset", "dm-none": "DM (no remedy)", "dm-estimated": "DM + remedy (estimated T)",
                 "dm-true": "DM + remedy (ORACLE: true T)"}
POST_LABEL = "DM + remedy (estimated T, posterior init)"
ITER_LABEL = "DM + remedy (T re-estimated once, posterior init)"
# The rows listed only where measured: (name key, label, verdict name).
EXTRA_DM_ROWS = (("dm-estimated-post", POST_LABEL, "dm-estimated + posterior init"),
                 ("dm-estimated2-post", ITER_LABEL, "dm-estimated, T re-estimated once + posterior init"))
ESTIMATE_LINES = (("estimate", "(T estimate: "), ("estimate2", "(T re-estimated once: "))
BASELINE_LABELS = {"converged": "baseline: converged CE", "early-stop": "baseline: early-stopped CE"}


def _acc(rec):
    if rec is None:
        return "not run"
    if "refused" in rec:
        return "refused"
    return fmt_acc(rec["mean"], rec["std"])


def _pts(rec):
    return 100 * rec["mean"] if rec and "mean" in rec else None


def _d(a, b):
    return "-" if a is None or b is None else f"{a - b:+.2f}"


# --------------------------------------------------------------- rows kept from a committed table


def table_path(results: Path, kind: str) -> Path:
    """``results/<kind>.md`` for seed 0, ``results/<kind>_seed<N>.md`` for ``--seed N``."""
    return results / f"{kind}{SUFFIX}.md"


def _table(path: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """The header, rows and other lines of the markdown result ``path`` (empty when absent)."""
    if not path.exists():
        return [], [], []
    header, rows, other = [], [], []
    for line in path.read_text().splitlines():
        if line.startswith("| ") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split(" | ")]
            if not header:
                header = cells
            else:
                rows.append(cells)
        elif not line.startswith("|---"):
            other.append(line)
    return header, rows, other


def _legacy_acc(text: str) -> dict | None:
    if text in ("not run", "-", ""):
        return None
    if text == "refused":
        return {"refused": "(as in the earlier run)"}
    m = re.fullmatch(r"(-?[0-9.]+) ± ([0-9.]+)", text)
    if not m:
        raise SystemExit(f"--append: cannot read the accuracy {text!r} of the committed table")
    return {"mean": float(m.group(1)) / 100, "std": float(m.group(2)) / 100}


def _runs_of(other: list[str]) -> dict[str, str]:
    """Run letter -> its description: the ``- run X: ...`` lines, else run A from the Machine/Run header."""
    runs = {}
    for line in other:
        m = re.match(r"- run ([A-Z]): (.*)", line)
        if m:
            runs[m.group(1)] = m.group(2)
    if not runs:
        machine = next((line[len("Machine: "):].rstrip() for line in other if line.startswith("Machine: ")), None)
        when = next((line[len("Run: "):].strip() for line in other if line.startswith("Run: ")), None)
        if machine and when:
            runs["A"] = f"{when}; {machine}"
    return runs


def read_legacy(results: Path) -> tuple[dict[str, dict], dict[str, dict[str, str]]]:
    """The rows measured in the committed ``structured.md`` and ``longtail.md`` as records (``legacy``:
    the row's printed cells, ``run``: its run letter), and each file's runs (letter -> description)."""
    legacy: dict[str, dict] = {}
    runs = {}
    header, rows, other = _table(table_path(results, "structured"))
    runs["structured"] = _runs_of(other)
    for cells in rows:
        row = dict(zip(header, cells))
        noise, label, ipc = row["noise"], row["row"], row["IPC"]
        line = next((k for k, prefix in ESTIMATE_LINES if label.startswith(prefix)), None)
        if line:
            run = row.get("run", "A")  # one T-estimate line per run that made one
            legacy.setdefault(f"s-{noise}-{line}-notes", {})[run] = {"legacy": cells, "run": run, "text": label}
            continue
        labels = {**{v: k for k, v in STRUCT_LABELS.items()},
                  **{lab: key for key, lab, _ in EXTRA_DM_ROWS},
                  **{f"{d.upper()} (no remedy)": f"{d}-none" for d in EXTRA_DISTILLERS},
                  **{f"{d.upper()} + remedy (estimated T)": f"{d}-estimated" for d in EXTRA_DISTILLERS},
                  **{f"{d.upper()} + remedy (ORACLE: true T)": f"{d}-true" for d in EXTRA_DISTILLERS},
                  **{f"{d.upper()} + remedy (T re-estimated once)": f"{d}-estimated2" for d in EXTRA_DISTILLERS}}
        key = labels.get(label)
        base = {v: k for k, v in BASELINE_LABELS.items()}.get(label)
        name = f"s-{noise}-baseline-{base}" if base else f"s-{noise}-{key}-ipc{ipc}"
        rec = _legacy_acc(row["accuracy (%)"])
        if rec is not None:
            legacy[name] = {**rec, "legacy": cells, "run": row.get("run", "A")}
    header, rows, other = _table(table_path(results, "longtail"))
    runs["longtail"] = _runs_of(other)
    budgets: dict[str, dict] = {}
    for cells in rows:
        row = dict(zip(header, cells))
        ratio, label = row["imbalance"], row["row"]
        m = re.match(r"\(given counts (\[.*?\]); clean counts (\[.*?\])\)", label)
        if m:
            budgets.setdefault(ratio, {}).update(given_counts=json.loads(m.group(1)), clean_counts_true=json.loads(m.group(2)))
            continue
        base = {v: k for k, v in BASELINE_LABELS.items()}.get(label)
        if base:
            name = f"lt-{ratio}-baseline-{base}"
        else:
            method, rule = (x.strip() for x in label.split("/"))
            name = f"lt-{ratio}-{'dm' if method == 'DM' else 'random'}-{rule}"
            per = row["images per class (class 0 = head)"]
            if per not in ("-", ""):
                budgets.setdefault(ratio, {}).setdefault("budgets", {})[rule] = [int(v) for v in per.split(",")]
        rec = _legacy_acc(row["accuracy (%)"])
        if rec is not None:
            groups = {g: float(row[f"{g} (%)"]) / 100 for g in ("head", "middle", "tail") if row[f"{g} (%)"] != "-"}
            legacy[name] = {**rec, "groups": groups, "legacy": cells, "run": row.get("run", "A")}
    for ratio, b in budgets.items():
        if "given_counts" in b and b.get("budgets"):
            legacy[f"lt-{ratio}-budgets"] = {**b, "run": "A"}
    return legacy, runs


def check_same_settings(results: Path, sets: list[str]) -> None:
    """``--append`` adds rows only to tables made under the same overrides (their notes print them)."""
    for kind in ("structured", "longtail"):
        path = table_path(results, kind)
        if not path.exists():
            continue
        m = re.search(r"Overrides: (\[.*?\])", path.read_text())
        if m and m.group(1) != str(sets):
            raise SystemExit(f"--append: {path} was made with the overrides {m.group(1)}, this run has {sets}; "
                             "give the same settings (or another --results)")


def _run_letter(store, runs: dict[str, str]) -> str:
    for letter, text in runs.items():
        if text.startswith(f"started {store.started}"):
            return letter
    return chr(ord(max(runs)) + 1) if runs else "A"


def _runs_lines(store, runs: dict[str, str], names: list[str], kind: str) -> tuple[str, list[str]]:
    """This invocation's run letter and the ``- run X: ...`` lines (earlier runs kept, this run's
    rewritten from its records: dates, machine, and the 1-minute load when each row finished)."""
    letter = _run_letter(store, runs)
    own = [store.own(n) for n in names]
    own = [r for r in own if r is not None]
    runs = dict(runs)
    if own:
        loads = [r["load"][0] for r in own if "load" in r]
        machine = machine_summary().split(", load average")[0]
        runs[letter] = (f"started {store.started}, last row {max(r.get('stamp', '') for r in own)}; {machine}; "
                        f"{len(own)} {kind} row(s), 1-minute load average when they finished "
                        f"{min(loads):.1f}-{max(loads):.1f} (2 cores shared by several engineers' jobs)")
    return letter, [f"- run {k}: {v}" for k, v in sorted(runs.items())]


# --------------------------------------------------------------------------------------- writers


def write_structured(store, args, sets, runs, res):
    rows = []
    verdict = []
    noises = list(dict.fromkeys([*STRUCTURED_NOISES, *args.noises]))
    names = []
    letter = _run_letter(store, runs)

    def run_of(name, rec):
        return "-" if rec is None else (letter if store.own(name) is not None else rec.get("run", "A"))

    for noise in noises:
        tag = f"s-{noise}"
        conv, es = store.get(f"{tag}-baseline-converged"), store.get(f"{tag}-baseline-early-stop")
        for proto, rec in (("converged", conv), ("early-stop", es)):
            name = f"{tag}-baseline-{proto}"
            names.append(name)
            rows.append([noise, BASELINE_LABELS[proto], "full", _acc(rec), "-", "-", "-", run_of(name, rec)])
        for ipc in IPCS:
            none = store.get(f"{tag}-dm-none-ipc{ipc}")
            for method, label in STRUCT_LABELS.items():
                name = f"{tag}-{method}-ipc{ipc}"
                names.append(name)
                rec = store.get(name)
                if rec is not None and store.own(name) is None and "legacy" in rec:
                    rows.append([*rec["legacy"][:7], rec.get("run", "A")])  # kept as it was written
                    continue
                rows.append([noise, label, str(ipc), _acc(rec), _d(_pts(rec), _pts(conv)), _d(_pts(rec), _pts(es)),
                             _d(_pts(rec), _pts(none)) if method.startswith("dm-") and method != "dm-none" else "-",
                             run_of(name, rec)])
            for key, label, vname in EXTRA_DM_ROWS:
                post_name = f"{tag}-{key}-ipc{ipc}"
                post = store.get(post_name)
                if post is None:  # listed only where measured
                    continue
                names.append(post_name)
                if store.own(post_name) is None and "legacy" in post:
                    rows.append([*post["legacy"][:7], post.get("run", "A")])
                else:
                    rows.append([noise, label, str(ipc), _acc(post), _d(_pts(post), _pts(conv)),
                                 _d(_pts(post), _pts(es)), _d(_pts(post), _pts(none)), run_of(post_name, post)])
                if noise == "asymmetric:0.4" and ipc in (10, 50) and "mean" in post and conv and es and none:
                    ok = _pts(post) > max(_pts(conv), _pts(es)) and _pts(post) - _pts(none) >= 5
                    verdict.append(f"IPC {ipc}, {vname}: {_pts(post):.2f} vs converged "
                                   f"{_pts(conv):.2f}, early stop {_pts(es):.2f}, unremedied {_pts(none):.2f} -> goal "
                                   f"{'MET' if ok else 'NOT met'}")
            for d in EXTRA_DISTILLERS:
                sources = ("none", "estimated", "estimated2", "true")
                names_d = [f"{tag}-{d}-{src}-ipc{ipc}" for src in sources]
                if not any(store.get(n) for n in names_d):
                    continue  # listed only where measured
                d_none = store.get(names_d[0])
                for src, name in zip(sources, names_d):
                    rec = store.get(name)
                    if src == "estimated2" and rec is None:
                        continue  # listed only where measured
                    names.append(name)
                    label = {"none": f"{d.upper()} (no remedy)", "estimated": f"{d.upper()} + remedy (estimated T)",
                             "estimated2": f"{d.upper()} + remedy (T re-estimated once)",
                             "true": f"{d.upper()} + remedy (ORACLE: true T)"}[src]
                    rows.append([noise, label, str(ipc), _acc(rec), _d(_pts(rec), _pts(conv)), _d(_pts(rec), _pts(es)),
                                 _d(_pts(rec), _pts(d_none)) if src != "none" else "-", run_of(name, rec)])
                    if noise == "asymmetric:0.4" and ipc in (10, 50) and src != "none" and rec and "mean" in rec \
                            and conv and es and d_none and "mean" in d_none:
                        ok = _pts(rec) > max(_pts(conv), _pts(es)) and _pts(rec) - _pts(d_none) >= 5
                        verdict.append(f"IPC {ipc}, {d}-{src}: {_pts(rec):.2f} vs converged {_pts(conv):.2f}, early "
                                       f"stop {_pts(es):.2f}, unremedied {_pts(d_none):.2f} -> goal "
                                       f"{'MET' if ok else 'NOT met'}")
            if noise == "asymmetric:0.4" and ipc in (10, 50):
                for method in ("dm-estimated", "dm-true"):
                    rec = store.get(f"{tag}-{method}-ipc{ipc}")
                    if rec and "mean" in rec and conv and es and none:
                        ok = _pts(rec) > max(_pts(conv), _pts(es)) and _pts(rec) - _pts(none) >= 5
                        verdict.append(f"IPC {ipc}, {method}: {_pts(rec):.2f} vs converged {_pts(conv):.2f}, early stop "
                                       f"{_pts(es):.2f}, unremedied {_pts(none):.2f} -> goal {'MET' if ok else 'NOT met'}")
        for line, prefix in ESTIMATE_LINES:
            for run, note in sorted(store.legacy.get(f"{tag}-{line}-notes", {}).items()):
                if run != letter or store.own(f"{tag}-{line}") is None:  # this run's own line comes from its record
                    rows.append([noise, note["text"], "", "", "", "", "", run])
            est = store.own(f"{tag}-{line}")
            if est:
                names.append(f"{tag}-{line}")
                rows.append([noise, f"{prefix}rate {est['noise_rate']:.3f} vs realized {est['realized_rate']:.3f}, "
                                    f"max abs T error {est['max_abs_T_error']:.3f})", "", "", "", "", "", letter])
    letter, run_lines = _runs_lines(store, runs, names, "structured")
    table = markdown_table(["noise", "row", "IPC", "accuracy (%)", "Δ converged", "Δ early stop", "Δ unremedied", "run"],
                           rows)
    notes = ("Goal (asymmetric 0.4, IPC 10-50): the remedied distiller above both baselines and >= 5 points above the "
             "unremedied one.\n\n" + ("\n".join(f"- {v}" for v in verdict) or "- not measured (rows missing)") +
             "\n\nRuns (the `run` column; every row's settings are the same, below):\n\n" + "\n".join(run_lines) +
             f"\n\nScale, and why: Fashion-MNIST, stratified {args.subset}-image training subset (200 per class), the full "
             f"10k clean test set; 2 CPU cores shared with other jobs, so DM runs {args.dm_iterations} iterations (its "
             f"CPU preset has 300; the same for every DM row) and each set is evaluated by {args.n_runs} run(s) "
             f"({args.train_epochs} epochs, the common recipe); baselines: {args.baseline_epochs} epochs, 1 run, early stop on a 10% noisy "
             f"validation split. Overrides: {sets}. One seed ({args.seed}: noise, subset, sets and evaluation{'' if args.seed else '; other seeds: structured_seedN.md'}). Rows marked 'not run' were not reached before a "
             f"session's deadline. Oracle rows use the realized T of the injected noise "
             f"(they need the clean labels): they bound what the remedy can do with a perfect T, and are not a usable method. "
             f"Estimated rows: T from ddlnl.estimate.estimate_noise on 3 teachers trained on the unremedied DM IPC-10 set of "
             f"the same setting (a later run that adds estimated rows re-makes that set, and prints its own T estimate line); "
             f"'refused' = the estimated P(true | given) was too close to singular to invert "
             f"(ddlnl.correction.MAX_UNMIXING_NORM). DANCE / DATM / RCIG rows (where measured): their CPU presets unchanged "
             f"(DANCE: {res.methods['dance'].iterations} iterations, {res.methods['dance'].num_pretrained} models pre-trained "
             f"{res.methods['dance'].pretrain_epochs} epochs, width {res.methods['dance'].width}, factor "
             f"{res.methods['dance'].factor}: IPC counts stored images, each decoded into {res.methods['dance'].factor ** 2}; "
             f"DATM: {res.methods['datm'].iterations} iterations, {res.methods['datm'].num_experts} experts x "
             f"{res.methods['datm'].expert_train_epochs} epochs, width {res.methods['datm'].width}; RCIG: "
             f"{res.methods['rcig'].iterations} iterations, width {res.methods['rcig'].width}, pool "
             f"{res.methods['rcig'].pool_size}), the same T as the DM "
             f"rows; their remedy is ddlnl.correction's (DANCE: unmixed inner-class targets and calibration toward T[c]; "
             f"DATM: forward-corrected experts; RCIG: forward-corrected outer loss on the real batches). 'posterior init' rows: DM with the estimated T and correction_init=posterior "
             f"(initial images drawn among the samples whose P(true | x, given), from the same 3 teachers and T, is "
             f"largest for the slot's class, instead of among the slot's given class). 'T re-estimated once' rows: 3 new "
             f"teachers trained on the posterior-init DM IPC-10 set give T and the posteriors again (their own T line), "
             f"and DM runs with those (posterior init); a DANCE / DATM / RCIG 'T re-estimated once' row uses that second T. Rows of an earlier run are kept as written; a new row's Δ columns use "
             f"the baselines' printed values. Nothing was tuned; no row is chosen by test accuracy.")
    conclusions = kept_section(table_path(RESULTS, "structured"), "Conclusions")
    return write_result(table_path(RESULTS, "structured"), "Structured noise: DM with and without the transition-matrix remedy",
                        table, notes + ("\n\n" + conclusions if conclusions else ""))


def write_longtail(store, args, sets, runs):
    rows = []
    verdict = []
    names = []
    letter = _run_letter(store, runs)
    ratios = list(dict.fromkeys([*RATIOS, *args.ratios]))

    def g(rec, k):
        return f"{100 * rec['groups'][k]:.1f}" if rec and k in rec.get("groups", {}) else "-"

    def run_of(name, rec):
        return "-" if rec is None else (letter if store.own(name) is not None else rec.get("run", "A"))

    for ratio in ratios:
        tag = f"lt-{ratio:g}"
        conv, es = store.get(f"{tag}-baseline-converged"), store.get(f"{tag}-baseline-early-stop")
        b = store.get(f"{tag}-budgets")
        for proto, rec in (("converged", conv), ("early-stop", es)):
            name = f"{tag}-baseline-{proto}"
            names.append(name)
            rows.append([f"{ratio:g}", BASELINE_LABELS[proto], "full", _acc(rec), g(rec, "head"), g(rec, "middle"),
                         g(rec, "tail"), run_of(name, rec)])
        for rule in RULES:
            for method in ("random", "dm"):
                name = f"{tag}-{method}-{rule}"
                names.append(name)
                rec = store.get(name)
                budget = ",".join(map(str, b["budgets"][rule])) if b and rule in b.get("budgets", {}) else "-"
                rows.append([f"{ratio:g}", f"{'DM' if method == 'dm' else 'random'} / {rule}", budget, _acc(rec),
                             g(rec, "head"), g(rec, "middle"), g(rec, "tail"), run_of(name, rec)])
                if method == "dm" and rec and "groups" in rec and conv and es and "tail" in rec["groups"]:
                    tail, base_tail = rec["groups"]["tail"], max(conv["groups"]["tail"], es["groups"]["tail"])
                    overall_ok = rec["mean"] >= min(conv["mean"], es["mean"])
                    verdict.append(f"ratio {ratio:g}, DM/{rule}: tail {100 * tail:.1f} vs baselines' best tail "
                                   f"{100 * base_tail:.1f}; overall {100 * rec['mean']:.2f} vs converged "
                                   f"{100 * conv['mean']:.2f} / early stop {100 * es['mean']:.2f} -> goal "
                                   f"{'MET' if tail >= base_tail and rec['mean'] >= max(conv['mean'], es['mean']) else 'NOT met'}"
                                   + ("" if overall_ok else " (overall below both baselines)"))
        if b:
            rows.append([f"{ratio:g}", f"(given counts {b['given_counts']}; clean counts {b['clean_counts_true']})",
                         "", "", "", "", "", run_of(f"{tag}-budgets", b)])
    letter, run_lines = _runs_lines(store, runs, names, "long-tail")
    table = markdown_table(["imbalance", "row", "images per class (class 0 = head)", "accuracy (%)", "head (%)",
                            "middle (%)", "tail (%)", "run"], rows)
    measured = "\n".join(f"- {v}" for v in verdict) or (
        "- NOT MEASURED: no long-tail DM row finished. The construction, budgets and per-class accuracy are tested "
        "(tests/test_longtail.py); run `benchmarks/bench_structured.py --part longtail` to fill this table.")
    notes = ("Goal: tail-third accuracy at or above the baselines' without a lower overall accuracy (here: tail >= the "
             "better baseline's tail AND overall >= the better baseline's overall).\n\n" + measured
             + "\n\nRuns (the `run` column; every row's settings are the same, below):\n\n" + "\n".join(run_lines)
             + f"\n\nConstruction: the clean Fashion-MNIST training set made long-tailed first (ddlnl.longtail, "
             f"n_c = floor({args.lt_max} * r^(-c/9)), class 0 the head), then symmetric 0.4 noise on it. Budgets: "
             f"{args.lt_total} synthetic images in all (mean IPC {args.lt_total // 10}); 'clean' splits them by the estimated "
             f"clean count per given class (3 teachers trained on the uniform DM set, ddlnl.estimate). Head/middle/tail: "
             f"classes 0-3 / 4-6 / 7-9 by training count; the group accuracy is the mean of its classes' test accuracies "
             f"(the test set is balanced). DM {args.dm_iterations} iterations, {args.n_runs} evaluation run(s), baselines "
             f"{args.baseline_epochs} epochs x 1 run. Overrides: {sets}. A later run takes the budgets of an earlier one "
             f"from this table. Nothing tuned; nothing chosen by test accuracy.")
    conclusions = kept_section(table_path(RESULTS, "longtail"), "Conclusions")
    return write_result(table_path(RESULTS, "longtail"), "Long-tailed noisy Fashion-MNIST: per-class IPC budgets", table,
                        notes + ("\n\n" + conclusions if conclusions else ""))


def summarize_seeds(results: Path, seeds: tuple[int, ...]) -> Path:
    """``structured_seeds.md``: every row measured in the structured tables of all ``seeds``
    (``structured.md`` for seed 0, ``structured_seedN.md``), its value per seed and their mean ±
    std, with the Δ columns and the goal's verdict computed on the means."""
    per_seed, overrides = [], {}
    for seed in seeds:
        path = results / (f"structured_seed{seed}.md" if seed else "structured.md")
        header, rows, other = _table(path)
        if not rows:
            raise SystemExit(f"--summarize-seeds: {path} is missing or has no table; run --seed {seed} first")
        found = re.search(r"Overrides: (\[.*?\])", "\n".join(other))
        overrides[path.name] = found.group(1) if found else None
        vals = {}
        for cells in rows:
            row = dict(zip(header, cells))
            rec = _legacy_acc(row["accuracy (%)"]) if not row["row"].startswith("(T ") else None
            if rec is not None and "mean" in rec:
                vals[(row["noise"], row["row"], row["IPC"])] = 100 * rec["mean"]
        per_seed.append(vals)
    if len(set(overrides.values())) > 1:
        raise SystemExit(f"--summarize-seeds: the tables were made under different overrides ({overrides}); "
                         "summarize tables of the same settings")
    keys = [k for k in per_seed[0] if all(k in v for v in per_seed[1:])]
    mean = {k: float(np.mean([v[k] for v in per_seed])) for k in keys}

    def m(noise, label, ipc):
        return mean.get((noise, label, ipc))

    table_rows, verdict = [], []
    for noise, label, ipc in keys:
        vals = [v[(noise, label, ipc)] for v in per_seed]
        conv = m(noise, BASELINE_LABELS["converged"], "full")
        es = m(noise, BASELINE_LABELS["early-stop"], "full")
        method = label.split(" ")[0]
        base_label = "DM (no remedy)" if method == "DM" else f"{method} (no remedy)"
        none = m(noise, base_label, ipc) if "remedy (" in label else None
        mu = mean[(noise, label, ipc)]
        table_rows.append([noise, label, ipc, " / ".join(f"{x:.2f}" for x in vals),
                           f"{mu:.2f} ± {float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0:.2f}",
                           _d(mu, conv) if ipc != "full" else "-", _d(mu, es) if ipc != "full" else "-", _d(mu, none)])
        if noise == "asymmetric:0.4" and ipc in ("10", "50") and none is not None and conv and es:
            ok = mu > max(conv, es) and mu - none >= 5
            verdict.append(f"IPC {ipc}, {label}: mean {mu:.2f} vs converged {conv:.2f}, early stop {es:.2f}, "
                           f"unremedied {none:.2f} -> goal {'MET' if ok else 'NOT met'} on the mean")
    table = markdown_table(["noise", "row", "IPC", "per seed (%)", f"mean ± std over {len(seeds)} seeds (%)",
                            "Δ converged", "Δ early stop", "Δ unremedied"], table_rows)
    notes = ("Goal (asymmetric 0.4, IPC 10-50): the remedied distiller above both baselines and >= 5 points above the "
             "unremedied one, here on the means.\n\n" + ("\n".join(f"- {v}" for v in verdict) or "- no remedied row "
             "in every seed") + "\n\nSeeds " + ", ".join(map(str, seeds)) + ": each seed draws its own noise, "
             "training subset, synthetic-set seeds, teachers and evaluation (one evaluation run per row); the per-seed "
             "values are read from " + ", ".join(f"`{'structured.md' if s == 0 else f'structured_seed{s}.md'}`"
                                                 for s in seeds) + " (made with the same overrides; their machines and "
             "dates are there). Only rows measured in every seed are listed. Std: sample standard deviation over the "
             "seeds. Nothing tuned; nothing chosen by test accuracy.")
    conclusions = kept_section(results / "structured_seeds.md", "Conclusions")
    return write_result(results / "structured_seeds.md", "Structured noise over seeds: DM with and without the remedy",
                        table, notes + ("\n\n" + conclusions if conclusions else ""))


def _noise_list(text: str) -> tuple[str, ...]:
    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    for v in vals:
        try:
            parse_noise_spec(v)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not vals:
        raise argparse.ArgumentTypeError("give at least one noise spec")
    return vals


def _number_list(minimum: float, kind: str):
    def parse(text: str) -> tuple:
        try:
            vals = tuple(int(v) if float(v).is_integer() else float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind}, got {text!r}") from None
        if not vals or min(vals) < minimum or (kind == "integers" and any(isinstance(v, float) for v in vals)):
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind} >= {minimum:g}, got {text!r}")
        return vals
    return parse


def _base_config(cfg) -> dict:
    """``asdict(cfg)`` without the fields added after the store's records were written, at their
    neutral values, so that those records still match (a DM row's own remedy settings are in its name)."""
    out = asdict(cfg)
    for name, neutral in (("correction_init", "given"), ("correction_rounds", 1)):
        if out.get(name) == neutral:
            out.pop(name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="records (default runs/bench-structured, with --seed N ...-seedN)")
    ap.add_argument("--part", default="all", choices=["all", "structured", "longtail"])
    ap.add_argument("--no-run", action="store_true")
    ap.add_argument("--noises", type=_noise_list, default=STRUCTURED_NOISES,
                    help=f"structured part: the noise settings to run (default {','.join(STRUCTURED_NOISES)})")
    ap.add_argument("--ipcs", type=_number_list(1, "integers"), default=IPCS,
                    help=f"structured part: the IPCs to run (default {','.join(map(str, IPCS))})")
    ap.add_argument("--ratios", type=_number_list(1, "numbers"), default=RATIOS,
                    help=f"long-tail part: the imbalance ratios to run (default {','.join(map(str, RATIOS))})")
    ap.add_argument("--distillers", type=lambda t: tuple(v.strip() for v in t.split(",") if v.strip()), default=("dm",),
                    help=f"structured part: dm and any of {','.join(EXTRA_DISTILLERS)} (their remedy rows; default dm)")
    ap.add_argument("--posterior-init", action="store_true",
                    help="structured part: also DM + estimated T with correction_init=posterior (initial images chosen by "
                         "P(true | x, given))")
    ap.add_argument("--iterate", action="store_true",
                    help="structured part (with --posterior-init): also DM with T re-estimated once, from teachers on "
                         "the posterior-init DM IPC-10 set")
    ap.add_argument("--seed", type=int, default=0,
                    help="noise, subset and every derived seed (default 0: structured.md / longtail.md; N writes "
                         "structured_seedN.md / longtail_seedN.md)")
    ap.add_argument("--summarize-seeds", type=_number_list(0, "integers"), default=None,
                    help="run nothing: write structured_seeds.md from the structured tables of these seeds (e.g. 0,1,2)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows measured in the existing tables (not recomputed) and add the missing ones")
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--dm-iterations", type=int, default=100)
    ap.add_argument("--n-runs", type=int, default=1)
    ap.add_argument("--baseline-epochs", type=int, default=40)
    ap.add_argument("--lt-max", type=int, default=500)
    ap.add_argument("--lt-total", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], help="extra overrides (smoke runs: train.epochs=2)")
    ap.add_argument("--results", default=str(RESULTS), help="where the two tables go")
    args = ap.parse_args()
    unknown = set(args.distillers) - {"dm", *EXTRA_DISTILLERS}
    if unknown or "dm" not in args.distillers:
        ap.error(f"--distillers: dm plus any of {', '.join(EXTRA_DISTILLERS)}, got {','.join(args.distillers)}")
    if args.iterate and not args.posterior_init:
        ap.error("--iterate re-estimates T from the posterior-init DM set: give --posterior-init too")
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    globals()["RESULTS"] = Path(args.results)
    if args.summarize_seeds is not None:
        if len(set(args.summarize_seeds)) < 2:
            ap.error("--summarize-seeds: give at least two different seeds")
        print(summarize_seeds(RESULTS, args.summarize_seeds).read_text())
        return
    globals()["SUFFIX"] = f"_seed{args.seed}" if args.seed else ""
    if args.root is None:
        args.root = "runs/bench-structured" + (f"-seed{args.seed}" if args.seed else "")
    torch.set_num_threads(1)
    res, sets = configs(args)
    args.train_epochs = res.train.epochs
    base = {"sets": sets, "n_runs": args.n_runs, "subset": args.subset, "lt_max": args.lt_max, "lt_total": args.lt_total,
            "dm": _base_config(res.methods["dm"]), "train": asdict(res.train), **({"seed": args.seed} if args.seed else {})}
    legacy, runs = read_legacy(RESULTS) if args.append else ({}, {"structured": {}, "longtail": {}})
    if args.append:
        check_same_settings(RESULTS, sets)
    store = Store(Path(args.root), base, legacy)

    def tables():  # only the part(s) this run is about: the other table is left as it is
        if args.part in ("all", "structured"):
            write_structured(store, args, sets, runs["structured"], res)
        if args.part in ("all", "longtail"):
            write_longtail(store, args, sets, runs["longtail"])

    if not args.no_run:
        # Order (what finishes first is what a short run reports): the goal's setting first, then the
        # long tail, then the other structured settings; within a setting the IPCs as given.
        if args.part in ("all", "structured"):
            for noise in args.noises:
                for ipc in args.ipcs:
                    run_structured(store, res, args, noise, ipcs=(ipc,))
                    tables()
        if args.part in ("all", "longtail"):
            for ratio in args.ratios:
                run_longtail(store, res, args, ratio)
                tables()
    tables()
    for kind in ("structured", "longtail"):
        if args.part in ("all", kind):
            print(table_path(RESULTS, kind).read_text())


if __name__ == "__main__":
    main()
