"""Expert trajectories for trajectory matching (MTT: Cazenavette et al., CVPR 2022; DATM: Guo et
al., ICLR 2024): training, compact storage, cached loading.

An *expert* is a ConvNet trained on the **noisy** training set with plain SGD at a constant
learning rate; its *trajectory* is its flat parameter vector before training and after every
epoch, a ``(N + 1) x P`` tensor (N epochs, P parameters, rows in ``model.named_parameters()``
order). Trajectory matching starts a student at epoch ``t`` of an expert and asks it to reach
epoch ``t + M`` in a few steps on the synthetic set.

Training settings are the reference ``buffer.py`` ones (MTT ``buffer.py``; DATM
``buffer/buffer_FTD.py``): SGD lr 0.01, momentum 0, weight decay 0, batch 256, DSA augmentation
of every training batch (``epoch(..., aug=True)`` with ``DiffAugment``), ConvNet-3 width 128 with
instance norm, 50 epochs, 100 experts. Experts go through ddlnl's one training loop
(:func:`ddlnl.train.train`, one call per epoch with a per-epoch seed).

Flat trajectories (option): FTD (Du et al., CVPR 2023) trains experts with GSAM, a sharpness-aware
step (:func:`ddlnl.train.gsam_gradient`), so that the trajectory the student matches is flatter and
the student's accumulated error smaller. DATM's ``buffer_FTD.py`` and the study's runs of it use
rho 0.01 with adaptive (ASAM) scaling; the study passes alpha 0.3 (``ddlnl_scripts.md``), DATM's
own script alpha 0.4. :data:`FTD` holds the study's values; ``ExpertConfig(**FTD)`` or DATM's
``expert_ftd=true`` select it. Default: plain-SGD (MTT ``buffer.py``) experts. A GSAM step costs
two forward/backward passes, so FTD experts take about twice as long to train.

Cache layout (``cache_root()/experts/<key>/``)::

    manifest.json                what produced the experts (config, data fingerprint, seed, layout)
    expert_0000.safetensors      one expert: tensor "trajectory" (N+1) x P, with its key and a
    expert_0001.safetensors      SHA-256 of its bytes in the header; written atomically

The key hashes the data fingerprint (images *and* noisy labels), the architecture, the training
settings and the seed, so experts trained on another noise draw can never be reused. Expert ``i``
is a pure function of (key, i): the number of experts is not part of the key, so asking for more
experts later trains only the new ones, and an interrupted run resumes where it stopped.

Defining steps (pinned by ``tests/test_defining_experts.py``, ``tests/test_experts.py``):

1. row 0 of a trajectory is the initial weights, row ``e + 1`` the weights after epoch ``e``
   (``epochs + 1`` rows);
2. each epoch is SGD on the NOISY labels at the epoch's lr with the reference's settings (lr 0.01,
   no momentum, no weight decay, batch 256, DSA); with momentum one optimiser serves every epoch;
3. ``lr_milestones`` multiply the lr by ``lr_gamma`` from their epoch on;
4. the cache key covers data (images and noisy labels), architecture, training settings and seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from .data import LabeledTensors
from .errors import ConfigError, DataError
from .train import DSA_STRATEGY, TrainConfig, build_model
from .utils import (atomic_output, atomic_write_json, cache_root, code_version, derive_seed,
                    progress as progress_bar, tensor_fingerprint)

FORMAT = "ddlnl.experts/1"
# The study's FTD expert training (DD_LNL ``ddlnl_scripts.md``: buffer_FTD.py --rho_max 0.01
# --rho_min 0.01 --alpha 0.3, with the script's default --adaptive True).
FTD: dict[str, Any] = {"sam_rho": 0.01, "sam_alpha": 0.3, "sam_adaptive": True}
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class ExpertConfig:
    """How experts are trained; defaults are the MTT/DATM ``buffer.py`` settings.

    Only the first ``max_start_epoch - 1 + expert_epochs`` epochs are ever matched (DATM CIFAR-10
    IPC 50: 41 of 50), so ``epochs`` beyond that only cost time. The study (DD_LNL) keeps its
    ``buffer_FTD.py`` default of 100 epochs.
    """

    num_experts: int = 100  # trajectories (reference --num_experts 100); not part of the cache key
    epochs: int = 50  # N: epochs per expert (reference --train_epochs 50)
    lr: float = 0.01  # constant SGD learning rate (reference --lr_teacher 0.01)
    batch_size: int = 256  # reference --batch_train 256
    momentum: float = 0.0  # reference: momentum 0 (so epochs are plain SGD paths)
    weight_decay: float = 0.0  # reference: weight decay 0
    augment: str = "dsa"  # dsa | none (reference: DSA on every training batch)
    dsa_strategy: str = DSA_STRATEGY
    dsa_mode: str = "single"  # single (DSA, MTT/DATM) | idc (DANCE's pre-training: every listed op; see augment.DSA)
    cutmix_prob: float = 0.0  # CutMix per batch (DANCE's pre-training: 0.5); 0 = off
    cutmix_beta: float = 1.0  # CutMix Beta(beta, beta) (DANCE: 1)
    model: str = "convnet"
    depth: int = 3
    width: int = 128
    norm: str = "instance"  # instance | none (batch norm is refused: its statistics are buffers)
    activation: str = "relu"
    pooling: str = "avg"
    storage_dtype: str = "float32"  # float32 | float16 (halves the cache; rows are read back as float32)
    # Step schedule across epochs (MultiStepLR): the lr of epoch e is lr * lr_gamma ** (number of
    # milestones <= e). Empty = constant lr (MTT/DATM). DANCE's pre-training uses [2N//3, 5N//6], 0.2.
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1  # factor per milestone; unused (and not in the cache key) without milestones
    # Sharpness-aware (GSAM) steps, FTD's "flat trajectory" training: see TrainConfig.sam_* and FTD.
    sam_rho: float = 0.0  # 0 = plain SGD; FTD: 0.01
    sam_alpha: float = 0.0  # FTD (the study): 0.3
    sam_adaptive: bool = False  # FTD: True

    # A 2-core CPU: 2 experts of 8 epochs at width 32, as DATMConfig.PRESETS["cpu"].
    PRESETS: ClassVar[dict[str, dict]] = {"cpu": {"num_experts": 2, "epochs": 8, "width": 32}}

    def check(self) -> None:
        if self.num_experts < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("experts: num_experts, epochs and batch_size must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"experts: lr must be > 0, got {self.lr}")
        if self.norm == "batch":
            raise ConfigError("experts: norm=batch is not supported for trajectory matching (BatchNorm "
                              "running statistics are buffers that a flat parameter trajectory does not "
                              "hold); use norm=instance (the reference ConvNetIN) or none")
        if any(m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ConfigError(f"experts: lr_milestones must be increasing epochs >= 1, got {self.lr_milestones}")
        if self.lr_gamma <= 0:
            raise ConfigError(f"experts: lr_gamma must be > 0, got {self.lr_gamma}")
        if self.storage_dtype not in _STORAGE_DTYPES:
            raise ConfigError(f"experts: storage_dtype {self.storage_dtype!r}: use float32 or float16")
        if self.dsa_mode not in ("single", "idc"):
            raise ConfigError(f"experts: dsa_mode {self.dsa_mode!r}: use single or idc")
        self.train_config().check()

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` of ONE expert epoch (constant lr, no momentum, no decay)."""
        return TrainConfig(model=self.model, depth=self.depth, width=self.width, norm=self.norm,
                           activation=self.activation, pooling=self.pooling, epochs=1,
                           batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, schedule="constant", augment=self.augment,
                           dsa_strategy=self.dsa_strategy, dsa_mode=self.dsa_mode, cutmix_prob=self.cutmix_prob,
                           cutmix_beta=self.cutmix_beta, sam_rho=self.sam_rho, sam_alpha=self.sam_alpha,
                           sam_adaptive=self.sam_adaptive)

    def epoch_lr(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``: ``lr`` times ``lr_gamma`` per milestone reached."""
        return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)

    def key_fields(self) -> dict[str, Any]:
        """Every field that changes what expert ``i`` is (all but ``num_experts``)."""
        fields = asdict(self)
        fields.pop("num_experts")
        # Added after experts were cached: without milestones neither field changes an expert, so
        # they stay out of the key and keys made before they existed remain valid.
        if not self.lr_milestones:
            fields.pop("lr_milestones")
            fields.pop("lr_gamma")
        # Likewise for sharpness-aware training: with rho 0 the other two fields are unused.
        if self.sam_rho == 0:
            for name in ("sam_rho", "sam_alpha", "sam_adaptive"):
                fields.pop(name)
        # Likewise for the DSA mode and CutMix (added for DANCE's pre-training).
        if self.dsa_mode == "single":
            fields.pop("dsa_mode")
        if self.cutmix_prob == 0:
            fields.pop("cutmix_prob")
            fields.pop("cutmix_beta")
        # With momentum the optimiser's buffer now carries over epoch boundaries (it restarted at
        # every epoch before): such experts are other experts, so they get another key.
        if self.momentum > 0:
            fields["momentum_across_epochs"] = True
        return fields


# --------------------------------------------------------------------------------------------
# Flat parameters and the functional forward
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamLayout:
    """How a flat parameter vector maps to a module's parameters.

    Attributes:
        names: parameter names in ``module.named_parameters()`` order.
        shapes: their shapes; the flat vector is their row-major concatenation, length ``numel``.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def sizes(self) -> list[int]:
        out = []
        for shape in self.shapes:
            n = 1
            for s in shape:
                n *= s
            out.append(n)
        return out

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """``module``'s parameters as one detached 1-D tensor (length :attr:`numel`)."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` (1-D, length :attr:`numel`) shaped as the parameters, by name.

        The views keep ``flat``'s autograd history, so a loss of the functional forward is
        differentiable with respect to ``flat``.
        """
        if flat.ndim != 1 or flat.numel() != self.numel:
            raise ValueError(f"flat parameters must be 1-D of length {self.numel}, got {tuple(flat.shape)}")
        chunks = torch.split(flat, self.sizes)
        return {name: chunk.view(shape) for name, chunk, shape in zip(self.names, chunks, self.shapes)}

    def load(self, module: nn.Module, flat: torch.Tensor) -> nn.Module:
        """Copy the flat parameters ``flat`` into ``module`` (same layout, on its device); returns it."""
        with torch.no_grad():
            for p, v in zip(module.parameters(), self.unflatten(flat).values()):
                p.copy_(v)
        return module


def functional_forward(model: nn.Module, layout: ParamLayout, flat: torch.Tensor,
                       x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with its parameters replaced by the flat vector ``flat``.

    Uses :func:`torch.func.functional_call`; ``model``'s own parameters are not read. Only
    parameters are substituted: a model with running-statistics buffers (BatchNorm) is not
    supported (instance norm has affine parameters and no buffers).

    Args:
        model: module whose parameter layout is ``layout``.
        flat: 1-D parameters (float, on ``x``'s device), possibly part of an autograd graph.
        x: ``N x C x H x W`` input.

    Returns:
        Logits ``N x K``.
    """
    return torch.func.functional_call(model, layout.unflatten(flat), (x,))


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


class Trajectories:
    """``num_experts`` trajectories of ``num_epochs + 1`` flat parameter vectors each.

    Cached experts are read lazily, one row at a time (safetensors slices), so a large buffer
    never has to fit in memory; in-memory experts (``cache=False``) hold their tensors.

    Attributes:
        key: the cache key the experts were made under (:func:`expert_key`).
        config: the :class:`ExpertConfig` that trained them.
        channels, num_classes, image_size: the input/output sizes of the expert architecture.
        layout: flat-parameter layout (:class:`ParamLayout`).
        directory: the cache folder, or None for in-memory experts.
    """

    def __init__(self, *, key: str, config: ExpertConfig, channels: int, num_classes: int,
                 image_size: tuple[int, int], layout: ParamLayout,
                 sources: Sequence[Path | torch.Tensor], directory: Path | None = None) -> None:
        self.key = key
        self.config = config
        self.channels = channels
        self.num_classes = num_classes
        self.image_size = tuple(image_size)
        self.layout = layout
        self.directory = directory
        self._sources = list(sources)

    @property
    def num_experts(self) -> int:
        return len(self._sources)

    @property
    def num_epochs(self) -> int:
        """N: epochs trained; epoch indices run 0..N (0 = the initial parameters)."""
        return self.config.epochs

    @property
    def num_params(self) -> int:
        return self.layout.numel

    def _epoch_index(self, epoch: int) -> int:
        n = self.num_epochs + 1
        if not -n <= epoch < n:
            raise IndexError(f"epoch {epoch} out of range for trajectories of {self.num_epochs} epochs")
        return epoch % n

    def params(self, expert: int, epoch: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
        """Flat float32 parameters ``P`` of ``expert`` after ``epoch`` epochs (negative: from the end)."""
        t = self._epoch_index(epoch)
        src = self._sources[expert]
        if isinstance(src, torch.Tensor):
            row = src[t]
        else:
            from safetensors import safe_open

            with safe_open(str(src), framework="pt") as f:
                # clone: the slice may share memory with the mapped file
                row = f.get_slice("trajectory")[t:t + 1][0].clone()
        return row.to(device=device, dtype=torch.float32)

    def trajectory(self, expert: int) -> torch.Tensor:
        """The whole trajectory of ``expert``: float32 ``(N + 1) x P`` on CPU."""
        src = self._sources[expert]
        if isinstance(src, torch.Tensor):
            return src.float()
        return _read_trajectory(src).float()

    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """A module of the expert architecture (its own weights are irrelevant for
        :func:`functional_forward`)."""
        return build_model(self.config.train_config(), channels=self.channels, num_classes=self.num_classes,
                           image_size=self.image_size, seed=0, device=device)

    def load_into(self, model: nn.Module, expert: int, epoch: int) -> nn.Module:
        """Copy ``expert``'s parameters at ``epoch`` into ``model`` (same architecture); returns it."""
        return self.layout.load(model, self.params(expert, epoch, device=next(model.parameters()).device))


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
    DSA draws). One optimiser serves every epoch, so with momentum (DANCE's pre-training: 0.9)
    its buffer carries over the epoch boundaries as in one continuous training run; the epoch's
    lr (:meth:`ExpertConfig.epoch_lr`) is set at every step.
    """
    from . import train as train_module

    tcfg = cfg.train_config()
    channels, h, w = train.images.shape[1:]
    expert_seed = derive_seed(seed, "expert", index)
    model = build_model(tcfg, channels=channels, num_classes=num_classes, image_size=(h, w),
                        seed=expert_seed, device=device)
    layout = ParamLayout.of(model)
    rows = [layout.flatten(model).cpu()]
    optimizer = train_module.make_optimizer(tcfg, model, cfg.epoch_lr(0))
    for epoch in range(cfg.epochs):
        train_module.train(model, train, tcfg, seed=derive_seed(expert_seed, "epoch", epoch),
                           lr=cfg.epoch_lr(epoch), optimizer=optimizer)
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


def _read_trajectory(path: Path) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("trajectory").clone()  # detached from the mapped file


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


