"""Progress that reaches the user wherever the output goes: a terminal, a pipe, ``tee`` or a SLURM log.

On a terminal, long loops show tqdm bars (rate and ETA). Anywhere else a bar would print nothing
useful for minutes, so the same loops write a plain log line to stderr every
``DDLNL_PROGRESS_SECONDS`` seconds (default 30) instead: the whole job's position, then every
active loop from the outermost in, each with its count, rate and ETA::

    [ddlnl 06:31:02] cell 5/6 dm-ipc10 | evaluate dm run 2/3: 150/300 epoch (50%), 1.9 epoch/s, ETA 1m19s, loss=0.41

``DDLNL_PROGRESS`` chooses: ``auto`` (default: bars on a terminal, log lines otherwise), ``bar``,
``log`` or ``off`` (``1`` and ``0`` are accepted for ``bar`` and ``off``). Library functions show
progress only when their ``show_progress`` argument asks for it; ``--quiet`` turns it off.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

MODE_ENV = "DDLNL_PROGRESS"
SECONDS_ENV = "DDLNL_PROGRESS_SECONDS"
DEFAULT_SECONDS = 30.0

# What the whole job is doing ("cell 3/12 dm-ipc10"), set by the job runners.
_positions: list[str] = []
# Log-mode loops currently running, outermost first; one line shows them all.
_active: list["LogProgress"] = []
_last_line = [0.0]


def mode(enabled: bool = True) -> str:
    """``off``, ``bar`` or ``log`` for a loop that wants progress (``enabled``), from the environment."""
    if not enabled:
        return "off"
    value = os.environ.get(MODE_ENV, "auto").strip().lower()
    value = {"1": "bar", "0": "off", "": "auto", "none": "off", "false": "off", "true": "bar"}.get(value, value)
    if value not in {"auto", "bar", "log", "off"}:
        value = "auto"  # an unreadable setting must not break a run
    if value == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return value


def interval() -> float:
    """Seconds between log lines (``DDLNL_PROGRESS_SECONDS``, default 30; 0 = at every step)."""
    try:
        return max(0.0, float(os.environ.get(SECONDS_ENV, DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def fmt_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@contextmanager
def position(text: str) -> Iterator[None]:
    """Mark where the whole job is (e.g. ``"cell 3/12 dm-ipc10"``) for the log lines inside the block."""
    _positions.append(text)
    try:
        yield
    finally:
        _positions.remove(text)


def emit(text: str) -> None:
    """Write one progress line to stderr, stamped with the time."""
    print(f"[ddlnl {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class LogProgress:
    """A tqdm-like loop wrapper (iterate, ``update``, ``set_postfix``, ``close``) that writes log lines."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it") -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.postfix = ""
        self.start = time.perf_counter()
        self.closed = False
        _active.append(self)

    def describe(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            text = (f"{head}{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%), "
                    f"{rate:.3g} {self.unit}/s, ETA {fmt_duration(eta)}")
        else:
            text = f"{head}{self.n} {self.unit}, {rate:.3g} {self.unit}/s"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _tick(self) -> None:
        now = time.perf_counter()
        if now - _last_line[0] >= interval():
            _last_line[0] = now
            emit(" | ".join([*_positions, *(p.describe() for p in _active)]))

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.n += 1
                self._tick()
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._tick()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self in _active:
                _active.remove(self)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, unit: str = "it"):
    """A progress wrapper around ``iterable``: a tqdm bar, log lines or nothing (see :func:`mode`).

    Every return value supports iteration, ``update``, ``set_postfix`` and ``close``.
    """
    chosen = mode(enabled)
    if chosen == "log":
        return LogProgress(iterable, total=total, desc=desc, unit=unit)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=chosen == "off", unit=unit, leave=False,
                dynamic_ncols=True, file=sys.stderr)
