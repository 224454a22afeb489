"""Label issues on Fashion-MNIST with known noise: ddlnl's route (teachers trained only on a DM
synthetic set, optionally with a neighbour vote in their feature space) against cleanlab on K-fold
cross-validated probabilities of the same network, trained with the same recipe.

Protocol (what a reviewer of a label-noise paper asks for):

* one training recipe for every model that scores labels -- ddlnl's teachers (on the synthetic
  set) and cleanlab's cross-validation models (on the noisy labels): the same ConvNet, epochs,
  batch, learning rate, DSA augmentation, and 1 torch thread per process;
* cleanlab with K = 5 folds (its helpers' default) as the main row and K = 2 as the cheap row;
  cleanlab's `find_label_issues` (its default, prune_by_noise_rate) and its noise-matrix estimate;
* the neighbour vote offered to both routes: ddlnl's in the teachers' feature space, cleanlab's
  within each held-out fold in that fold model's feature space (neither space was shaped by the
  labels it compares); teachers-only and cleanlab-only rows beside them;
* every ddlnl setting (anchor fraction, vote size, teacher weight) and the vote weight offered to
  cleanlab chosen on a development setting that is no row of the table (another noise seed),
  written in the result file;
* >= 3 noise seeds per setting (mean +- std), wall time per row at the same thread count, downstream
  accuracy of one model per seed trained on each route's relabelled set (>= 3 runs);
* records under ``--out`` keyed by the code version and every setting that changes a number; the
  table is built from the records of this run only (a fresh ``--out`` per run is the default).

Two worker processes share the task list (``--workers 2``); a task not started by ``--deadline``
(UTC ``HH:MM``) is skipped and the file says which settings are missing.

    .venv/bin/python benchmarks/bench_label_issues.py               # the benchmark
    .venv/bin/python benchmarks/bench_label_issues.py --quick       # a minutes-long smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddlnl.compare import cleanlab_issues, cross_val_pred_probs, require_cleanlab
from ddlnl.estimate import estimate_noise
from ddlnl.label_issues import (IssuesConfig, cleaned_accuracy, detection_metrics, find_issues, neighbour_votes,
                                teacher_outputs, train_teachers)
from ddlnl.methods.dm import DMConfig
from ddlnl.pipeline import JobConfig, distill_cached, prepare_data
from ddlnl.report import markdown_table, write_result
from ddlnl.train import TrainConfig, evaluate
from ddlnl.utils import atomic_write_json, code_version, derive_seed, json_key

RESULTS = Path(__file__).parent / "results"
DEV = ("symmetric:0.4", 100)  # development setting: a noise seed no row uses
ROW_NOISES = ("symmetric:0.4", "asymmetric:0.4", "symmetric:0.8", "symmetric:0.2", "symmetric:0.6")
# Candidate settings tried on the development setting only (scoring is cheap: no training).
ANCHOR_FRACTIONS = (0.05, 0.1, 0.2)
VOTE_KS = (10, 25, 50)
TEACHER_WEIGHTS = (0.0, 0.2, 0.5)
CLEANLAB_VOTE_WEIGHTS = (0.2, 0.5, 0.8)  # weight of cleanlab's own CV probabilities in the blend


@dataclass(frozen=True)
class Settings:
    """Everything that determines the numbers (part of every record's key)."""

    subset: int = 1000  # stratified training images (the measured reason is in the result notes)
    seeds: tuple[int, ...] = (0, 1, 2)
    ipc: int = 10  # DM images per class
    dm_iterations: int = 20
    dm_batch_real: int = 16
    width: int = 16  # every ConvNet-3 here: DM embedder, teachers, CV models, downstream models
    epochs: int = 10  # teachers, CV models and downstream models alike
    batch_size: int = 64
    lr: float = 0.01  # step decay at half the epochs
    augment: str = "dsa"
    teachers: int = 3
    folds_main: int = 5
    folds_cheap: int = 2

    def recipe(self) -> TrainConfig:
        return TrainConfig(width=self.width, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           augment=self.augment).for_dataset("fashion-mnist")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} pid {os.getpid()}] {msg}", flush=True)


def run_code_version() -> str:
    """The code version the run started with (fixed in main, inherited by the workers)."""
    return os.environ.get("DDLNL_BENCH_CODE") or code_version()


def task_key(s: Settings, noise: str, seed: int, part: str, extra: Any = None) -> str:
    return json_key([run_code_version(), asdict(s), noise, seed, part, extra])


def load_or(path: Path, key: str):
    if path.exists():
        rec = json.loads(path.read_text())
        if rec.get("key") == key:
            return rec
    return None


# ------------------------------------------------------------------------------ training phase


def train_phase(s: Settings, noise: str, seed: int, out: Path, *, cheap: bool = True) -> Path:
    """DM -> teachers (probs, features) and K-fold CV probabilities (+ in-fold votes); arrays saved."""
    d = out / f"{noise.replace(':', '-')}-seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    key = task_key(s, noise, seed, "train", cheap)
    if load_or(d / "train.json", key):
        return d
    torch.set_num_threads(1)
    prep = prepare_data(JobConfig(dataset="fashion-mnist", noise=noise, train_subset=s.subset, seed=seed))
    ds = prep.dataset
    labels = prep.noisy.noisy.numpy()
    say(f"{noise} seed {seed}: {len(labels)} images, realized rate {prep.noisy.realized_rate:.3f}")
    t0 = time.perf_counter()
    dm = DMConfig(iterations=s.dm_iterations, batch_real=s.dm_batch_real, width=s.width)
    syn = distill_cached(prep, "dm", s.ipc, dm, seed=derive_seed(seed, "distill", s.ipc), key=None, path=None,
                         device="cpu")
    dm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    models = train_teachers(syn, s.recipe(), s.teachers, seed=derive_seed(seed, "issues"))
    outs = teacher_outputs(models, ds.train.images)
    teach_s = time.perf_counter() - t0
    say(f"  DM {dm_s:.0f}s, teachers {teach_s:.0f}s (agree with clean {np.mean(outs.probs.argmax(1) == prep.noisy.clean.numpy()):.3f})")
    times = {"dm": dm_s, "teachers": teach_s}
    arrays = {"teacher_probs": outs.probs, "labels": labels, "clean": prep.noisy.clean.numpy(),
              "realized_T": prep.noisy.realized_T, "teacher_features": outs.features.numpy()}
    for folds in ((s.folds_main, s.folds_cheap) if cheap else (s.folds_main,)):
        t0 = time.perf_counter()
        probs, votes = cross_val_pred_probs(prep.noisy_train, s.recipe(), num_classes=ds.num_classes, folds=folds,
                                            seed=derive_seed(seed, "cv"), vote_k=max(VOTE_KS))
        times[f"cv{folds}"] = time.perf_counter() - t0
        arrays[f"cv{folds}_probs"] = probs
        say(f"  {folds}-fold CV {times[f'cv{folds}']:.0f}s (agree with clean {np.mean(probs.argmax(1) == arrays['clean']):.3f})")
        # In-fold votes for the smaller k candidates too (cheap; the fold models are gone, so the
        # votes are recomputed from the same features only for k = max; smaller k use that vote).
        arrays[f"cv{folds}_votes"] = votes
    np.savez(d / "arrays.npz", **arrays)
    atomic_write_json(d / "train.json", {"key": key, "seconds": times, "realized_rate": prep.noisy.realized_rate,
                                         "threads": torch.get_num_threads(), "load1": os.getloadavg()[0],
                                         "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    return d


# ------------------------------------------------------------------------------ scoring


def _metrics(iss, a) -> dict[str, Any]:
    wrong = a["labels"] != a["clean"]
    return {**detection_metrics(iss, wrong), **cleaned_accuracy(iss, a["clean"]),
            "t_max_error": float(np.abs(iss.transition - a["realized_T"]).max())}


def score_rows(a, choice: dict[str, Any], times: dict[str, float], k: int) -> dict[str, tuple[dict, Any]]:
    """Every route's issues at the chosen settings: name -> (metrics with seconds, LabelIssues)."""
    labels = a["labels"]
    rows = {}
    t0 = time.perf_counter()
    est = estimate_noise(a["teacher_probs"], labels, k, anchor_fraction=choice["anchor_fraction"])
    iss = find_issues(a["teacher_probs"], labels, k, IssuesConfig(neighbours=0, anchor_fraction=choice["anchor_fraction"]),
                      estimate=est)
    base = times["dm"] + times["teachers"]
    rows["ddlnl: teachers only"] = ({**_metrics(iss, a), "seconds": base + time.perf_counter() - t0}, iss)
    t0 = time.perf_counter()
    votes = neighbour_votes(torch.from_numpy(a["teacher_features"]), labels, k, choice["neighbours"])
    cfg = IssuesConfig(neighbours=choice["neighbours"], teacher_weight=choice["teacher_weight"],
                       anchor_fraction=choice["anchor_fraction"])
    iss = find_issues(a["teacher_probs"], labels, k, cfg, votes=votes, estimate=est)
    rows[f"ddlnl: teachers + {choice['neighbours']}-NN vote"] = (
        {**_metrics(iss, a), "seconds": base + time.perf_counter() - t0}, iss)
    for folds in sorted({int(x[2:-6]) for x in a.files if x.startswith("cv") and x.endswith("_probs")}, reverse=True):
        t0 = time.perf_counter()
        iss = cleanlab_issues(labels, a[f"cv{folds}_probs"])
        rows[f"cleanlab: {folds}-fold CV"] = ({**_metrics(iss, a), "seconds": times[f"cv{folds}"] + time.perf_counter() - t0},
                                              iss)
        if folds == 5:
            w = choice["cleanlab_vote_weight"]
            t0 = time.perf_counter()
            blend = w * a[f"cv{folds}_probs"] + (1 - w) * a[f"cv{folds}_votes"]
            iss = cleanlab_issues(labels, blend)
            rows[f"cleanlab: {folds}-fold CV + {max(VOTE_KS)}-NN in-fold vote"] = (
                {**_metrics(iss, a), "seconds": times[f"cv{folds}"] + time.perf_counter() - t0}, iss)
    return rows


def choose_on_dev(a, k: int) -> dict[str, Any]:
    """The settings with the best development-setting numbers (never a reported row)."""
    labels = a["labels"]
    wrong = labels != a["clean"]
    realized = float(wrong.mean())
    fracs = {f: abs(estimate_noise(a["teacher_probs"], labels, k, anchor_fraction=f).noise_rate - realized)
             for f in ANCHOR_FRACTIONS}
    frac = min(fracs, key=fracs.get)
    est = estimate_noise(a["teacher_probs"], labels, k, anchor_fraction=frac)
    grid = {}
    for nk in VOTE_KS:
        votes = neighbour_votes(torch.from_numpy(a["teacher_features"]), labels, k, nk)
        for w in TEACHER_WEIGHTS:
            iss = find_issues(a["teacher_probs"], labels, k, IssuesConfig(neighbours=nk, teacher_weight=w,
                                                                          anchor_fraction=frac), votes=votes, estimate=est)
            grid[(nk, w)] = detection_metrics(iss, wrong)["auroc"]
    nk, w = max(grid, key=grid.get)
    cl = {cw: detection_metrics(cleanlab_issues(labels, cw * a["cv5_probs"] + (1 - cw) * a["cv5_votes"]), wrong)["auroc"]
          for cw in CLEANLAB_VOTE_WEIGHTS}
    cw = max(cl, key=cl.get)
    return {"anchor_fraction": frac, "neighbours": nk, "teacher_weight": w, "cleanlab_vote_weight": cw,
            "dev_rate_errors": {str(f): v for f, v in fracs.items()},
            "dev_auroc_grid": {f"k={a_}, w={b_}": v for (a_, b_), v in grid.items()},
            "dev_cleanlab_vote_auroc": {str(c): v for c, v in cl.items()}, "dev_realized_rate": realized}


def downstream(s: Settings, noise: str, seed: int, labels: np.ndarray, d: Path, name: str) -> float:
    key = task_key(s, noise, seed, "downstream", json_key(labels.tolist()))
    path = d / f"downstream-{json_key(name)}.json"
    rec = load_or(path, key)
    if rec is None:
        prep = prepare_data(JobConfig(dataset="fashion-mnist", noise=noise, train_subset=s.subset, seed=seed))
        data = prep.noisy_train.with_labels(torch.as_tensor(labels, dtype=torch.int64))
        res = evaluate(data, prep.dataset.test, s.recipe(), num_classes=prep.dataset.num_classes, n_runs=1,
                       seed=derive_seed(seed, "downstream"))
        rec = {"key": key, "route": name, "accuracy": res.mean, "seconds": res.seconds}
        atomic_write_json(path, rec)
    return float(rec["accuracy"])


DOWNSTREAM_ROUTES = ("given", "ddlnl: teachers + ", "cleanlab: 5-fold CV")


def score_phase(s: Settings, noise: str, seed: int, d: Path, choice: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    a = np.load(d / "arrays.npz")
    times = json.loads((d / "train.json").read_text())["seconds"]
    rows = score_rows(a, choice, times, int(a["teacher_probs"].shape[1]))
    out = {name: m for name, (m, _) in rows.items()}
    out["given"] = {"downstream_accuracy": downstream(s, noise, seed, a["labels"], d, "given"),
                    "relabelled_correct": float(np.mean(a["labels"] == a["clean"]))}
    for name, (m, iss) in rows.items():
        if name.startswith("ddlnl: teachers + ") or name == "cleanlab: 5-fold CV":
            m["downstream_accuracy"] = downstream(s, noise, seed, iss.cleaned_labels(), d, name)
            say(f"  {noise} seed {seed} downstream {name}: {100 * m['downstream_accuracy']:.2f}%")
    atomic_write_json(d / "scored.json", {"choice": choice, "rows": out})
    return out


# ------------------------------------------------------------------------------ driver


def worker(args: tuple) -> None:
    s, tasks, out, deadline, wid = args
    torch.set_num_threads(1)
    for noise, seed in tasks:
        if deadline and time.strftime("%H:%M", time.gmtime()) >= deadline:
            say(f"deadline {deadline} UTC passed: {noise} seed {seed} not started")
            continue
        t0 = time.perf_counter()
        d = train_phase(s, noise, seed, out)
        choice_path = out / "dev-choice.json"
        while not choice_path.exists():  # the development setting fixes every choice first
            time.sleep(10)
        score_phase(s, noise, seed, d, json.loads(choice_path.read_text()))
        atomic_write_json(d / "done.json", {"wall_seconds": time.perf_counter() - t0, "worker": wid})
        say(f"{noise} seed {seed} done in {time.perf_counter() - t0:.0f}s")


def dev_worker(args: tuple) -> None:
    s, tasks, out, deadline, wid = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    d = train_phase(s, DEV[0], DEV[1], out, cheap=False)
    a = np.load(d / "arrays.npz")
    choice = choose_on_dev(a, int(a["teacher_probs"].shape[1]))
    atomic_write_json(out / "dev-choice.json", choice)
    say(f"development choice: {choice['anchor_fraction']=}, {choice['neighbours']=}, {choice['teacher_weight']=}, "
        f"{choice['cleanlab_vote_weight']=} ({time.perf_counter() - t0:.0f}s)")
    worker((s, tasks, out, deadline, wid))


def fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=float) * scale
    if v.size == 0:
        return "-"
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"


def build_table(s: Settings, out: Path) -> tuple[str, list[str], list[str]]:
    head = ["noise (realized)", "route", "seeds", "AUROC", "precision", "recall", "est. rate", "max |T err|",
            "labels correct after relabel (%)", "downstream acc. (%)", "wall s"]
    rows, done, missing = [], [], []
    for noise in ROW_NOISES:
        recs, realized = [], []
        for seed in s.seeds:
            d = out / f"{noise.replace(':', '-')}-seed{seed}"
            if (d / "scored.json").exists():
                recs.append(json.loads((d / "scored.json").read_text())["rows"])
                realized.append(json.loads((d / "train.json").read_text())["realized_rate"])
                done.append(f"{noise} seed {seed}")
            else:
                missing.append(f"{noise} seed {seed}")
        if not recs:
            continue
        first = True
        names = ["given"] + [n for n in recs[0] if n != "given"]
        for name in names:
            rs = [r[name] for r in recs if name in r]
            label = f"{noise} ({fmt(realized)})" if first else ""
            first = False
            if name == "given":
                rows.append([label, "given noisy labels (no cleaning)", len(rs), "-", "-", "-", "-", "-",
                             fmt([r["relabelled_correct"] for r in rs], 100, 1),
                             fmt([r["downstream_accuracy"] for r in rs], 100, 1), "-"])
                continue
            rows.append([label, name, len(rs), fmt([r["auroc"] for r in rs]), fmt([r["precision"] for r in rs]),
                         fmt([r["recall"] for r in rs]), fmt([r["estimated_rate"] for r in rs]),
                         fmt([r["t_max_error"] for r in rs]), fmt([r["relabelled_correct"] for r in rs], 100, 1),
                         fmt([r.get("downstream_accuracy") for r in rs], 100, 1),
                         fmt([r["seconds"] for r in rs], 1, 0)])
    return markdown_table(head, rows), done, missing


FULL_TRAIN = 60000  # Fashion-MNIST's training split


def subset_reason(s: Settings, train_recs: list[dict[str, Any]], wall_s: float, workers: int, tasks: int) -> str:
    """Why the subset, from this run's own timings: the training speed its K-fold CV reached, and
    what the full training set would cost at that speed."""
    k = s.folds_main
    # K-fold CV trains K models on (K - 1) / K of the images each: (K - 1) N image passes per epoch
    rates = [(k - 1) * s.subset * s.epochs / r["seconds"][f"cv{k}"] for r in train_recs if f"cv{k}" in r["seconds"]]
    if not rates:
        return f"Why a {s.subset}-image subset: no training phase finished in this run, so no speed was measured."
    rate = float(np.median(rates))
    # per (setting, seed), passes that grow with N: both CVs and the downstream models (DM and the
    # teachers train on the 100 synthetic images whatever N is)
    passes = s.epochs * FULL_TRAIN * ((k - 1) + (s.folds_cheap - 1) + len(DOWNSTREAM_ROUTES))
    hours = (tasks + 1) * passes / rate / max(workers, 1) / 3600
    return (f"Why a {s.subset}-image subset, {s.epochs} epochs and width {s.width}: measured in this run, a 1-thread "
            f"ConvNet-3 (width {s.width}, DSA, batch {s.batch_size}) trained at {rate:.0f} images/s per process "
            f"({min(rates):.0f}-{max(rates):.0f} over the {len(rates)} training phases; {1e3 / rate:.2f} ms per image). "
            f"On the full {FULL_TRAIN:,}-image training set the {k}- and {s.folds_cheap}-fold CVs and the "
            f"{len(DOWNSTREAM_ROUTES)} downstream models take {passes / 1e6:.1f}M image passes per (setting, seed), "
            f"about {hours:.1f} h for the {tasks} settings x seeds and the development setting on {workers} "
            f"processes at that speed, against {wall_s / 60:.0f} min for this run.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny settings, one noise and seed; a smoke test")
    ap.add_argument("--workers", type=int, default=2, help="processes (1 torch thread each)")
    ap.add_argument("--deadline", default=None, help="UTC HH:MM after which no new task starts")
    ap.add_argument("--out", default=None, help="records (default: a fresh runs/bench-label-issues-<time>)")
    ap.add_argument("--table-only", action="store_true", help="rebuild the table from --out's records of this code")
    args = ap.parse_args()
    require_cleanlab()
    s = Settings()
    noises = ROW_NOISES
    if args.quick:
        s = replace(s, subset=300, seeds=(0,), dm_iterations=2, epochs=2, teachers=2)
        noises = ("symmetric:0.4",)
    out = Path(args.out or f"runs/bench-label-issues-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    os.environ["DDLNL_BENCH_CODE"] = code_version()
    t0 = time.time()
    if not args.table_only:
        tasks = [(n, seed) for n in noises for seed in s.seeds]
        shards = [tasks[i::args.workers] for i in range(args.workers)]
        procs = [mp.get_context("spawn").Process(target=dev_worker if i == 0 else worker,
                                                 args=((s, shards[i], out, args.deadline, i),))
                 for i in range(args.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    body, done, missing = build_table(replace(s, seeds=s.seeds), out)
    print(body)
    choice = json.loads((out / "dev-choice.json").read_text())
    train_recs = [json.loads(p.read_text()) for p in out.glob("*/train.json")]
    loads = [r["load1"] for r in train_recs]
    notes = f"""Fashion-MNIST, stratified {s.subset}-image training subset per noise seed, full 10k clean test set; symmetric = flip to a uniformly chosen other class, asymmetric = the GCE map (overall rate about half the nominal one). Code version {run_code_version()}; records in `{out}` (keys: code version + every setting), all computed in this run ({(time.time() - t0) / 60:.0f} min wall, {args.workers} processes x 1 torch thread; load average 1 min at the end of each training phase: {min(loads) if loads else 0:.1f}-{max(loads) if loads else 0:.1f} on a 2-core machine shared with other jobs).

**One recipe for every model that scores labels**: ConvNet-3 width {s.width}, {s.epochs} epochs, batch {s.batch_size}, SGD lr {s.lr} (x0.1 at half), DSA augmentation, 1 thread. ddlnl: DM IPC {s.ipc} ({s.dm_iterations} iterations, {s.dm_batch_real} real images per class), {s.teachers} teachers trained on the {10 * s.ipc} synthetic images only; noise estimate from anchor points; posterior quality; flags = the estimated number of wrong labels per given class. cleanlab {require_cleanlab().__version__}: K-fold cross-validation of the same recipe on the noisy labels, `find_label_issues` (prune_by_noise_rate), self-confidence for AUROC, `estimate_py_and_noise_matrices_from_probabilities` for the rate and T (its noise_matrix transposed to T[i, j] = P(noisy = j | true = i)). The vote offered to cleanlab: within each held-out fold, the {max(VOTE_KS)} nearest samples in that fold model's feature space vote with their given labels; cleanlab's pred_probs = {choice['cleanlab_vote_weight']} x CV probabilities + {1 - choice['cleanlab_vote_weight']:.1f} x vote.

**Settings chosen on the development setting** ({DEV[0]}, noise seed {DEV[1]}; no row uses that seed), before any row was scored: anchor fraction {choice['anchor_fraction']} (of {ANCHOR_FRACTIONS}, smallest |estimate - realized|: {choice['dev_rate_errors']}), vote k = {choice['neighbours']} and teacher weight {choice['teacher_weight']} (of k in {VOTE_KS} x w in {TEACHER_WEIGHTS}, best AUROC: {json.dumps(choice['dev_auroc_grid'])}), cleanlab's vote weight {choice['cleanlab_vote_weight']} (of {CLEANLAB_VOTE_WEIGHTS}, best AUROC: {choice['dev_cleanlab_vote_auroc']}).

Columns: mean ± std over noise seeds {list(s.seeds)} (the seeds column says how many finished). AUROC of 1 - quality against the true is_noisy mask (threshold-free); precision/recall of each route's own flags; est. rate vs the realized rate in the first column; labels correct after relabelling flagged samples with the suggested label; downstream: one model per seed (the recipe above) trained on the relabelled labels, clean-test accuracy at the end of training. Wall s: the route's own time (DM + teachers + scoring; CV training + cleanlab), measured with 1 thread per process under the load above, so compare within a row group.

{subset_reason(s, train_recs, time.time() - t0, args.workers, len(done))}

Done: {', '.join(done) or 'none'}. Missing (not started before the deadline): {', '.join(missing) or 'none'}."""
    target = (out / "label_issues.md") if args.quick else RESULTS / "label_issues.md"
    write_result(target, "Label issues: ddlnl (distilled teachers) vs cleanlab (cross-validation), one recipe", body,
                 notes)
    say(f"written {target}")


if __name__ == "__main__":
    main()
