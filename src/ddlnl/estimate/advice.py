"""IPC advice from the estimate and the tried IPCs, and the text ``ddlnl estimate`` prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import UserError

from .bounds import RateBound, _check_sizes, ipc_upper_bound, noise_rate_lower_bound


# ---------------------------------------------------------------------------------------------
# IPC advice
# ---------------------------------------------------------------------------------------------


def max_valid_rate(num_classes: int) -> float:
    """The upper end of the valid noise-rate range, ``(K - 1) / K``.

    At that rate symmetric noise makes the given label independent of the true class (every label
    equally likely), so no estimate or advice can rest on a larger rate; ddlnl's own symmetric
    noise refuses ``rate >= (K - 1) / K`` for the same reason.
    """
    if int(num_classes) < 2:
        raise UserError(f"need C >= 2 classes, got {num_classes}")
    return (int(num_classes) - 1) / int(num_classes)


@dataclass(frozen=True)
class IPCAdvice:
    """IPC advice and the numbers it rests on.

    Attributes:
        train_size, num_classes: ``|S|`` and ``C``.
        direct_rate: the direct (anchor-point) noise-rate estimate, or None.
        bound: the corollary's lower bound from accuracy-vs-IPC results, or None.
        bound_used: whether the bound entered the rate (see :func:`advise_ipc`).
        bound_note: why the bound was not used ("" when it was or there is none).
        noise_rate: the rate the advice uses: ``max(direct_rate, bound)`` over the usable ones,
            clipped into ``[0, (C - 1) / C]``.
        clipped: ``"upper"`` / ``"lower"`` when that clip changed the rate, else None.
        ipc_max: ``floor(|S| (1 - noise_rate) / C)``, at least 1.
        tried: ``(ipc, accuracy)`` results the advice saw (may be empty).
        random_tried: ``(ipc, accuracy)`` of random real subsets, if known.
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
    random_tried: tuple[tuple[int, float], ...] = ()
    bound_used: bool = False
    bound_note: str = ""
    clipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"train_size": self.train_size, "num_classes": self.num_classes,
                "direct_rate": self.direct_rate,
                "bound": None if self.bound is None else vars(self.bound).copy(),
                "bound_used": self.bound_used, "bound_note": self.bound_note,
                "noise_rate": self.noise_rate, "clipped": self.clipped,
                "valid_range": [0.0, max_valid_rate(self.num_classes)], "ipc_max": self.ipc_max,
                "tried": [list(t) for t in self.tried], "random_tried": [list(t) for t in self.random_tried],
                "best_tried": self.best_tried, "baseline_accuracy": self.baseline_accuracy}


def _bound_refuted(bound: RateBound, random_tried: Sequence[tuple[int, float]], baseline_accuracy: float,
                   num_classes: int) -> str:
    """Why the corollary's bound says nothing about this run ("" if nothing refutes it)."""
    top = max_valid_rate(num_classes)
    reached = [(i, a) for i, a in random_tried if a >= baseline_accuracy]
    if reached:
        # The corollary assumes the full noisy set is worth its |S|(1 - tau) clean samples. A random
        # subset of C*IPC noisy images that matches it shows the baseline is worth no more than that
        # subset (a baseline trained to convergence memorises its wrong labels), so reaching the
        # baseline is no evidence about tau.
        i, a = min(reached)
        return (f"not used: a random subset at IPC {i} also reaches the baseline ({100 * a:.2f}% >= "
                f"{100 * baseline_accuracy:.2f}%), so the baseline is not worth its |S|(1 - tau) clean "
                "samples, which the corollary assumes")
    if bound.lower_bound >= top:
        return (f"not used: {bound.lower_bound:.3f} is not below the valid range's upper end "
                f"(C-1)/C = {top:.3f}, so the corollary's premises fail here")
    return ""


def advise_ipc(train_size: int, num_classes: int, *, direct_rate: float | None = None,
               results: Sequence[tuple[int, float]] = (),
               baseline_accuracy: float | None = None,
               random_results: Sequence[tuple[int, float]] = ()) -> IPCAdvice:
    """Combine the direct noise-rate estimate with the corollaries into IPC advice.

    The rate used is the direct estimate, raised to the corollary's lower bound when results over
    IPC show one (``tau >= 1 - C * IPC / |S|``) and nothing in the run refutes the corollary's
    premise (a random real subset that also reaches the baseline does: then the baseline is not
    worth its clean samples; so does a bound at or above the valid range). The rate is kept in
    the valid range ``[0, (C - 1) / C]`` (:func:`max_valid_rate`) and the advice says which end it
    was clipped to. The advice is the IPC upper bound ``|S| (1 - tau) / C`` at that rate, and, among
    IPCs already tried, the most accurate one within the bound.

    Args:
        results: ``(ipc, accuracy)`` of distilled sets.
        random_results: ``(ipc, accuracy)`` of random real subsets with the same noisy labels.

    Raises:
        UserError: neither a direct rate nor results with a baseline to bound it.
    """
    _check_sizes(train_size, num_classes)
    tried = tuple(sorted((int(i), float(a)) for i, a in results))
    random_tried = tuple(sorted((int(i), float(a)) for i, a in random_results))
    bound, note = None, ""
    if tried and baseline_accuracy is not None:
        bound = noise_rate_lower_bound(tried, baseline_accuracy, train_size, num_classes)
        if bound is not None:
            note = _bound_refuted(bound, random_tried, float(baseline_accuracy), num_classes)
    use_bound = bound is not None and not note
    candidates = [r for r in (direct_rate, bound.lower_bound if use_bound else None) if r is not None]
    if not candidates:
        raise UserError("no noise-rate information: give a direct estimate, or results over IPC that "
                        "reach the full-noisy baseline")
    raw = max(candidates)
    top = max_valid_rate(num_classes)
    rate = min(max(raw, 0.0), top)
    clipped = "upper" if raw > top else ("lower" if raw < 0.0 else None)
    # The epsilon keeps 1 - C*IPC/|S| -> |S|(1 - tau)/C from losing an image to rounding (49.999...).
    ipc_max = max(1, int(math.floor(ipc_upper_bound(train_size, num_classes, rate) + 1e-9)))
    within = [(i, a) for i, a in tried if i <= ipc_max]
    best = max(within, key=lambda t: (t[1], -t[0]))[0] if within else None
    return IPCAdvice(train_size=int(train_size), num_classes=int(num_classes), direct_rate=direct_rate,
                     bound=bound, noise_rate=rate, ipc_max=ipc_max, tried=tried, best_tried=best,
                     baseline_accuracy=baseline_accuracy, random_tried=random_tried, bound_used=use_bound,
                     bound_note=note, clipped=clipped)


def advice_text(advice: IPCAdvice) -> str:
    """Human-readable lines: the estimates, the bound, and the advice with its arithmetic."""
    s, c = advice.train_size, advice.num_classes
    top = max_valid_rate(c)
    lines = []
    if advice.direct_rate is not None:
        lines.append(f"direct estimate of the noise rate (teachers trained on the synthetic set, anchor points): "
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
                         f"tau >= 1 - {c}*{b.ipc}/{s} = {b.lower_bound:.3f}"
                         + (f"; {advice.bound_note}" if advice.bound_note else ""))
    clip = ""
    if advice.clipped == "upper":
        clip = (f" (clipped to the upper end of the valid range [0, (C-1)/C = {top:.3f}]: at that rate the "
                "labels carry no information about the class)")
    elif advice.clipped == "lower":
        clip = " (clipped to the lower end of the valid range, 0)"
    lines.append(f"noise rate used: {advice.noise_rate:.3f}{clip}; IPC <= |S|(1 - tau)/C = "
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
        random_tried: ``(ipc, accuracy)`` of the run's random real subsets (mean accuracy).
        noise_file: the run's saved noisy labels (checked against the job's), or "".
    """

    job: Any
    tried: tuple[tuple[int, float], ...]
    baseline_accuracy: float | None
    train_size: int
    num_classes: int
    synthetic: dict[int, str] = field(default_factory=dict)
    run_dir: str = ""
    random_tried: tuple[tuple[int, float], ...] = ()
    noise_file: str = ""


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
