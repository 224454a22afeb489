"""Training experts and caching them: one checked file per expert under ``cache_root()/experts/<key>/``,
the cache status, and :func:`get_experts`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..data import LabeledTensors
from ..errors import DataError
from ..train import build_model
from ..utils import atomic_output, atomic_write_json, cache_root, code_version, derive_seed, progress as progress_bar, tensor_fingerprint

from .config import ExpertConfig, FORMAT, _STORAGE_DTYPES
from .trajectories import ParamLayout, Trajectories


# --------------------------------------------------------------------------------------------
# Keys, training, storage
# --------------------------------------------------------------------------------------------


def expert_key(train: LabeledTensors, cfg: ExpertConfig, *, seed: int, num_classes: int,
               fingerprint: str | None = None) -> str:
    """The cache key of experts trained on ``train`` (its images AND its noisy labels) with ``cfg``.

    A hex SHA-256 prefix (24 characters) of the storage format, ``tensor_fingerprint(images,
    labels)`` (pass it as ``fingerprint`` when already computed: it hashes the whole set),
    every config field except ``num_experts``, ``num_classes`` and ``seed``.
    """
    if fingerprint is None:
        fingerprint = tensor_fingerprint(train.images, train.labels)
    payload = {"format": FORMAT, "data": fingerprint,
               "config": cfg.key_fields(), "num_classes": int(num_classes), "seed": int(seed)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def train_expert(train: LabeledTensors, cfg: ExpertConfig, *, index: int, seed: int, num_classes: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Train expert ``index`` and return its trajectory, float32 ``(epochs + 1) x P`` on CPU.

    Initial weights come from ``derive_seed(seed, "expert", index)``; epoch ``e`` is one call of
    :func:`ddlnl.train.train` with seed ``derive_seed(expert_seed, "epoch", e)`` (batch order and
    DSA draws). With ``cfg.forward_transition`` the loss is the forward-corrected cross-entropy
    (:func:`ddlnl.correction.forward_corrected_ce`). One optimiser serves every epoch, so with momentum (DANCE's pre-training: 0.9)
    its buffer carries over the epoch boundaries as in one continuous training run; the epoch's
    lr (:meth:`ExpertConfig.epoch_lr`) is set at every step.
    """
    from .. import train as train_module

    tcfg = cfg.train_config()
    channels, h, w = train.images.shape[1:]
    expert_seed = derive_seed(seed, "expert", index)
    model = build_model(tcfg, channels=channels, num_classes=num_classes, image_size=(h, w),
                        seed=expert_seed, device=device)
    layout = ParamLayout.of(model)
    rows = [layout.flatten(model).cpu()]
    optimizer = train_module.make_optimizer(tcfg, model, cfg.epoch_lr(0))
    loss_fn = None
    if cfg.forward_transition:  # forward-corrected cross-entropy (ddlnl.correction)
        from ..correction import forward_corrected_ce

        t = torch.tensor(cfg.forward_transition, dtype=torch.float32)
        if t.shape[0] != num_classes:
            raise DataError(f"experts: forward_transition is {t.shape[0]} x {t.shape[0]}, the data have {num_classes} classes")
        loss_fn = lambda logits, target, idx, epoch: forward_corrected_ce(logits, target, t)  # noqa: E731
    for epoch in range(cfg.epochs):
        train_module.train(model, train, tcfg, seed=derive_seed(expert_seed, "epoch", epoch),
                           lr=cfg.epoch_lr(epoch), optimizer=optimizer, loss_fn=loss_fn)
        rows.append(layout.flatten(model).cpu())
    return torch.stack(rows)


def _digest(t: torch.Tensor, meta_json: str) -> str:
    h = hashlib.sha256(meta_json.encode())
    h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
    h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _expert_path(directory: Path, index: int) -> Path:
    return directory / f"expert_{index:04d}.safetensors"


def _write_expert(path: Path, trajectory: torch.Tensor, *, key: str, index: int, dtype: str) -> None:
    from safetensors.torch import save

    t = trajectory.to(_STORAGE_DTYPES[dtype]).contiguous()
    meta_json = json.dumps({"format": FORMAT, "key": key, "expert": index, "shape": list(t.shape),
                            "dtype": dtype}, sort_keys=True)
    header = {"ddlnl": meta_json, "sha256": _digest(t, meta_json)}
    with atomic_output(path) as tmp:
        tmp.write_bytes(save({"trajectory": t}, metadata=header))


# Expert files whose SHA-256 this process has checked, by (path, size, mtime_ns, inode, recorded
# digest): every distill call re-scans the cache, and re-reading every file (gigabytes for a
# study's experts) each time is the cost, not the check. A rewritten or replaced file changes
# its size, mtime or inode and is read again.
_VERIFIED: set[tuple] = set()


def _file_identity(path: Path, digest: str | None) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, digest)


def _valid_expert(path: Path, *, key: str, index: int, shape: tuple[int, int], dtype: str,
                  verify: bool) -> bool:
    """True when ``path`` is a complete, undamaged expert ``index`` of ``key`` with ``shape``.

    With ``verify`` the data are read and checked against the recorded SHA-256 once per process
    and file version (:data:`_VERIFIED`); later calls check the header only.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            info = json.loads(header.get("ddlnl", "{}"))
            if (info.get("format") != FORMAT or info.get("key") != key or info.get("expert") != index
                    or tuple(info.get("shape", ())) != tuple(shape) or info.get("dtype") != dtype):
                return False
            if not verify:
                return True
            identity = _file_identity(path, header.get("sha256"))
            if identity in _VERIFIED:
                return True
            t = f.get_tensor("trajectory")
    except Exception:  # truncated header or data, not a safetensors file, bad JSON
        return False
    ok = (tuple(t.shape) == tuple(shape) and bool(torch.isfinite(t).all())
          and _digest(t, header["ddlnl"]) == header.get("sha256"))
    if ok:
        _VERIFIED.add(identity)
    return ok


@dataclass
class ExpertStatus:
    """What the cache holds for one (data, config, seed): for reports and ``ddlnl experts``.

    Attributes:
        key: :func:`expert_key`.
        directory: the cache folder for that key.
        wanted: ``cfg.num_experts``.
        complete: indices ``< wanted`` of valid expert files.
        missing: indices ``< wanted`` still to train.
        invalid: indices whose file exists but is damaged, partial or from another key.
        manifest: the parsed ``manifest.json`` or None.
    """

    key: str
    directory: Path
    wanted: int
    complete: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        """One line, e.g. ``experts 3a..: 2/3 complete (missing 2) in /cache/experts/3a..``."""
        text = f"experts {self.key}: {len(self.complete)}/{self.wanted} complete"
        if self.missing:
            text += f" (missing {', '.join(map(str, self.missing))})"
        if self.invalid:
            text += f"; damaged or foreign files retrained: {', '.join(map(str, self.invalid))}"
        return f"{text} in {self.directory}"


def _manifest(key: str, cfg: ExpertConfig, train: LabeledTensors, *, fingerprint: str, seed: int,
              num_classes: int, layout: ParamLayout, complete: list[int]) -> dict[str, Any]:
    channels, h, w = train.images.shape[1:]
    return {"format": FORMAT, "key": key, "data_fingerprint": fingerprint,
            "num_train": len(train), "config": asdict(cfg), "seed": int(seed), "num_classes": int(num_classes),
            "channels": int(channels), "image_size": [int(h), int(w)], "param_names": list(layout.names),
            "param_shapes": [list(s) for s in layout.shapes], "num_params": layout.numel,
            "experts": sorted(complete), "code_version": code_version()}


def _layout_for(cfg: ExpertConfig, train: LabeledTensors, num_classes: int) -> ParamLayout:
    channels, h, w = train.images.shape[1:]
    return ParamLayout.of(build_model(cfg.train_config(), channels=channels, num_classes=num_classes,
                                      image_size=(h, w), seed=0))


def expert_status(train: LabeledTensors, cfg: ExpertConfig, *, seed: int, num_classes: int,
                  cache_dir: str | Path | None = None, verify: bool = True) -> ExpertStatus:
    """Inspect the cache for these experts without training anything.

    Args:
        train: the (noisy) training set the experts are for.
        cfg: expert settings; ``cfg.num_experts`` is how many are wanted.
        seed: expert seed (part of the key).
        cache_dir: folder holding ``<key>/`` folders (default ``cache_root()/"experts"``).
        verify: also check every file's SHA-256 (reads every file once).
    """
    cfg.check()
    key = expert_key(train, cfg, seed=seed, num_classes=num_classes)
    return _scan_cache(key, _cache_folder(cache_dir) / key, cfg, _layout_for(cfg, train, num_classes), verify)


def _cache_folder(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else cache_root() / "experts"


def _scan_cache(key: str, directory: Path, cfg: ExpertConfig, layout: ParamLayout, verify: bool) -> ExpertStatus:
    """:class:`ExpertStatus` of the expert files in ``directory`` (the folder of ``key``)."""
    status = ExpertStatus(key=key, directory=directory, wanted=cfg.num_experts)
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        try:
            status.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, OSError):
            status.manifest = None
    shape = (cfg.epochs + 1, layout.numel)
    for i in range(cfg.num_experts):
        path = _expert_path(directory, i)
        if not path.exists():
            status.missing.append(i)
        elif _valid_expert(path, key=key, index=i, shape=shape, dtype=cfg.storage_dtype, verify=verify):
            status.complete.append(i)
        else:
            status.invalid.append(i)
            status.missing.append(i)
    return status


def get_experts(train: LabeledTensors, cfg: ExpertConfig, *, seed: int, num_classes: int,
                device: torch.device | str = "cpu", progress: bool = False,
                cache_dir: str | Path | None = None, cache: bool = True, allow_training: bool = True,
                verify: bool = True) -> Trajectories:
    """Experts for ``train`` (noisy labels): from the cache when complete, trained where missing.

    Every expert file is checked (key, index, shape, dtype, SHA-256, finiteness); a damaged,
    partial or foreign file is deleted and retrained, never reused. Experts already complete are
    kept, so an interrupted call resumes with the missing ones only.

    Args:
        train: images ``N x C x H x W`` and hard noisy labels ``int64 N``.
        cfg: :class:`ExpertConfig`.
        seed: expert seed; expert ``i`` starts from ``derive_seed(seed, "expert", i)``.
        num_classes: logits of the expert network.
        device: where experts train.
        progress: a bar over expert epochs.
        cache_dir: folder holding ``<key>/`` folders (default ``cache_root()/"experts"``).
        cache: False trains every expert in memory and writes nothing (tests, throwaway runs).
        allow_training: False raises :class:`~ddlnl.errors.DataError` instead of training when
            the cache is incomplete (and leaves damaged files in place).
        verify: check every cached file's SHA-256 (reads each file once).

    Returns:
        :class:`Trajectories` of ``cfg.num_experts`` experts.
    """
    cfg.check()
    if train.labels.ndim != 1:
        raise DataError("experts need hard (int64) training labels")
    channels, h, w = train.images.shape[1:]
    layout = _layout_for(cfg, train, num_classes)
    fingerprint = tensor_fingerprint(train.images, train.labels)  # hashes the whole set: once per call
    key = expert_key(train, cfg, seed=seed, num_classes=num_classes, fingerprint=fingerprint)
    common = dict(key=key, config=cfg, channels=int(channels), num_classes=num_classes,
                  image_size=(int(h), int(w)), layout=layout)
    if not cache:
        data = train.to(device)  # moved once, not once per epoch
        bar = progress_bar(total=cfg.num_experts * cfg.epochs, desc="experts", enabled=progress, unit="epoch")
        trajs = []
        for i in range(cfg.num_experts):
            trajs.append(train_expert(data, cfg, index=i, seed=seed, num_classes=num_classes, device=device)
                         .to(_STORAGE_DTYPES[cfg.storage_dtype]))
            bar.update(cfg.epochs)
        bar.close()
        return Trajectories(sources=trajs, **common)

    status = _scan_cache(key, _cache_folder(cache_dir) / key, cfg, layout, verify)
    directory = status.directory
    if status.manifest is not None and status.manifest.get("key") != key:
        # The folder is named by the key, so this is tampering or a foreign copy: trust no file in it.
        if not allow_training:
            raise DataError(f"{directory}/manifest.json names key {status.manifest.get('key')!r}, not {key!r}; "
                            "delete the folder or run `ddlnl experts` to retrain")
        status.invalid = sorted(set(status.invalid) | set(status.complete))
        status.missing = list(range(cfg.num_experts))
        status.complete = []
    if status.missing and not allow_training:
        raise DataError(f"expert cache incomplete: {status.summary()}; run `ddlnl experts` to train them")
    if status.missing:
        directory.mkdir(parents=True, exist_ok=True)
        for i in status.invalid:
            _expert_path(directory, i).unlink(missing_ok=True)
        complete = list(status.complete)
        manifest = partial(_manifest, key, cfg, train, fingerprint=fingerprint, seed=seed, num_classes=num_classes,
                           layout=layout)
        atomic_write_json(directory / "manifest.json", manifest(complete=complete))
        data = train.to(device)  # moved once, not once per epoch; only when something trains
        bar = progress_bar(total=len(status.missing) * cfg.epochs, desc=f"experts ({len(status.missing)} to train)",
                           enabled=progress, unit="epoch")
        for i in status.missing:
            traj = train_expert(data, cfg, index=i, seed=seed, num_classes=num_classes, device=device)
            _write_expert(_expert_path(directory, i), traj, key=key, index=i, dtype=cfg.storage_dtype)
            complete.append(i)
            # The manifest is informative; each file carries its own key and digest.
            atomic_write_json(directory / "manifest.json", manifest(complete=complete))
            bar.update(cfg.epochs)
        bar.close()
    elif status.manifest is None:
        atomic_write_json(directory / "manifest.json",
                          _manifest(key, cfg, train, fingerprint=fingerprint, seed=seed, num_classes=num_classes,
                                    layout=layout, complete=status.complete))
    sources = [_expert_path(directory, i) for i in range(cfg.num_experts)]
    return Trajectories(sources=sources, directory=directory, **common)
