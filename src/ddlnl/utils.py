"""Small shared pieces: device choice, explicit seeds, atomic writes, progress bars, code version."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import socket
import tempfile
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from .errors import DamagedFile, UserError


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


TMP_SUFFIX = ".tmp"
# A temporary file whose writer cannot be checked (another host) is removed after this long.
STALE_TMP_AFTER = 24 * 3600


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (the CLI is single-threaded
    # when it writes, and worker threads never change it).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~_umask()


def _tmp_prefix(name: str) -> str:
    # host and pid in the name let a later run tell a dead writer's leftover from a live write.
    return f".{name}.{socket.gethostname()}.{os.getpid()}."


@contextmanager
def _atomic_path(path: str | Path) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode the user's umask asks for.
        os.chmod(tmp_path, file_mode())
        # fsync before rename so a crash never leaves a renamed-but-empty file.
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def clean_stale_tmp(folder: str | Path, *, older_than: float = STALE_TMP_AFTER,
                    echo: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the temporary files of atomic writes under ``folder`` (recursively) whose writer is
    gone: written on this host by a process that no longer exists, or older than ``older_than``
    seconds. A live writer's file is never touched. Returns the removed paths."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    host = socket.gethostname()
    now = time.time()
    for tmp in folder.rglob(f".*{TMP_SUFFIX}"):
        parts = tmp.name[:-len(TMP_SUFFIX)].rsplit(".", 3)  # [.name, host, pid, random]
        dead = False
        if len(parts) == 4 and parts[1] == host and parts[2].isdigit():
            dead = not pid_alive(int(parts[2]))
        try:
            old = now - tmp.stat().st_mtime > older_than
        except OSError:
            continue
        if dead or old:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    if removed and echo:
        echo(f"removed {len(removed)} temporary file(s) left by interrupted writers under {folder}")
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since boot, from /proc), or None where unknown.

    Together with the pid it names a process uniquely: a pid reused by a later process has
    another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after it are plain.
    fields = stat[stat.rindex(")") + 2:].split()
    try:
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return None


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


def log(msg: str) -> None:
    """A progress or status line for people, on stderr (stdout stays for results)."""
    print(msg, file=sys.stderr, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool = True, unit: str = "it"):
    """A progress bar (rate and ETA) on a terminal, periodic log lines elsewhere, nothing when
    disabled; see :mod:`ddlnl.progress` (``DDLNL_PROGRESS``, ``DDLNL_PROGRESS_SECONDS``)."""
    from .progress import progress as _progress

    return _progress(iterable, total=total, desc=desc, enabled=enabled, unit=unit)


def code_version() -> str:
    """Package version plus the git commit of the source tree when available."""
    from ._version import __version__

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


# Set only inside :func:`cache_at` (one sweep cell), so no process-wide state changes.
_CACHE_OVERRIDE: ContextVar[Path | None] = ContextVar("ddlnl_cache_root", default=None)


def cache_root() -> Path:
    """Where shared artifacts (expert trajectories, pre-trained models, decoded datasets) are cached:
    the folder of the enclosing :func:`cache_at` if any, else ``$DDLNL_CACHE`` if set, else
    ``~/.cache/ddlnl``."""
    override = _CACHE_OVERRIDE.get()
    if override is not None:
        return override
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/ddlnl").expanduser()


@contextmanager
def cache_at(folder: str | Path) -> Iterator[Path]:
    """Within the block, :func:`cache_root` is ``folder`` (for this thread of execution only; the
    environment is not touched), e.g. a sweep root's shared artifact cache."""
    token = _CACHE_OVERRIDE.set(Path(folder))
    try:
        yield Path(folder)
    finally:
        _CACHE_OVERRIDE.reset(token)


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


# --------------------------------------------------------------------------------------------
# Checks before work: paths a command will write or read, so a mistake is one line up front
# rather than an OSError after minutes of training.

def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_write(folder: Path, path: Path, what: str, option: str) -> None:
    """Create and remove a file in ``folder``: the only test that holds for root, read-only file
    systems, ACLs and pseudo file systems alike (``os.access`` answers yes to root everywhere)."""
    probe = folder / f".ddlnl-write-check.{socket.gethostname()}.{os.getpid()}{TMP_SUFFIX}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return  # our own leftover: the folder is writable
    except OSError as exc:
        from .errors import os_error_line

        why = "no permission to write" if isinstance(exc, PermissionError) else os_error_line(exc).split(";")[0]
        raise UserError(f"{option} {path}: cannot write in {folder} ({why}); choose a {what} you can write to") from None
    os.close(fd)
    os.unlink(probe)


def _check_creatable(path: Path, what: str, option: str, shown: Path) -> None:
    """Every missing folder on the way to ``path`` can be created."""
    base = _nearest_existing(path.parent if not path.exists() else path)
    if not base.is_dir():
        raise UserError(f"{option} {shown}: {base} is a file, not a folder; choose another {what}")
    _probe_write(base, shown, what, option)


def check_output_dir(path: str | Path, option: str = "--out", what: str = "folder", *,
                     shown: Path | None = None) -> Path:
    """``path`` is, or can become, a folder this process can write in (checked before any work).
    ``shown`` is the path named in the message (default ``path``)."""
    path = Path(path).expanduser()
    shown = shown or path
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{option} {shown}: {path} is a file, not a folder; choose another {what}"
                            if shown != path else f"{option} {path} is a file, not a folder; choose another {what}")
        _probe_write(path, shown, what, option)
        return path
    _check_creatable(path, what, option, shown)
    return path


def check_output_file(path: str | Path, option: str = "--out", suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` can be written as a file (atomically, beside itself), checked before any work."""
    path = Path(path).expanduser()
    if str(path).endswith(os.sep) or path.is_dir():
        raise UserError(f"{option} {path} is a folder; name a file{' ending in ' + suffixes[0] if suffixes else ''}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{option} {path}: use a file name ending in {' or '.join(suffixes)}")
    check_output_dir(path.parent, option=option, what="folder", shown=path)
    return path


def check_input_file(path: str | Path, option: str, hint: str = "check the path") -> Path:
    """``path`` is an existing, readable file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{option} {path} not found; {hint}")
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder, not a file; {hint}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{option} {path}: no permission to read it; fix its permissions")
    return path


def check_cache_root() -> Path:
    """``$DDLNL_CACHE`` (or the default cache) is a folder this process can write in."""
    return check_output_dir(cache_root(), option=f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "cache",
                            what="cache folder")


# --------------------------------------------------------------------------------------------
# Checked reads of ddlnl's own JSON files.

CHECKSUM_FIELD = "sha256"


def _payload_digest(obj: dict[str, Any]) -> str:
    body = {k: v for k, v in obj.items() if k != CHECKSUM_FIELD}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=_json_default).encode()).hexdigest()


def with_checksum(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` plus a SHA-256 of its other fields (as sorted JSON), verified by :func:`read_json_checked`.

    The value is normalised through JSON first, so the digest is that of what is written."""
    body = json.loads(json.dumps({k: v for k, v in obj.items() if k != CHECKSUM_FIELD}, default=_json_default))
    return {**body, CHECKSUM_FIELD: _payload_digest(body)}


def read_json_checked(path: str | Path, *, required: Iterable[str] = (), checksum: bool = False) -> dict[str, Any]:
    """A JSON object ddlnl wrote, checked: parseable, a mapping, holding ``required`` keys and,
    with ``checksum`` and when the file carries one, matching its SHA-256 (files written before
    checksums existed carry none and are judged by their contents).

    Raises:
        DamagedFile: truncated, not JSON, not a mapping, a key missing or a wrong checksum.
        OSError: unreadable (permissions); the caller or the CLI reports it.
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DamagedFile(path, "empty")
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedFile(path, f"not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise DamagedFile(path, f"holds a JSON {type(obj).__name__}, not an object")
    missing = [k for k in required if k not in obj]
    if missing:
        raise DamagedFile(path, f"not a ddlnl file of this kind: no {', '.join(missing)}")
    if checksum and CHECKSUM_FIELD in obj and obj[CHECKSUM_FIELD] != _payload_digest(obj):
        raise DamagedFile(path, "fails its checksum: modified or damaged")
    return obj


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Bytes free for new tensors on ``device`` now: CUDA's free memory, or the host's
    ``MemAvailable`` (Linux) for a CPU; None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
# Freed memory the C allocator may keep for reuse instead of returning it to the system: above
# the working set of one step of the loops here (DM's per-class real batch at width 128 and batch
# 256 allocates about 350 MiB of activations; a training step with its autograd graph, more).
RETAINED_BYTES = 1 << 30
SYSTEM_MALLOC_ENV = "DDLNL_SYSTEM_MALLOC"
_retaining: bool | None = None


def retain_freed_cpu_memory() -> bool:
    """Let the C allocator reuse freed memory for the next large CPU tensors; once per process.

    Why: with glibc's defaults every tensor of 32 MiB or more (e.g. a width-32 conv output of 256
    32x32 images) is a fresh ``mmap`` given back on free, so each allocation page-faults all of its
    pages in again: measured on DM's CPU loop (width 32, batch_real 256), 85,000-320,000 minor
    page faults and 0.2-0.8 s of system time per iteration, up to half the iteration. With
    ``mmap`` off (``M_MMAP_MAX`` 0; a failed heap growth still falls back to ``mmap``) and up to
    :data:`RETAINED_BYTES` of free heap kept (``M_TRIM_THRESHOLD``), the next step reuses the
    pages: no faults. Values are unchanged (only where tensors live); the price is that the
    process keeps up to ``RETAINED_BYTES`` of freed memory resident.

    Process-wide, as any allocator setting: the CPU loops (:func:`ddlnl.train.train`, the
    ``distill`` of ``ddlnl.methods.dm``, ``datm``, ``dance`` and ``rcig``) call it. ``DDLNL_SYSTEM_MALLOC=1`` leaves the allocator as it
    is. Returns whether the setting is in effect (False off glibc, e.g. on macOS, or when opted
    out).
    """
    global _retaining
    if _retaining is None:
        _retaining = False
        if os.environ.get(SYSTEM_MALLOC_ENV, "") not in ("", "0"):
            return False
        try:
            mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
        except (OSError, AttributeError):
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        # mallopt returns 1 on success; musl's is a stub returning 0.
        _retaining = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, RETAINED_BYTES) == 1
    return _retaining
