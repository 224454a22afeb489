"""Small shared pieces: device choice, explicit seeds, atomic writes, progress bars, code version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from .errors import UserError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> CUDA when present, else CPU; otherwise the named device (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but CUDA is not available: use --device cpu or auto")
    return dev


def derive_seed(seed: int, *keys: Any) -> int:
    """A child seed from a parent seed and any labels, stable across runs and machines.

    Used so that, e.g., evaluation run 3 of a cell gets the same seed whatever else ran before it.
    """
    text = json.dumps([int(seed), *[str(k) for k in keys]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``; sample on CPU and move, so results match across devices."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


@contextmanager
def _atomic_path(path: str | Path) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # fsync before rename so a crash never leaves a renamed-but-empty file.
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with _atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; it replaces ``path`` only if the block succeeds."""
    with _atomic_path(path) as tmp:
        yield tmp


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, unit: str = "it"):
    """A progress bar (rate and ETA) on stderr; silent when disabled or when stderr is not a TTY
    and ``DDLNL_PROGRESS`` is not set to 1."""
    from tqdm.auto import tqdm

    show = enabled and (sys.stderr.isatty() or os.environ.get("DDLNL_PROGRESS") == "1")
    return tqdm(iterable, total=total, desc=desc, disable=not show, unit=unit, leave=False,
                dynamic_ncols=True, file=sys.stderr)


def code_version() -> str:
    """Package version plus the git commit of the source tree when available."""
    from . import __version__

    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


CACHE_ENV = "DDLNL_CACHE"


def cache_root() -> Path:
    """Where shared artifacts (expert trajectories, pre-trained models, decoded datasets) are cached:
    ``$DDLNL_CACHE`` if set, else ``~/.cache/ddlnl``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/ddlnl").expanduser()


def json_key(obj: Any) -> str:
    """A 16-hex-digit SHA-256 of ``obj`` as sorted JSON (non-JSON values by ``str``): result and
    artifact keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 of tensors' dtypes, shapes and bytes: a content key for cached artifacts, so that
    anything trained on other images or other (noisy) labels can never be reused by mistake."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
