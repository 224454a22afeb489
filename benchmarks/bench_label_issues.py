"""Label issues on Fashion-MNIST with known noise: ddlnl's route (teachers trained only on a DM
synthetic set, plus neighbour votes in their feature space) against cleanlab on K-fold
cross-validated probabilities of the same ConvNet trained on the noisy labels.

For each noise setting, on a stratified training subset with the full clean test set:

* issue detection against the true ``is_noisy`` mask: AUROC (threshold-free), precision and recall
  of each route's default flags;
* the estimated noise rate next to the realized one, and the largest error of the estimated
  transition matrix (``T[i, j] = P(noisy = j | true = i)``; cleanlab's ``noise_matrix`` is
  transposed to this orientation);
* the fraction of correct labels after relabelling the flagged samples;
* the clean-test accuracy of one short-recipe model trained on the relabelled set (and on the given
  noisy labels, for reference);
* each route's wall time on this machine (DM + teachers + scoring for ddlnl, cross-validation +
  cleanlab for cleanlab; downstream training is not included in either).

Each step's record is kept under ``--out`` (default ``runs/bench-label-issues``) with a key of the
settings that produced it, so an interrupted run resumes and a changed setting recomputes. The
table goes to ``benchmarks/results/label_issues.md`` (``--quick``: a minutes-long smoke run whose
table stays under ``--out``).

    .venv/bin/python benchmarks/bench_label_issues.py               # the full benchmark
    .venv/bin/python benchmarks/bench_label_issues.py --quick       # a ~1-2 minute check
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ddlnl.compare import cleanlab_route, require_cleanlab
from ddlnl.label_issues import (IssuesConfig, cleaned_accuracy, detection_metrics, find_issues, neighbour_votes,
                                teacher_outputs, train_teachers)
from ddlnl.methods.dm import DMConfig
from ddlnl.pipeline import JobConfig, distill_cached, prepare_data
from ddlnl.report import markdown_table, write_result
from ddlnl.train import TrainConfig, evaluate
from ddlnl.utils import atomic_write_json, derive_seed, json_key, resolve_device

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Settings:
    """Everything that determines the numbers (the resume key is a hash of the relevant part)."""

    subset: int = 10000  # stratified training images
    seed: int = 0
    ipc: int = 10  # DM images per class
    dm_iterations: int = 100  # MEASURED.md: ~80 DM iterations already give most of the gain
    dm_batch_real: int = 64
    dm_width: int = 64
    teachers: int = 3
    teacher_epochs: int = 100  # on C * IPC synthetic images, DSA, lr 0.01 step decay
    width: int = 64  # teachers, cross-validation models
    neighbours: int = 50
    folds: int = 2
    cv_epochs: tuple[int, ...] = (3, 10)  # one cleanlab row per value
    cv_lr: float = 0.01  # cosine, no augmentation (MEASURED.md's short full-noisy recipe)
    downstream_epochs: int = 15
    downstream_width: int = 32
    downstream_lr: float = 0.01


def cached(path: Path, key: str, compute: Callable[[], dict]) -> dict:
    """The record at ``path`` if it has ``key``, else ``compute()`` written there (atomically)."""
    if path.exists():
        rec = json.loads(path.read_text())
        if rec.get("key") == key:
            return rec
    rec = {"key": key, **compute(), "threads": torch.get_num_threads(), "load1": os.getloadavg()[0],
           "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    atomic_write_json(path, rec)
    return rec


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def issues_row(iss, truth: np.ndarray, clean: np.ndarray, realized_t: np.ndarray) -> dict[str, Any]:
    return {**detection_metrics(iss, truth), **cleaned_accuracy(iss, clean),
            "t_max_error": float(np.abs(iss.transition - realized_t).max()),
            "cleaned": iss.cleaned_labels().tolist()}


def downstream(prepared, labels: np.ndarray, s: Settings, device) -> dict[str, Any]:
    """One short-recipe model on ``labels``; clean-test accuracy at the end of training."""
    cfg = TrainConfig(width=s.downstream_width, epochs=s.downstream_epochs, lr=s.downstream_lr, schedule="cosine",
                      augment="none")
    data = prepared.noisy_train.with_labels(torch.as_tensor(labels, dtype=torch.int64))
    res = evaluate(data, prepared.dataset.test, cfg, num_classes=prepared.dataset.num_classes, n_runs=1,
                   seed=derive_seed(s.seed, "downstream"), device=device)
    return {"accuracy": res.mean, "seconds": res.seconds}


def ddlnl_route(prepared, s: Settings, out: Path, device) -> dict[str, Any]:
    """DM synthetic set -> teachers -> three scoring variants; one record, timings included."""
    ds = prepared.dataset
    syn_path = out / "synthetic.safetensors"
    dm_cfg = DMConfig(iterations=s.dm_iterations, batch_real=s.dm_batch_real, width=s.dm_width)
    syn_key = json_key([s.subset, s.seed, s.ipc, asdict(dm_cfg), prepared.noisy.spec.to_dict()])
    syn = distill_cached(prepared, "dm", s.ipc, dm_cfg, seed=derive_seed(s.seed, "distill", s.ipc), key=syn_key,
                         path=syn_path, device=device)
    distill_seconds = float(syn.meta["distill_seconds"])
    say(f"  ddlnl: DM IPC {s.ipc} ({s.dm_iterations} it.) {distill_seconds:.0f}s; training {s.teachers} teachers")
    t0 = time.perf_counter()
    tcfg = TrainConfig(width=s.width, epochs=s.teacher_epochs).for_dataset(ds.name)
    models = train_teachers(syn, tcfg, s.teachers, seed=derive_seed(s.seed, "issues"), device=device)
    teacher_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = teacher_outputs(models, ds.train.images)
    infer_seconds = time.perf_counter() - t0
    labels = prepared.noisy.noisy.numpy()
    truth = prepared.noisy.is_noisy.numpy()
    clean = prepared.noisy.clean.numpy()
    t0 = time.perf_counter()
    votes = neighbour_votes(outs.features, labels, ds.num_classes, s.neighbours)
    vote_seconds = time.perf_counter() - t0
    variants = {"teachers only": (IssuesConfig(neighbours=0), None),
                f"teachers + {s.neighbours}-NN votes (default)": (IssuesConfig(neighbours=s.neighbours), votes),
                f"teachers + {s.neighbours}-NN, posterior score": (IssuesConfig(neighbours=s.neighbours,
                                                                                 score="posterior"), votes)}
    rows, estimate = {}, None
    for name, (cfg, v) in variants.items():
        t0 = time.perf_counter()
        iss = find_issues(outs.probs, labels, ds.num_classes, cfg, votes=v, estimate=estimate)
        estimate = iss.estimate  # the EM fit is the same for every variant
        rows[name] = {**issues_row(iss, truth, clean, prepared.noisy.realized_T),
                      "score_seconds": time.perf_counter() - t0 + (vote_seconds if v is not None else 0.0)}
    common = distill_seconds + teacher_seconds + infer_seconds
    for r in rows.values():
        r["seconds"] = common + r["score_seconds"]
    return {"rows": rows, "distill_seconds": distill_seconds, "teacher_seconds": teacher_seconds,
            "inference_seconds": infer_seconds, "temperature": estimate.temperature,
            "teacher_accuracy_on_clean_train": float((outs.probs.argmax(1) == clean).mean())}


def cleanlab_rows(prepared, s: Settings, epochs: int, device) -> dict[str, Any]:
    cfg = TrainConfig(width=s.width, epochs=epochs, lr=s.cv_lr, schedule="cosine", augment="none")
    iss = cleanlab_route(prepared.noisy_train, cfg, num_classes=prepared.dataset.num_classes, folds=s.folds,
                         seed=derive_seed(s.seed, "cv"), device=device)
    row = issues_row(iss, prepared.noisy.is_noisy.numpy(), prepared.noisy.clean.numpy(), prepared.noisy.realized_T)
    row["seconds"] = iss.meta["seconds"]
    row["cv_accuracy_on_clean_train"] = float((iss.pred_probs.argmax(1) == prepared.noisy.clean.numpy()).mean())
    return row


def run_setting(noise: str, s: Settings, out_root: Path, device) -> dict[str, Any]:
    out = out_root / noise.replace(":", "-")
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare_data(JobConfig(dataset="fashion-mnist", noise=noise, train_subset=s.subset, seed=s.seed))
    base = [noise, s.subset, s.seed]
    say(f"== {noise}: {len(prepared.noisy_train)} training images, realized rate {prepared.noisy.realized_rate:.3f}")
    ddl_fields = ["ipc", "dm_iterations", "dm_batch_real", "dm_width", "teachers", "teacher_epochs", "width",
                  "neighbours"]
    ddl = cached(out / "ddlnl.json", json_key(base + [{k: getattr(s, k) for k in ddl_fields}]),
                 lambda: ddlnl_route(prepared, s, out, device))
    rows: dict[str, dict] = {f"ddlnl: {k}": {**v, "threads": ddl.get("threads")} for k, v in ddl["rows"].items()}
    say(f"  ddlnl done: {ddl['rows'][next(iter(k for k in ddl['rows'] if 'default' in k))]['auroc']:.3f} AUROC (default)")
    for e in s.cv_epochs:
        rec = cached(out / f"cleanlab-e{e}.json", json_key(base + [s.width, s.folds, e, s.cv_lr]),
                     lambda e=e: cleanlab_rows(prepared, s, e, device))
        rows[f"cleanlab: {s.folds}-fold CV, {e} epochs/fold"] = rec
        say(f"  cleanlab {e} epochs: {rec['auroc']:.3f} AUROC, {rec['seconds']:.0f}s")
    down_key = [s.downstream_width, s.downstream_epochs, s.downstream_lr]
    given = cached(out / "downstream-given.json", json_key(base + down_key),
                   lambda: downstream(prepared, prepared.noisy.noisy.numpy(), s, device))
    default = next(k for k in rows if "default" in k)
    for name in [default] + [k for k in rows if k.startswith("cleanlab")]:
        labels = np.asarray(rows[name]["cleaned"])
        slug = json_key(labels.tolist())
        rec = cached(out / f"downstream-{slug}.json", json_key(base + down_key + [slug]),
                     lambda labels=labels: downstream(prepared, labels, s, device))
        rows[name]["downstream_accuracy"] = rec["accuracy"]
        say(f"  downstream on {name}: {100 * rec['accuracy']:.2f}%")
    return {"noise": noise, "realized_rate": prepared.noisy.realized_rate, "given_downstream": given["accuracy"],
            "rows": rows, "ddlnl": {k: v for k, v in ddl.items() if k != "rows"}}


def pct(x: float | None) -> str:
    return "-" if x is None or np.isnan(x) else f"{100 * x:.1f}"


def table(results: list[dict]) -> str:
    head = ["noise (realized)", "route", "AUROC", "precision", "recall", "est. rate", "max |T err|",
            "labels correct after relabel (%)", "downstream acc. (%)", "wall s"]
    rows = []
    for res in results:
        first = next(iter(res["rows"].values()))
        rows.append([f"{res['noise']} ({res['realized_rate']:.3f})", "given noisy labels (no cleaning)", "-", "-",
                     "-", "-", "-", pct(first["given_correct"]), pct(res["given_downstream"]), "-"])
        names = list(res["rows"])
        order = sorted(names, key=lambda k: (not k.startswith("ddlnl"), "default" not in k, names.index(k)))
        for name in order:  # ddlnl's default first, then its ablations, then cleanlab
            r = res["rows"][name]
            rows.append(["", name, f"{r['auroc']:.3f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                         f"{r['estimated_rate']:.3f}", f"{r['t_max_error']:.3f}", pct(r["relabelled_correct"]),
                         pct(r.get("downstream_accuracy")),
                         f"{r['seconds']:.0f}" + (f" ({r['threads']} thr)" if r.get("threads") else "")])
    return markdown_table(head, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noises", default="symmetric:0.2,symmetric:0.4,symmetric:0.6,symmetric:0.8,asymmetric:0.4")
    ap.add_argument("--subset", type=int, default=None, help="stratified training images (default 10000)")
    ap.add_argument("--ipc", type=int, default=None, help="DM images per class (default 10)")
    ap.add_argument("--dm-iterations", type=int, default=None)
    ap.add_argument("--teachers", type=int, default=None)
    ap.add_argument("--teacher-epochs", type=int, default=None)
    ap.add_argument("--cv-epochs", default=None, help="comma-separated, one cleanlab row each (default 3,10)")
    ap.add_argument("--quick", action="store_true", help="tiny settings, one noise; a smoke test of the script")
    ap.add_argument("--out", default=None, help="records (default runs/bench-label-issues[-quick])")
    args = ap.parse_args()
    require_cleanlab()
    s = Settings()
    noises = [n for n in args.noises.split(",") if n]
    if args.quick:
        s = replace(s, subset=2000, dm_iterations=10, dm_batch_real=32, dm_width=32, teachers=2, teacher_epochs=20,
                    width=32, cv_epochs=(1,), downstream_epochs=2, downstream_width=16)
        noises = ["symmetric:0.6"]
    overrides = {"subset": args.subset, "ipc": args.ipc, "dm_iterations": args.dm_iterations,
                 "teachers": args.teachers, "teacher_epochs": args.teacher_epochs,
                 "cv_epochs": tuple(int(e) for e in args.cv_epochs.split(",")) if args.cv_epochs else None}
    s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out or ("runs/bench-label-issues" + ("-quick" if args.quick else "")))
    device = resolve_device("auto")
    # The first LAPACK eigendecomposition of a process (used by the neighbour search's PCA) costs
    # seconds of one-off set-up; pay it here so it is not charged to the first setting's route.
    a = torch.randn(600, 600, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.linalg.eigh(a @ a.T)
    t0 = time.perf_counter()
    results = [run_setting(noise, s, out, device) for noise in noises]
    body = table(results)
    print(body)
    notes = (f"Fashion-MNIST, stratified {s.subset}-image training subset (seed {s.seed}), full 10k clean test set; "
             f"symmetric = flip to a uniformly chosen other class, asymmetric = GCE map (overall rate about half). "
             f"ddlnl: DM IPC {s.ipc} ({s.dm_iterations} iterations, {s.dm_batch_real} real/class, width {s.dm_width}), "
             f"{s.teachers} ConvNet-3 width {s.width} teachers x {s.teacher_epochs} epochs on the synthetic set only "
             f"(DSA, lr 0.01 step), noise estimate by EM with a fitted teacher temperature, flags = the estimated "
             f"number of wrong labels per class (lowest quality first); neighbour votes: {s.neighbours} nearest "
             f"samples in the teachers' PCA-128 feature space vote with their given labels (blend 0.8 votes + 0.2 "
             f"teachers). cleanlab {require_cleanlab().__version__}: {s.folds}-fold cross-validation of the same "
             f"ConvNet (width {s.width}, lr {s.cv_lr} cosine, no augmentation) trained on the noisy labels, "
             f"`find_label_issues` (prune_by_noise_rate) and `estimate_py_and_noise_matrices_from_probabilities` "
             f"(its noise_matrix transposed to T[i, j] = P(noisy = j | true = i)). AUROC scores 1 - quality "
             f"(self-confidence) against the true is_noisy mask. Downstream: one ConvNet-3 width "
             f"{s.downstream_width}, {s.downstream_epochs} epochs, lr {s.downstream_lr} cosine, no augmentation, "
             f"on the relabelled training set; accuracy at the end of training on the clean test set. Wall times "
             f"are the routes' own (DM + teachers + inference + scoring; CV training + cleanlab), measured in one "
             f"process on a machine shared with other jobs, so compare them within a row group, not with other "
             f"benchmarks; (N thr): the torch threads the step ran with, where its record has them. Total benchmark time {time.perf_counter() - t0:.0f}s (resumed steps count 0).")
    target = (out / "label_issues.md") if args.quick else RESULTS / "label_issues.md"
    write_result(target, "Label issues: ddlnl (distilled teachers) vs cleanlab (cross-validation)", body, notes)
    atomic_write_json(out / "results.json", {"settings": asdict(s), "results": [
        {**r, "rows": {k: {kk: vv for kk, vv in v.items() if kk != "cleaned"} for k, v in r["rows"].items()}}
        for r in results]})
    say(f"written {target}")


if __name__ == "__main__":
    main()
