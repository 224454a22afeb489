"""ddlnl against the study's own code (Kciiiman/DD_LNL), same configuration, same machine, one run.

    .venv/bin/python benchmarks/bench_vs_reference.py --reference /path/to/DD_LNL \\
        [--dc-reference /path/to/DatasetCondensation] [--width 128] [--iters 4] [--pairs 2] \\
        [--methods datm20,datm80,dance,dm,epoch]

The reference is a local checkout given on the command line; it is not part of ddlnl and is never
fetched. For DM the study has no code of its own (its DD_LNL tree holds DATM, DANCE and RCIG), so
DM's reference is DatasetCondensation's ``main_DM.py`` (``--dc-reference``, the DM code the
study's DM numbers come from); without it the DM row is skipped.

What runs, per row (each measurement in its own subprocess, reference and ddlnl alternating
A B A B; the first iteration of each is a warm-up and is not counted):

- ``datm20`` / ``datm80``: DATM_tesla.py's ``main()`` (CIFAR-10 ConvNet-3 instance norm, IPC 10,
  batch_syn 100, DSA, learned soft labels, syn_steps 20 / 80), against
  ``ddlnl.methods.datm.distill`` (gradient "tesla") at the same settings.
- ``dance``: DANCE.py's ``condense()`` (``--reproduce``, IPC 10, factor 2, batch_real 128,
  iter_calib 1), against ``ddlnl.methods.dance.distill``.
- ``dm``: main_DM.py's ``main()`` (IPC 10, batch_real 256, DSA), against ``ddlnl.methods.dm.distill``.
- ``epoch``: one expert epoch of buffer_FTD.py (GSAM, rho 0.01, alpha 0.3, adaptive, as the study's
  scripts; batch 256, DSA), against one epoch of ``ddlnl.experts.train_expert`` with the same FTD
  settings.

Timing: the reference's loops are timed from the outside, never edited: DATM and DANCE log
``wandb.log({"Progress": it})`` at the top of every iteration (the stub records the time);
main_DM.py calls ``get_network`` at the top of every iteration (wrapped); buffer_FTD's ``epoch``
is wrapped. ddlnl's loops are timed at each step of their progress iterator. Peak memory: the
largest resident set size sampled every 2 ms while the loop runs (CPU), or
``torch.cuda.max_memory_allocated`` on CUDA.

Patches the reference needs to run here (none touches its algorithm):

1. ``wandb`` is a stub: ``init`` keeps the config (the scripts read their arguments back from
   ``wandb.config``), ``log`` records the time of ``Progress``, nothing is uploaded.
2. Where ``torchvision``, ``kornia``, ``yacs`` or ``efficientnet_pytorch`` are not installed, minimal stand-ins: torchvision's
   ``ToTensor`` / ``Normalize`` / ``Compose`` / ``ConvertImageDtype`` and a ``CIFAR10`` reader of
   the official pickle batches (data loading only); kornia (ZCA only; ZCA is off here, see below)
   and efficientnet_pytorch (imported by DANCE's ``common.py``, unused by its ConvNet) are empty, and
   yacs's ``CfgNode`` (a dict with attribute access: the DATM config defaults).
3. CPU: ``Tensor.cuda()`` / ``Module.cuda()`` return the object on the CPU, and every default
   argument ``device='cuda'`` of a function in the reference's files becomes ``'cpu'``; DATM runs
   with ``parall_eva=True`` so its ``torch.device("cuda:0")`` branch is not taken; while the
   reference's modules are imported (not in the timed loop), ``device='cuda'`` in a torch call
   means the CPU (DANCE's ``train.py`` creates CUDA tensors at import).
4. The data set's MD5 check (``CIFAR10m._check_integrity``) accepts the fixture batches, and its
   ``download`` does nothing.
5. The ConvNet width is the ``--width`` argument (``get_default_convnet_setting`` returns it;
   DANCE gets ``--width width/128``).

Setup that differs from the study's runs, outside the timed loop: a synthetic fixture in the
official CIFAR-10 format at CIFAR-10's size (50,000 training and 10,000 test images: the study's
reader ``dataSolu.cifarm`` reshapes to exactly these counts), each class a colour with noise; no
label noise, no ZCA (a one-off transform before the loop), evaluation off, ``pix_init = real``
(``samples_predicted_correctly`` needs trained experts), and short experts / pre-trained models:
the reference gets random-weight buffers and state dicts in its own format, ddlnl experts trained
for 3 epochs (DATM; DANCE: 1) on 500 of the images (its ``get_experts`` is given that subset). The timed iteration
does the same work whatever the weights are.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import statistics
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METHODS = ("datm20", "datm80", "dance", "dm", "epoch")


# --------------------------------------------------------------------------------------------
# Fixture: CIFAR-10 python batches
# --------------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Pickles ``bytes`` as Python 2 strings, as the official batches were written: read back as
    bytes with ``encoding="bytes"`` (ddlnl, torchvision) and as str with ``encoding="latin1"``
    (the study's dataSolu readers)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_fixture(root: Path, per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` with 5 train batches, a test batch and batches.meta; each class
    a colour with noise, so a network can tell the classes apart."""
    import numpy as np

    folder = root / "cifar-10-batches-py"
    if (folder / "batches.meta").exists():  # written last: the fixture of an earlier run (same seed)
        return root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(10, 3))

    def images(n_per_class: int):
        labels = np.repeat(np.arange(10), n_per_class)
        rng.shuffle(labels)
        noise = rng.normal(0, 40, size=(labels.size, 3, 32, 32))
        data = np.clip(colours[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
        return data.reshape(labels.size, 3072), labels.tolist()

    train, labels = images(per_class)
    parts = np.array_split(np.arange(len(labels)), 5)
    for i, part in enumerate(parts, 1):
        batch = {b"data": train[part], b"labels": [labels[j] for j in part], b"batch_label": b"fixture"}
        (folder / f"data_batch_{i}").write_bytes(_py2_dumps(batch))
    test, test_labels = images(test_per_class)
    (folder / "test_batch").write_bytes(_py2_dumps({b"data": test, b"labels": test_labels}))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(_py2_dumps({b"label_names": names}))
    return root


# --------------------------------------------------------------------------------------------
# Timing in the child
# --------------------------------------------------------------------------------------------


class Clock:
    """Start times of iterations, and the peak resident set size while they run."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.spans: list[float] = []
        self.peak = self.start = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def mark(self) -> None:
        if self._thread is None:
            import torch

            self.peak = self.start = self.rss()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self.marks.append(time.perf_counter())

    def end(self) -> None:
        if self._thread is not None and not self._stop.is_set():
            self.marks.append(time.perf_counter())
            self._stop.set()

    def result(self) -> dict:
        import torch

        times = self.spans or [b - a for a, b in zip(self.marks, self.marks[1:])]
        peak = self.peak
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated()
        return {"times": times, "peak_bytes": peak, "start_bytes": self.start, "threads": torch.get_num_threads()}


def timed_iter(clock: Clock):
    """A stand-in for ddlnl's progress iterator that marks the start of every iteration."""

    class _Bar:
        def __init__(self, iterable=None, total=None, **_):
            self.iterable = iterable

        def __iter__(self):
            for x in self.iterable:
                clock.mark()
                yield x
            clock.end()

        def set_postfix(self, *a, **k):
            pass

        def update(self, *a, **k):
            pass

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    return _Bar


# --------------------------------------------------------------------------------------------
# The reference's environment (patches 1-4)
# --------------------------------------------------------------------------------------------


def _importable(name: str) -> bool:
    import importlib

    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False


class _AnyMeta(type):
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return cls


class _Anything(metaclass=_AnyMeta):
    """A stand-in class for names a reference module imports but the benchmark never uses."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, x, *a, **k):
        return x


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)

    def missing(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Anything

    mod.__getattr__ = missing  # type: ignore[attr-defined]
    sys.modules[name] = mod
    return mod


def install_stubs(clock: Clock) -> list[str]:
    """Patches 1-2; returns the names of the stand-ins used."""
    import numpy as np
    import torch

    used = ["wandb"]

    class _Config:
        def __init__(self):
            self._items = {}

    wb = _module("wandb")
    wb.config = _Config()
    wb.run = types.SimpleNamespace(name="bench")

    def init(*a, config=None, **k):
        wb.config._items = dict(vars(config)) if config is not None else {}
        return wb.run

    def log(d, *a, **k):
        if "Progress" in d:
            clock.mark()

    wb.init, wb.log, wb.finish = init, log, clock.end
    wb.Histogram = wb.Image = _Anything

    if not _importable("torchvision"):
        used.append("torchvision")

        class ToTensor:
            def __call__(self, pic):
                arr = np.asarray(pic)
                if arr.ndim == 2:
                    arr = arr[:, :, None]
                return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div(255)

        class Normalize:
            def __init__(self, mean, std, inplace=False):
                self.mean = torch.tensor(mean).view(-1, 1, 1)
                self.std = torch.tensor(std).view(-1, 1, 1)

            def __call__(self, x):
                return (x - self.mean.to(x.device)) / self.std.to(x.device)

        class Compose:
            def __init__(self, fns):
                self.fns = fns

            def __call__(self, x):
                for f in self.fns:
                    x = f(x)
                return x

        class ConvertImageDtype:
            def __init__(self, dtype):
                self.dtype = dtype

            def __call__(self, x):
                return x.to(self.dtype).div(255) if x.dtype == torch.uint8 else x.to(self.dtype)

        class CIFAR10(torch.utils.data.Dataset):
            """The official python batches, as torchvision reads them."""

            classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

            def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
                folder = Path(root) / "cifar-10-batches-py"
                files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
                data, targets = [], []
                for f in files:
                    d = pickle.loads((folder / f).read_bytes(), encoding="bytes")
                    data.append(np.asarray(d[b"data"]))
                    targets += list(d[b"labels"])
                self.data = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                self.targets, self.transform = targets, transform

            def __len__(self):
                return len(self.targets)

            def __getitem__(self, i):
                from PIL import Image

                img = Image.fromarray(self.data[i])
                return (self.transform(img) if self.transform else img), self.targets[i]

        tv = _module("torchvision")
        tv.transforms = _module("torchvision.transforms", ToTensor=ToTensor, Normalize=Normalize,
                                Compose=Compose, ConvertImageDtype=ConvertImageDtype)
        tv.datasets = _module("torchvision.datasets", CIFAR10=CIFAR10, DatasetFolder=torch.utils.data.Dataset,
                              ImageFolder=torch.utils.data.Dataset)
        tv.utils = _module("torchvision.utils", save_image=lambda *a, **k: None, make_grid=lambda x, *a, **k: x)
        tv.models = _module("torchvision.models")
        tv.transforms.functional = _module("torchvision.transforms.functional")
    for name in ("kornia", "efficientnet_pytorch"):  # ZCA only (off here); DANCE's unused EfficientNet
        if not _importable(name):
            used.append(name)
            _module(name)
    if not _importable("yacs"):
        used.append("yacs")

        class CfgNode(dict):
            def __getattr__(self, k):
                try:
                    return self[k]
                except KeyError as e:
                    raise AttributeError(k) from e

            def __setattr__(self, k, v):
                self[k] = v

        _module("yacs")
        _module("yacs.config", CfgNode=CfgNode)
    return used


def cpu_patches(reference: Path) -> None:
    """Patch 3: ``.cuda()`` stays on the CPU; ``device='cuda'`` defaults of the reference become 'cpu'."""
    import torch

    if torch.cuda.is_available():
        return
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    root = str(reference.resolve())

    def fix(fn):
        fn = getattr(fn, "__func__", fn)
        if getattr(fn, "__defaults__", None):
            fn.__defaults__ = tuple("cpu" if d == "cuda" else d for d in fn.__defaults__)
        if getattr(fn, "__kwdefaults__", None):
            fn.__kwdefaults__ = {k: ("cpu" if v == "cuda" else v) for k, v in fn.__kwdefaults__.items()}

    for mod in list(sys.modules.values()):
        if not str(getattr(mod, "__file__", "") or "").startswith(root):
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, types.FunctionType):
                fix(obj)
            elif isinstance(obj, type):
                for member in vars(obj).values():
                    if isinstance(member, (types.FunctionType, staticmethod, classmethod)):
                        fix(member)


class _CpuAtImport:
    """While the reference's modules are imported, ``device='cuda'`` in a torch call means the CPU
    (DANCE's ``train.py`` builds CUDA tensors at import). Not active in the timed loop (a torch
    function mode costs every operation some Python)."""

    def __enter__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        if torch.cuda.is_available():
            self.mode = None
            return self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = dict(kwargs or {})
                dev = kwargs.get("device")
                if dev is not None and "cuda" in str(dev):
                    kwargs["device"] = "cpu"
                return func(*args, **kwargs)

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        if self.mode is not None:
            self.mode.__exit__(*exc)
        return False


def dataset_patches() -> None:
    """Patch 4: the fixture batches pass the MD5 check; nothing is downloaded."""
    import dataSolu.cifarm as cifarm

    for cls in (cifarm.CIFAR10m, cifarm.CIFAR100m):
        cls._check_integrity = lambda self: True
        cls.download = lambda self: None


def _width_setting(module, width: int) -> None:
    """Patch 5: the ConvNet width of ``get_network``."""
    original = module.get_default_convnet_setting

    def setting():
        _, depth, act, norm, pooling = original()
        return width, depth, act, norm, pooling

    module.get_default_convnet_setting = setting


# --------------------------------------------------------------------------------------------
# Children: the reference
# --------------------------------------------------------------------------------------------


def ref_datm(a, clock: Clock) -> None:
    import torch

    base = a.reference / "DATM+ours"
    sys.path[:0] = [str(base), str(a.reference)]
    install_stubs(clock)
    import importlib.util

    from utils import utils_baseline  # noqa: F401 (the module DATM_tesla imports)

    dataset_patches()
    spec = importlib.util.spec_from_file_location("DATM_tesla", base / "distill" / "DATM_tesla.py")
    datm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(datm)
    cpu_patches(a.reference)
    _width_setting(utils_baseline, a.width)
    from utils.cfg import CFG

    args = argparse.Namespace(**dict(CFG))
    args.__dict__.update(
        dataset="CIFAR10", model="ConvNet", ipc=10, syn_steps=a.syn_steps, expert_epochs=2, lr_img=100,
        lr_teacher=0.001, batch_syn=100, lr_y=2.0, Momentum_y=0.9, threshold=1.0, lr_lr=1e-5,
        data_path=str(a.fixture), buffer_path=str(a.work / f"ref_buffers_w{a.width}"), zca=False,
        Iteration=a.iters - 1, eval_it=10 ** 9, skip_first_eva=True, num_eval=0, parall_eva=True,
        pix_init="real", min_start_epoch=0, current_max_start_epoch=2, max_start_epoch=2,
        expansion_end_epoch=1000, noise_type="clean", noise_rate=0.0, is_annot=False, device=[0])
    # A buffer in the reference's format (list of trajectories, each a list of per-epoch parameter
    # lists), random weights: the iteration's work does not depend on them.
    out = Path(args.buffer_path) / "CIFAR10_NO_ZCA" / "ConvNet"
    if not (out / "replay_buffer_0.pt").exists():
        out.mkdir(parents=True, exist_ok=True)
        net = utils_baseline.get_network("ConvNet", 3, 10, (32, 32), dist=False)
        params = [p.detach().clone() for p in net.parameters()]
        traj = [[p + 0.01 * e * torch.randn_like(p) for p in params] for e in range(4)]
        torch.save([traj, traj], out / "replay_buffer_0.pt")
    datm.main(args)


def ref_dance(a, clock: Clock) -> None:
    import torch

    base = a.reference / "DANCE+ours"
    sys.path[:0] = [str(base), str(a.reference)]
    install_stubs(clock)
    sys.argv = ["DANCE.py", "-d", "cifar10", "--ipc", "10", "--factor", "2", "--reproduce", "--test",
                "--data_dir", str(a.fixture), "--width", str(a.width / 128), "--num_premodel", "5"]
    with _CpuAtImport():
        from arguments.arg_condense import args  # parses sys.argv, as DANCE.py's __main__

        import DANCE
        import common

    dataset_patches()
    cpu_patches(a.reference)
    args.niter = a.iters
    args.data_dir = str(a.fixture)  # --reproduce sets it to 'dataset'
    args.pretrain_dir = str(a.work / f"ref_premodels_w{a.width}")
    args.workers = 0
    os.makedirs(args.pretrain_dir, exist_ok=True)
    for i in range(args.num_premodel):  # random-weight pre-trained models in the reference's format
        for end in ("init", "trained"):
            path = Path(args.pretrain_dir) / f"premodel{i}_{end}.pth.tar"
            if not path.exists():
                torch.save(common.define_model(args, args.nclass).state_dict(), path)
    DANCE.condense(args, print, device="cpu")


def ref_dm(a, clock: Clock) -> None:
    sys.path[:0] = [str(a.dc_reference)]
    install_stubs(clock)
    import main_DM
    import utils as dc_utils

    cpu_patches(a.dc_reference)
    _width_setting(dc_utils, a.width)
    original = main_DM.get_network

    def get_network(*args, **kwargs):  # called at the top of every iteration
        clock.mark()
        return original(*args, **kwargs)

    main_DM.get_network = get_network
    sys.argv = ["main_DM.py", "--dataset", "CIFAR10", "--model", "ConvNet", "--ipc", "10", "--dsa_strategy",
                "color_crop_cutout_flip_scale_rotate", "--init", "real", "--lr_img", "1", "--num_exp", "1",
                "--num_eval", "0", "--Iteration", str(a.iters), "--batch_real", "256",
                "--data_path", str(a.fixture), "--save_path", str(a.work / "dm_result")]
    main_DM.main()
    clock.end()
    clock.marks = clock.marks[:a.iters + 1]  # main_DM runs Iteration + 1 iterations; keep iters


def ref_epoch(a, clock: Clock) -> None:
    base = a.reference / "DATM+ours"
    sys.path[:0] = [str(base / "buffer"), str(base), str(a.reference)]
    install_stubs(clock)
    import importlib.util

    from utils import utils_gsam

    dataset_patches()
    spec = importlib.util.spec_from_file_location("buffer_FTD", base / "buffer" / "buffer_FTD.py")
    ftd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ftd)
    cpu_patches(a.reference)
    _width_setting(utils_gsam, a.width)
    original = ftd.epoch

    def epoch(mode, *args, **kwargs):
        if mode != "train":
            return original(mode, *args, **kwargs)
        t = time.perf_counter()
        if not clock.spans:
            clock.mark()
        out = original(mode, *args, **kwargs)
        clock.spans.append(time.perf_counter() - t)
        return out

    ftd.epoch = epoch
    args = argparse.Namespace(
        dataset="CIFAR10", subset="imagenette", model="ConvNet", num_experts=1, lr_teacher=0.01, batch_train=256,
        batch_real=256, dsa="True", dsa_strategy="color_crop_cutout_flip_scale_rotate", data_path=str(a.fixture),
        buffer_path=str(a.work / "ftd_out"), train_epochs=a.iters, zca=False, decay=False, mom=0.0, l2=0.0,
        save_interval=10, rho_max=0.01, rho_min=0.01, alpha=0.3, adaptive=True, noise_type="clean",
        noise_rate=0.0, noise_path=None, is_annot=False, is_human=False, is_coarse=False, res=32)
    ftd.main(args)
    clock.end()


# --------------------------------------------------------------------------------------------
# Children: ddlnl
# --------------------------------------------------------------------------------------------


def _short_experts(module) -> None:
    """ddlnl's experts for the benchmark: the method's expert config, on 500 of the images, in memory."""
    original = module.get_experts

    def get_experts(train, cfg, **kwargs):
        kwargs["cache"] = False
        return original(train.subset(torch_arange(500)), cfg, **kwargs)

    module.get_experts = get_experts


def torch_arange(n: int):
    import torch

    return torch.arange(n)


def ours(a, clock: Clock) -> None:
    import torch

    from ddlnl.data import load_cifar10

    train = load_cifar10(a.fixture).train
    if a.method.startswith("datm"):
        from ddlnl.methods import datm

        datm.progress_bar = timed_iter(clock)
        _short_experts(datm)
        cfg = datm.DATMConfig(
            iterations=a.iters, syn_steps=a.syn_steps, batch_syn=100, expert_epochs=2, min_start_epoch=0,
            current_max_start_epoch=2, max_start_epoch=2, syn_lr_init=0.001, lr_img=100, num_experts=1,
            expert_train_epochs=3, width=a.width, zca=False, init="real", cache_experts=False, gradient="tesla")
        datm.distill(train, 10, cfg, seed=0, num_classes=10)
    elif a.method == "dance":
        from ddlnl.methods import dance

        dance.progress_bar = timed_iter(clock)
        _short_experts(dance)
        cfg = dance.DANCEConfig(iterations=a.iters, width=a.width, num_pretrained=2, pretrain_epochs=1,
                                cache_experts=False, precision=a.precision)
        dance.distill(train, 10, cfg, seed=0, num_classes=10)
    elif a.method == "dm":
        from ddlnl.methods import dm

        dm.progress_bar = timed_iter(clock)
        dm.distill(train, 10, dm.DMConfig(iterations=a.iters, width=a.width, batch_real=256, precision=a.precision), seed=0,
                   num_classes=10)
    elif a.method == "epoch":
        from ddlnl import experts
        from ddlnl import train as train_module

        original = train_module.train

        def timed(*args, **kwargs):
            t = time.perf_counter()
            if not clock.spans:
                clock.mark()
            out = original(*args, **kwargs)
            clock.spans.append(time.perf_counter() - t)
            return out

        train_module.train = timed
        cfg = experts.ExpertConfig(num_experts=1, epochs=a.iters, width=a.width, sam_rho=0.01, sam_alpha=0.3,
                                   sam_adaptive=True)
        experts.train_expert(train, cfg, index=0, seed=0, num_classes=10)
        clock.end()
    del torch


def child(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    clock = Clock()
    if a.side == "ref":
        {"datm20": ref_datm, "datm80": ref_datm, "dance": ref_dance, "dm": ref_dm, "epoch": ref_epoch}[a.method](a, clock)
    else:
        ours(a, clock)
    print("RESULT " + json.dumps(clock.result()), flush=True)


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def run_child(a, method: str, side: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cwd = a.work / f"{side}-{method}"
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--side", side,
           "--fixture", str(a.fixture), "--work", str(a.work), "--width", str(a.width), "--iters",
           str(a.iters if method != "epoch" else a.epochs), "--threads", str(a.threads),
           "--syn-steps", "80" if method == "datm80" else "20", "--reference", str(a.reference),
           "--precision", a.precision]
    if a.dc_reference:
        cmd += ["--dc-reference", str(a.dc_reference)]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise SystemExit(f"error: {side} {method} failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["load"] = load
    # The first iteration is a warm-up; an epoch is long enough to count every one.
    counted = out["times"] if method == "epoch" or len(out["times"]) < 2 else out["times"][1:]
    out["per_iter"] = statistics.median(counted)
    print(f"{method} {side}: {out['per_iter']:.2f} s/it over {len(counted)} "
          f"(all: {', '.join(f'{t:.2f}' for t in out['times'])}), peak {out['peak_bytes'] / 2**20:.0f} MiB, "
          f"load {load:.1f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="local checkout of Kciiiman/DD_LNL")
    ap.add_argument("--dc-reference", type=Path, default=None,
                    help="local checkout of VICO-UoE/DatasetCondensation (DM's reference)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--width", type=int, default=128, help="ConvNet width (the study's: 128)")
    ap.add_argument("--iters", type=int, default=4, help="iterations per measurement; the first is a warm-up")
    ap.add_argument("--epochs", type=int, default=1, help="expert epochs per measurement (all counted)")
    ap.add_argument("--pairs", type=int, default=2, help="A B pairs per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="ddlnl's precision option for dm and dance (fp32: the exact path, as the reference)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=RESULTS / "vs_reference.md")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fixture", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--syn-steps", type=int, default=20, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        a.method = a.child
        child(a)
        return
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"error: unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    if not (a.reference / "DATM+ours" / "distill" / "DATM_tesla.py").is_file():
        raise SystemExit(f"error: {a.reference} is not a DD_LNL checkout (no DATM+ours/distill/DATM_tesla.py); "
                         "pass --reference PATH to a local copy of github.com/Kciiiman/DD_LNL")
    if "dm" in methods and not (a.dc_reference and (a.dc_reference / "main_DM.py").is_file()):
        print("note: no --dc-reference with main_DM.py: the DM row is skipped", flush=True)
        methods.remove("dm")
    if a.precision != "fp32" and set(methods) - {"dm", "dance"}:
        raise SystemExit("error: --precision bf16 is a ddlnl option of dm and dance only; pass --methods dm,dance")
    if a.width < 1 or a.iters < 2 or a.epochs < 1 or a.pairs < 1:
        raise SystemExit("error: need --width >= 1, --iters >= 2, --epochs >= 1 and --pairs >= 1")
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="ddlnl-vsref-") if a.work is None else None
    a.work = Path(tmp.name) if tmp else a.work.resolve()
    a.reference = a.reference.resolve()
    a.dc_reference = a.dc_reference.resolve() if a.dc_reference else None
    a.fixture = write_fixture(a.work / "data", 5000, 1000)
    rows = []

    def write(rows):
        _write(a, methods, rows)

    names = {"datm20": "DATM (TESLA), syn_steps 20", "datm80": "DATM (TESLA), syn_steps 80",
             "dance": "DANCE condensation", "dm": "DM (main_DM.py)", "epoch": "expert epoch (FTD, GSAM)"}
    for method in methods:
        pairs = []
        for _ in range(a.pairs):
            pairs.append((run_child(a, method, "ref"), run_child(a, method, "ddlnl")))
        ratios = [r["per_iter"] / o["per_iter"] for r, o in pairs]
        mem = [r["peak_bytes"] / o["peak_bytes"] for r, o in pairs]
        unit = "s/epoch" if method == "epoch" else "s/it"
        rows.append([
            names[method],
            " / ".join(f"{r['per_iter']:.2f}" for r, _ in pairs) + f" {unit}",
            " / ".join(f"{o['per_iter']:.2f}" for _, o in pairs) + f" {unit}",
            f"**{statistics.median(ratios):.2f}x** ({', '.join(f'{x:.2f}' for x in ratios)})",
            " / ".join(f"{r['peak_bytes'] / 2**20:.0f}" for r, _ in pairs),
            " / ".join(f"{o['peak_bytes'] / 2**20:.0f}" for _, o in pairs),
            f"{statistics.median(mem):.2f}",
            " / ".join(f"{(r['peak_bytes'] - r['start_bytes']) / 2**20:.0f} vs {(o['peak_bytes'] - o['start_bytes']) / 2**20:.0f}"
                       for r, o in pairs),
            f"{min(x['load'] for p in pairs for x in p):.1f}-{max(x['load'] for p in pairs for x in p):.1f}",
        ])
        print(rows[-1], flush=True)
        write(rows)


KEPT_HEADING = "Later"  # hand-written "## Later (...)" sections of the committed table, kept by a rerun


def _write(a, methods, rows) -> None:
    from ddlnl.report import kept_section, markdown_table, write_result

    table = markdown_table(["loop", "study's code", "ddlnl", "speed-up (median of pairs)", "peak MiB, study",
                            "peak MiB, ddlnl", "memory ratio study/ddlnl", "loop growth MiB, study vs ddlnl", "load (1 min)"], rows)
    notes = (f"Config: CIFAR-10 format fixture (50,000 + 10,000 images, 3x32x32), ConvNet-3 width "
             f"{a.width} instance norm (the study's: width 128), IPC 10, {a.threads} thread(s) per process, ddlnl precision {a.precision}, "
             f"{a.iters} iterations per measurement, the first a warm-up ({a.epochs} expert epoch(s) for the "
             f"epoch row, all counted); seconds are the median of the rest, one value per measurement, study's code and ddlnl "
             f"alternating ({a.pairs} pairs). Speed-up = study's time / ddlnl's, per pair. Peak memory: the "
             "process's largest resident set during the loop (CPU; both processes hold the 50,000-image set); "
             "loop growth: that peak minus the resident set at the loop's start. The study's code runs unmodified apart "
             "from the patches listed in benchmarks/bench_vs_reference.py (wandb stub, CPU device defaults, "
             "stand-ins for torchvision/kornia/yacs/efficientnet_pytorch where missing, the fixture's MD5 check, the width).")
    if len(rows) < len(methods):
        notes += f" Rows still to come in this run: {', '.join(methods[len(rows):])}."
    print(table)
    later = kept_section(a.out, KEPT_HEADING)
    write_result(a.out, "ddlnl vs the study's code, per iteration", table, notes + ("\n\n" + later if later else ""))


if __name__ == "__main__":
    main()
