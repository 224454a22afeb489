"""Noise-rate and IPC estimates: the study's two corollaries, and a direct estimate from a synthetic set.

Conventions (DESIGN.md): ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1; the noise rate is
the fraction of training labels that differ from the true class.

Three pieces:

* :func:`ipc_upper_bound` and :func:`noise_rate_lower_bound`: the study's corollaries, pure
  arithmetic on ``|S|`` (training-set size), ``C`` (classes), ``tau`` (noise rate) and IPC.
* :func:`estimate_noise`: a direct estimate of ``T`` and of the noise rate from predicted class
  probabilities of models trained **only on a synthetic set** (they never saw a noisy label),
  scoring the given training labels. Estimator: maximum likelihood of a latent-class model, fitted
  by EM (below).
* :func:`advise_ipc`: IPC advice that combines both, with the numbers it rests on
  (:func:`advice_text` prints them).

The direct estimator
--------------------
Model: the true class of sample ``n`` is drawn from the teachers' predictive distribution
``p_n`` (sharpened or flattened by one temperature ``t``: ``p_n^(1/t)``, renormalised); the given
label is then drawn from row ``z_n`` of ``T`` (class-conditional noise)::

    P(y_n | x_n) = sum_j p_n,t[j] * T[j, y_n]

For a fixed ``t`` the log-likelihood is a sum of logs of functions linear in ``T``, hence concave,
and EM (E: ``R[n, j] ∝ p_n,t[j] T[j, y_n]``; M: ``T[j, k] = sum_{n: y_n = k} R[n, j] / sum_n
R[n, j]``) converges to its global maximum. The temperature is chosen by maximising the same
marginal likelihood of the given labels (a 1-D search), which is what calibrates teachers that
are over-confident after hundreds of epochs on a few synthetic images. The estimated noise rate is
the expected fraction of wrong labels under the fitted model, ``mean_n (1 - R[n, y_n])``, which
equals ``sum_i pi_i (1 - T[i, i])`` with ``pi_i = mean_n R[n, i]``.

Assumptions, and what breaks them: (1) noise is class-conditional (instance-dependent noise is
averaged into ``T``); (2) the teachers' prediction for a sample is independent of whether that
sample's label was flipped, given its true class -- true by construction, since the teachers were
trained on the synthetic set and not on the labels being scored; (3) the teachers are calibrated up
to one temperature. Where (3) fails, confident teacher mistakes that agree across samples (e.g.
shirt vs T-shirt) are partly counted as label noise, so with weak teachers the estimate is biased
towards the teachers' error rate. With a perfect teacher (one-hot ``p_n`` equal to the true class)
the estimate is exactly the realized transition matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import UserError

__all__ = [
    "ipc_upper_bound",
    "RateBound",
    "noise_rate_lower_bound",
    "NoiseEstimate",
    "estimate_noise",
    "sharpen",
    "IPCAdvice",
    "advise_ipc",
    "advice_text",
    "RunRecord",
    "read_run",
    "run_estimate",
    "estimate_text",
]

# Probabilities are clipped here before taking logs: a teacher's softmax can underflow to 0 and a
# one-hot "perfect teacher" is exactly 0 off its class; 1e-12 keeps EM finite without moving mass.
_PROB_FLOOR = 1e-12
# Temperatures searched for the teachers' calibration (log-spaced, then refined by golden section).
_TEMPERATURE_GRID = tuple(float(t) for t in np.exp(np.linspace(math.log(0.02), math.log(20.0), 16)))


# ---------------------------------------------------------------------------------------------
# The study's corollaries
# ---------------------------------------------------------------------------------------------


def _check_sizes(train_size: int, num_classes: int) -> None:
    if int(train_size) < 1 or int(num_classes) < 2:
        raise UserError(f"need |S| >= 1 training samples and C >= 2 classes, got |S|={train_size}, "
                        f"C={num_classes}")


def ipc_upper_bound(train_size: int, num_classes: int, noise_rate: float) -> float:
    """The study's IPC bound: ``IPC <= |S| (1 - tau) / C``.

    Assumptions: only the ``|S| (1 - tau)`` correctly labelled samples carry information about
    the clean classes, and a distilled image summarises at least one of them; so a synthetic set
    with more than ``|S| (1 - tau)`` images in total (``C`` classes x IPC) must spend the excess on
    the noise. Balanced classes are assumed (the bound is per class on average).

    Args:
        train_size: ``|S|``, the number of (noisy) training samples distilled.
        num_classes: ``C``.
        noise_rate: ``tau`` in ``[0, 1]``, fraction of wrong labels.

    Returns:
        The largest IPC (a float; floor it for a count) that the bound allows.

    Example: ``ipc_upper_bound(60000, 10, 0.6) == 2400.0``.
    """
    _check_sizes(train_size, num_classes)
    if not 0.0 <= float(noise_rate) <= 1.0:
        raise UserError(f"noise rate must lie in [0, 1], got {noise_rate}")
    return float(train_size) * (1.0 - float(noise_rate)) / float(num_classes)


@dataclass(frozen=True)
class RateBound:
    """The noise-rate lower bound read from accuracy-vs-IPC results.

    Attributes:
        ipc: the smallest IPC whose accuracy reaches the full-noisy baseline.
        accuracy: its accuracy.
        baseline_accuracy: the full-noisy baseline it was compared with.
        lower_bound: ``max(0, 1 - C * ipc / |S|)``.
    """

    ipc: int
    accuracy: float
    baseline_accuracy: float
    lower_bound: float


def noise_rate_lower_bound(results: Sequence[tuple[int, float]], baseline_accuracy: float,
                           train_size: int, num_classes: int) -> RateBound | None:
    """The study's noise-rate bound: ``tau >= 1 - C * IPC / |S|`` at the smallest IPC that
    reaches the full-noisy baseline.

    Assumptions: the full noisy set is worth its ``|S| (1 - tau)`` clean samples (mislabelled
    samples add nothing), and ``C * IPC`` distilled images are worth at least as many clean real
    images. If ``C * IPC`` synthetic images already match the full noisy set, then
    ``|S| (1 - tau) <= C * IPC``, i.e. ``tau >= 1 - C * IPC / |S|``. Only the *smallest* such IPC
    gives the tightest bound. The bound is clipped at 0 (a vacuous bound says nothing).

    Args:
        results: ``(ipc, accuracy)`` pairs (e.g. one method's cells of a run; any order; accuracy
            as a fraction, like the baseline).
        baseline_accuracy: accuracy of the same architecture trained on the full noisy set.
        train_size: ``|S|``.
        num_classes: ``C``.

    Returns:
        :class:`RateBound`, or ``None`` when no IPC reaches the baseline (then the corollary gives
        no bound).

    Example: ``noise_rate_lower_bound([(10, 0.7), (50, 0.86)], 0.85, 5000, 10).lower_bound == 0.9``.
    """
    _check_sizes(train_size, num_classes)
    reached = sorted((int(ipc), float(acc)) for ipc, acc in results if float(acc) >= float(baseline_accuracy))
    if not reached:
        return None
    ipc, acc = reached[0]
    bound = max(0.0, 1.0 - float(num_classes) * ipc / float(train_size))
    return RateBound(ipc=ipc, accuracy=acc, baseline_accuracy=float(baseline_accuracy), lower_bound=bound)


# ---------------------------------------------------------------------------------------------
# Direct estimate (EM on a latent-class model with the teachers' prediction as prior)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseEstimate:
    """A fitted noise model.

    Attributes:
        transition: ``K x K`` float64, ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1 (a class
            the model gives no mass has an identity row).
        noise_rate: expected fraction of wrong labels, ``mean_n (1 - posterior[n, y_n])``.
        class_prior: ``K`` float64, estimated ``P(true = i)``.
        posterior: ``N x K`` float64, ``P(true = j | x_n, y_n)`` under the fitted model.
        temperature: the teachers' calibration temperature (``p^(1/t)``); 1 = as predicted.
        log_likelihood: ``sum_n log P(y_n | x_n)`` at the optimum.
        iterations: EM iterations at the chosen temperature.
        method: ``"em"``.
    """

    transition: np.ndarray
    noise_rate: float
    class_prior: np.ndarray
    posterior: np.ndarray = field(repr=False)
    temperature: float
    log_likelihood: float
    iterations: int
    method: str = "em"

    def expected_wrong_per_class(self, labels: np.ndarray) -> np.ndarray:
        """``K`` floats: for each given class ``k``, the expected number of wrong labels among the
        samples labelled ``k``, ``sum_{n: y_n = k} (1 - posterior[n, k])``."""
        labels = np.asarray(labels, dtype=np.int64)
        k = self.transition.shape[0]
        wrong = 1.0 - self.posterior[np.arange(len(labels)), labels]
        return np.bincount(labels, weights=wrong, minlength=k)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no per-sample posterior)."""
        return {"method": self.method, "noise_rate": self.noise_rate, "temperature": self.temperature,
                "log_likelihood": self.log_likelihood, "iterations": self.iterations,
                "transition": self.transition.tolist(), "class_prior": self.class_prior.tolist(),
                "convention": "T[i, j] = P(noisy = j | true = i)"}


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of ``probs`` raised to ``1 / temperature`` and renormalised (``t < 1`` sharpens).

    Args:
        probs: ``N x K`` non-negative rows (probabilities).
        temperature: ``> 0``.
    """
    logp = np.log(np.clip(probs, _PROB_FLOOR, 1.0)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def _em(prior: np.ndarray, labels: np.ndarray, num_classes: int, transition: np.ndarray,
        max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, float, int]:
    """EM for ``T`` with fixed per-sample priors; returns ``(T, posterior, loglik, iterations)``."""
    t = transition.copy()
    onehot = np.eye(num_classes)[labels]  # N x K, so the M-step is one matrix product
    previous = -np.inf
    loglik = -np.inf
    posterior = prior
    it = 0
    for it in range(1, max_iter + 1):
        joint = prior * t[:, labels].T  # N x K: p_n[j] * T[j, y_n]
        evidence = np.maximum(joint.sum(axis=1), 1e-300)
        posterior = joint / evidence[:, None]
        loglik = float(np.log(evidence).sum())
        counts = posterior.T @ onehot  # expected (true, given) counts
        mass = counts.sum(axis=1, keepdims=True)
        # A class with no posterior mass has no evidence: keep an identity row (rows must sum to 1).
        t = np.where(mass > 0, counts / np.maximum(mass, 1e-300), np.eye(num_classes))
        if loglik - previous <= tol * abs(loglik):
            break
        previous = loglik
    return t, posterior, loglik, it


def estimate_noise(pred_probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None, *,
                   temperature: float | None = None, max_iter: int = 500,
                   tol: float = 1e-7) -> NoiseEstimate:
    """Estimate ``T`` and the noise rate from teachers' probabilities and the given labels (EM).

    See the module docstring for the model, the estimator and its assumptions.

    Args:
        pred_probs: ``N x K`` probabilities of the true class from models that never saw these
            labels (e.g. trained on a synthetic set); rows sum to 1.
        labels: ``N`` given (possibly noisy) labels, ``int64`` in ``[0, K)``.
        num_classes: ``K`` (default: ``pred_probs.shape[1]``).
        temperature: fix the teachers' temperature instead of fitting it by maximum likelihood.
        max_iter: EM iterations per temperature.
        tol: EM stops when the log-likelihood improves by less than ``tol * |log-likelihood|``.

    Returns:
        :class:`NoiseEstimate` (``T[i, j] = P(noisy = j | true = i)``).
    """
    probs = np.asarray(pred_probs, dtype=np.float64)
    y = np.asarray(labels)
    if probs.ndim != 2 or y.ndim != 1 or probs.shape[0] != y.shape[0]:
        raise UserError(f"pred_probs must be N x K and labels N, got {probs.shape} and {y.shape}")
    k = int(num_classes or probs.shape[1])
    if probs.shape[1] != k:
        raise UserError(f"pred_probs has {probs.shape[1]} columns, expected K={k}")
    if y.size == 0:
        raise UserError("no labels to estimate noise from")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
        raise UserError(f"labels must be integers in [0, {k - 1}]")
    y = y.astype(np.int64)
    start = 0.5 * np.eye(k) + 0.5 / k  # mostly-clean start; the objective is concave in T anyway

    def fit(temp: float, init: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
        return _em(sharpen(probs, temp), y, k, init, max_iter, tol)

    if temperature is not None:
        if not temperature > 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        best_t = float(temperature)
        t_mat, post, ll, its = fit(best_t, start)
    else:
        best_t, best = _fit_temperature(fit, start)
        t_mat, post, ll, its = best
    prior = post.mean(axis=0)
    rate = float(1.0 - post[np.arange(len(y)), y].mean())
    return NoiseEstimate(transition=t_mat, noise_rate=rate, class_prior=prior, posterior=post,
                         temperature=best_t, log_likelihood=ll, iterations=its)


def _fit_temperature(fit, start: np.ndarray):
    """Grid then golden-section search of the temperature maximising the marginal likelihood."""
    results = {}
    init = start
    for temp in _TEMPERATURE_GRID:  # warm start from the neighbouring temperature's T
        results[temp] = fit(temp, init)
        init = results[temp][0]
    temps = list(_TEMPERATURE_GRID)
    i = int(np.argmax([results[t][2] for t in temps]))
    lo, hi = math.log(temps[max(i - 1, 0)]), math.log(temps[min(i + 1, len(temps) - 1)])
    golden = (math.sqrt(5) - 1) / 2
    # Golden section on log t within the bracket around the best grid point (the profile
    # likelihood is smooth and, in practice, unimodal in log t).
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = fit(math.exp(a), results[temps[i]][0]), fit(math.exp(b), results[temps[i]][0])
    for _ in range(8):
        if fa[2] >= fb[2]:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = fit(math.exp(a), fb[0])
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = fit(math.exp(b), fa[0])
    candidates = [(results[temps[i]], temps[i]), (fa, math.exp(a)), (fb, math.exp(b))]
    best, best_t = max(candidates, key=lambda c: c[0][2])
    return float(best_t), best


# ---------------------------------------------------------------------------------------------
# IPC advice
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IPCAdvice:
    """IPC advice and the numbers it rests on.

    Attributes:
        train_size, num_classes: ``|S|`` and ``C``.
        direct_rate: the direct (EM) noise-rate estimate, or None.
        bound: the corollary's lower bound from accuracy-vs-IPC results, or None.
        noise_rate: the rate the advice uses: ``max(direct_rate, bound)`` (the bound is a lower
            bound on the rate, so an estimate below it is raised to it).
        ipc_max: ``floor(|S| (1 - noise_rate) / C)``, at least 1.
        tried: ``(ipc, accuracy)`` results the advice saw (may be empty).
        best_tried: the IPC with the best accuracy among the tried ones within ``ipc_max``.
        baseline_accuracy: the full-noisy baseline, if known.
    """

    train_size: int
    num_classes: int
    direct_rate: float | None
    bound: RateBound | None
    noise_rate: float
    ipc_max: int
    tried: tuple[tuple[int, float], ...] = ()
    best_tried: int | None = None
    baseline_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"train_size": self.train_size, "num_classes": self.num_classes,
                "direct_rate": self.direct_rate,
                "bound": None if self.bound is None else vars(self.bound).copy(),
                "noise_rate": self.noise_rate, "ipc_max": self.ipc_max,
                "tried": [list(t) for t in self.tried], "best_tried": self.best_tried,
                "baseline_accuracy": self.baseline_accuracy}


def advise_ipc(train_size: int, num_classes: int, *, direct_rate: float | None = None,
               results: Sequence[tuple[int, float]] = (),
               baseline_accuracy: float | None = None) -> IPCAdvice:
    """Combine the direct noise-rate estimate with the corollaries into IPC advice.

    The rate used is the direct estimate, raised to the corollary's lower bound when results over
    IPC show one (``tau >= 1 - C * IPC / |S|``); the advice is the IPC upper bound
    ``|S| (1 - tau) / C`` at that rate, and, among IPCs already tried, the most accurate one within
    the bound.

    Raises:
        UserError: neither a direct rate nor results with a baseline to bound it.
    """
    _check_sizes(train_size, num_classes)
    tried = tuple(sorted((int(i), float(a)) for i, a in results))
    bound = None
    if tried and baseline_accuracy is not None:
        bound = noise_rate_lower_bound(tried, baseline_accuracy, train_size, num_classes)
    candidates = [r for r in (direct_rate, None if bound is None else bound.lower_bound) if r is not None]
    if not candidates:
        raise UserError("no noise-rate information: give a direct estimate, or results over IPC that "
                        "reach the full-noisy baseline")
    rate = min(1.0, max(candidates))
    # The epsilon keeps 1 - C*IPC/|S| -> |S|(1 - tau)/C from losing an image to rounding (49.999...).
    ipc_max = max(1, int(math.floor(ipc_upper_bound(train_size, num_classes, rate) + 1e-9)))
    within = [(i, a) for i, a in tried if i <= ipc_max]
    best = max(within, key=lambda t: (t[1], -t[0]))[0] if within else None
    return IPCAdvice(train_size=int(train_size), num_classes=int(num_classes), direct_rate=direct_rate,
                     bound=bound, noise_rate=rate, ipc_max=ipc_max, tried=tried, best_tried=best,
                     baseline_accuracy=baseline_accuracy)


def advice_text(advice: IPCAdvice) -> str:
    """Human-readable lines: the estimates, the bound, and the advice with its arithmetic."""
    s, c = advice.train_size, advice.num_classes
    lines = []
    if advice.direct_rate is not None:
        lines.append(f"direct estimate of the noise rate (teachers trained on the synthetic set, EM): "
                     f"{advice.direct_rate:.3f}")
    if advice.tried and advice.baseline_accuracy is not None:
        tried = ", ".join(f"IPC {i}: {100 * a:.2f}%" for i, a in advice.tried)
        lines.append(f"results over IPC: {tried}; full-noisy baseline {100 * advice.baseline_accuracy:.2f}%")
        if advice.bound is None:
            lines.append("corollary bound tau >= 1 - C*IPC/|S|: no IPC reached the baseline, so no bound")
        else:
            b = advice.bound
            lines.append(f"corollary bound: IPC {b.ipc} is the smallest reaching the baseline "
                         f"({100 * b.accuracy:.2f}% >= {100 * b.baseline_accuracy:.2f}%), so "
                         f"tau >= 1 - {c}*{b.ipc}/{s} = {b.lower_bound:.3f}")
    lines.append(f"noise rate used: {advice.noise_rate:.3f}; IPC <= |S|(1 - tau)/C = "
                 f"{s}*(1 - {advice.noise_rate:.3f})/{c} = {ipc_upper_bound(s, c, advice.noise_rate):.1f}")
    advice_line = f"advice: distil at IPC <= {advice.ipc_max}"
    if advice.best_tried is not None:
        advice_line += f"; among the IPCs tried within it, IPC {advice.best_tried} was the most accurate"
    lines.append(advice_line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The `ddlnl estimate` job (used by the CLI)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """What :func:`advise_ipc` needs from a ``ddlnl run`` directory.

    Attributes:
        job: the run's :class:`ddlnl.pipeline.JobConfig`.
        tried: ``(ipc, accuracy)``, per IPC the best distiller's mean accuracy (``random`` excluded).
        baseline_accuracy: the converged full-noisy baseline's mean accuracy, or None.
        train_size, num_classes: ``|S|`` and ``C`` of the noisy training set.
        synthetic: DM synthetic-set files of the run by IPC.
        run_dir: the directory read.
    """

    job: Any
    tried: tuple[tuple[int, float], ...]
    baseline_accuracy: float | None
    train_size: int
    num_classes: int
    synthetic: dict[int, str] = field(default_factory=dict)
    run_dir: str = ""


def read_run(run_dir: str | Path) -> RunRecord:
    """Read a (finished or partial) ``ddlnl run`` directory: config, noise, baseline and cells.

    Raises:
        UserError: not a run directory, or one without a noise record.
    """
    import json

    from .pipeline import JobConfig

    run = Path(run_dir)
    config, noise = run / "config.json", run / "noise.json"
    if not config.is_file() or not noise.is_file():
        raise UserError(f"{run} is not a ddlnl run directory (no config.json / noise.json): give the --out of "
                        "`ddlnl run`")
    try:
        stored = json.loads(config.read_text())
        # One resolved configuration ("resolved"), or every configuration run in this directory
        # ("runs"; they share the data, which is all that is read here): take the latest.
        entry = stored["resolved"] if "resolved" in stored else stored["runs"][-1]
        job_dict = dict(entry["job"])
        noise_rec = json.loads(noise.read_text())
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise UserError(f"{run}: unreadable run record ({type(exc).__name__}); re-run `ddlnl run`") from None
    for key in ("methods", "ipcs"):
        if key in job_dict:
            job_dict[key] = tuple(job_dict[key])
    job = JobConfig(**{k: v for k, v in job_dict.items() if k in JobConfig.__dataclass_fields__})
    cells = [json.loads(p.read_text()) for p in sorted((run / "cells").glob("*.json"))]
    best: dict[int, float] = {}
    for c in cells:
        if c.get("method") != "random" and "mean" in c:
            best[int(c["ipc"])] = max(best.get(int(c["ipc"]), 0.0), float(c["mean"]))
    baseline = None
    if (run / "baseline.json").is_file():
        baseline = float(json.loads((run / "baseline.json").read_text())["mean"])
    synthetic = {}
    for p in sorted((run / "synthetic").glob("dm-ipc*.safetensors")):
        try:
            synthetic[int(p.stem.split("ipc")[-1])] = str(p)
        except ValueError:
            continue
    return RunRecord(job=job, tried=tuple(sorted(best.items())), baseline_accuracy=baseline,
                     train_size=int(noise_rec["train_size"]), num_classes=int(noise_rec["num_classes"]),
                     synthetic=synthetic, run_dir=str(run))


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
    import time

    import torch

    from .label_issues import obtain_synthetic, teacher_outputs, train_teachers
    from .pipeline import log
    from .noise import load_noisy_labels
    from .pipeline import fit_to_images, prepare_data
    from .utils import atomic_write_json, derive_seed

    echo = echo or log
    job = resolved.job
    prepared = prepare_data(job)
    ds = prepared.dataset
    resolved = fit_to_images(resolved, ds.image_size)
    if record is not None and synthetic is None and record.synthetic:
        synthetic = record.synthetic[max(record.synthetic)]
    if record is not None:
        saved = Path(record.run_dir) / "noise.npz"
        if saved.is_file() and not torch.equal(load_noisy_labels(saved).noisy, prepared.noisy.noisy):
            raise UserError(f"{saved} differs from the labels this job makes: was the data changed since the run?")
    out_path = Path(out) if out is not None else None
    syn = obtain_synthetic(prepared, resolved, synthetic=synthetic, ipc=ipc, out=out_path, device=device,
                           show_progress=show_progress, echo=echo)
    t0 = time.perf_counter()
    models = train_teachers(syn, resolved.train, n_models, seed=derive_seed(job.seed, "estimate"), device=device,
                            show_progress=show_progress)
    teachers = teacher_outputs(models, ds.train.images, batch_size=resolved.train.eval_batch_size,
                               keep_features=False)
    labels = prepared.noisy.noisy.numpy()
    est = estimate_noise(teachers.probs, labels, ds.num_classes)
    seconds = time.perf_counter() - t0
    tried = record.tried if record is not None else ()
    base = record.baseline_accuracy if record is not None else None
    advice = advise_ipc(len(ds.train), ds.num_classes, direct_rate=est.noise_rate, results=tried,
                        baseline_accuracy=base)
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


def estimate_text(result: dict[str, Any]) -> str:
    """What ``ddlnl estimate`` prints."""
    est = result["estimate"]
    diag = ", ".join(f"{v:.2f}" for v in np.diag(np.asarray(est["transition"])))
    lines = [result["advice_text"],
             f"estimated T[i, i] = P(noisy = i | true = i): {diag}  (teacher temperature {est['temperature']:.2f}, "
             f"{result['teachers']} teachers on {result['synthetic_size']} synthetic images, {result['seconds']:.0f}s)"]
    known = result.get("known")
    if known:
        lines.append(f"known (noise injected here): realized rate {known['realized_rate']:.3f}; largest |T_est - T_realized| "
                     f"{known['max_abs_T_error']:.3f}")
    return "\n".join(lines)
