"""Claiming cells: exclusive-create lock files that survive on a shared filesystem; a lock names
its holder by host, pid and start time, so a dead worker's claim is detected."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..utils import pid_alive, process_start_time

from .records import Cell


# --------------------------------------------------------------------------------------------
# Claiming cells: exclusive-create lock files that survive on a shared filesystem.

def _lock_path(root: Path, cell: Cell, key: str) -> Path:
    return Path(root) / "locks" / f"{cell.name}__{key[:10]}.lock"


def _holder() -> dict[str, Any]:
    """What names this process in a lock: host, pid and the process's start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start_time(os.getpid()),
            "time": time.time()}


def _stale(lock: Path, stale_after: float) -> bool:
    """A lock whose holder is gone: on this host, its pid is dead or now names a process that
    started at another time (a reused pid); elsewhere, older than ``stale_after`` seconds."""
    try:
        info = json.loads(lock.read_text())
        if not isinstance(info, dict):
            raise ValueError("not a lock")
        pid = int(info.get("pid", -1))
        stamp = float(info.get("time", 0))
    except (OSError, ValueError, TypeError):
        # Being written right now (a holder writes its lock at once after creating it), damaged,
        # or unreadable: judge by age only.
        try:
            return time.time() - lock.stat().st_mtime > min(stale_after, 60.0)
        except OSError:
            return True
    if info.get("host") == socket.gethostname():
        if not pid_alive(pid):
            return True
        start = info.get("start")
        if start is not None and process_start_time(pid) not in (None, start):
            return True  # the pid now belongs to another process
    return time.time() - stamp > stale_after


STALE_AFTER = 6 * 3600  # seconds after which a lock whose worker cannot be checked counts as dead


def try_claim(root: Path, cell: Cell, key: str, stale_after: float = STALE_AFTER) -> bool:
    """Claim a cell for this process; False when another live worker holds it."""
    lock = _lock_path(root, cell, key)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if _stale(lock, stale_after):
                try:
                    # Rename first so that only one of several workers reclaiming it wins.
                    tomb = lock.with_suffix(f".stale.{os.getpid()}")
                    os.rename(lock, tomb)
                    tomb.unlink()
                except OSError:
                    return False
                continue
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(_holder(), fh)
        return True
    return False


def release(root: Path, cell: Cell, key: str) -> None:
    try:
        _lock_path(root, cell, key).unlink()
    except FileNotFoundError:
        pass
