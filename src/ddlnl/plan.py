"""A memory and time plan for a grid's cells, before anything runs (``ddlnl sweep --dry-run``).

The model is deliberately simple, so that it can be read and checked:

* **Network**: the cell's ConvNet is built once on the CPU; its parameter count ``P`` and, from
  one forward pass with hooks, the elements every layer outputs for one image (``a``: what
  autograd keeps for the backward pass) and the multiply-adds of its convolutions and linear
  layers (``F`` FLOPs per image, forward).
* **Peak memory** = fixed + ``4 a x B`` bytes + the backward buffers ``4 x 2 m x B'`` (the
  gradients of the largest layer's output and input, ``m`` elements per image, for the ``B'``
  images a backward pass runs on), where ``B`` is the number of images whose activations are
  alive at once (method by method, below; for DATM and DANCE the larger of that and the batch
  their experts / pre-trained models are trained with) and the fixed part is the runtime
  (:data:`RUNTIME_BYTES`, measured), ``4 x 3 P`` (weights, gradients, optimizer state), the
  training images on the device (``N x C x H x W x 4``; every method holds them there) and what
  the method holds besides (the synthetic set and its optimizer state; one expert trajectory
  being trained, ``(E + 1) P`` floats; DANCE's pre-trained models; RCIG's pool of networks with
  Adam state and its support Jacobian, twice while it is built).
* **Time** = images through a training step (forward + backward, in units of one image) x the
  seconds one such image costs on this device, *measured* here once per architecture (a few
  steps of batch 32); forward-only passes count 1/3.

``B`` and the step counts per method (``ipc`` images per class, ``K`` classes, ``S = K ipc``):

==========  =====================================================  ==========================================
method      images alive at once (``B``)                            training-step images
==========  =====================================================  ==========================================
random      evaluation batch                                        evaluation only
dm          ``ipc`` with graph + ``2 batch_real`` inputs (one       ``iterations x (S + K batch_real / 3)``
            class at a time) + two layers of ``batch_real``
datm        ``4 x batch_syn`` (TESLA: one step's double backward)   experts ``n E N (x2 FTD)`` + ``iterations x
                                                                    syn_steps x batch_syn x 3``
dance       ``2 x batch_real + ipc factor^2`` per class             pre-training ``n E N`` + ``iterations x K x
                                                                    (2/3 batch_real + ipc factor^2)``
rcig        ``3 x (batch_real + 2 S)`` (linearised: JVP)             ``iterations x (batch_real + 2 S) x
                                                                    (2 + inner_steps + hinv_steps)``
baseline    its batch; the full training set on the device           ``runs x epochs x N``
==========  =====================================================  ==========================================

plus the evaluation (``n_runs x epochs x S`` under the cell's eval_recipe). Experts are shared by the
cells of one data setting; every such cell counts them (the first one to run pays). The estimate
is checked against measured peaks in ``benchmarks/results/memory_plan.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .data import DATASET_FACTS
from .models import create_model
from .utils import free_memory_bytes

BYTES = 4  # float32
# What a process holds once it has trained anything, beyond its imports and whatever the network:
# kernels, thread pools, allocator arenas. Measured on the CPU by the calibration cell of
# benchmarks/bench_memory_plan.py --calibrate (a width-8 ConvNet, batch 8, in a fresh process):
# 99-105 MiB in two runs. A development measurement, not fitted to the benchmark's reported cells.
RUNTIME_BYTES = 100 * 2 ** 20
# (channels, height, width, classes, training images) of the registered datasets (ddlnl.data.DATASET_FACTS), so that a grid
# is planned without reading any data (digits: the fixed 70% training split of 1797 images).
DATASET_SHAPES: dict[str, tuple[int, int, int, int, int]] = {k: f.shape for k, f in DATASET_FACTS.items()}


@dataclass(frozen=True)
class NetStats:
    """One ConvNet's parameters, activation elements and forward FLOPs per image."""

    params: int
    activations: int
    flops: float
    max_layer: int  # elements of the largest single layer output (what a no-grad pass holds)


_NET_CACHE: dict[tuple, NetStats] = {}
_STEP_CACHE: dict[tuple, float] = {}


def _net_kwargs(cfg: Any) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ("depth", "width", "norm") if hasattr(cfg, k)}


def net_stats(net_kwargs: dict[str, Any], channels: int, image_size: tuple[int, int], num_classes: int) -> NetStats:
    """Parameters, activation elements and forward FLOPs for one image of the ConvNet ``net_kwargs``."""
    key = (tuple(sorted(net_kwargs.items())), channels, tuple(image_size), num_classes)
    if key in _NET_CACHE:
        return _NET_CACHE[key]
    net = create_model("convnet", channels=channels, num_classes=num_classes, image_size=tuple(image_size),
                       **net_kwargs)
    acts, flops, largest = [0], [0.0], [0]

    seen: set[int] = set()
    kept: list[torch.Tensor] = []  # alive until the pass ends, so no freed buffer's address is reused

    def hook(module: torch.nn.Module, _inp: Any, out: Any) -> None:
        # A tensor counts once (an identity "norm" or an in-place op returns its input).
        if isinstance(out, torch.Tensor) and out.data_ptr() not in seen:
            seen.add(out.data_ptr())
            kept.append(out)
            acts[0] += out.numel()
            largest[0] = max(largest[0], out.numel())
            if isinstance(module, torch.nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                flops[0] += 2.0 * k * module.in_channels / module.groups * out.numel()
            elif isinstance(module, torch.nn.Linear):
                flops[0] += 2.0 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    with torch.no_grad():
        net(torch.zeros(1, channels, *image_size))
    for h in handles:
        h.remove()
    stats = NetStats(sum(p.numel() for p in net.parameters()), acts[0] + channels * image_size[0] * image_size[1],
                     flops[0], largest[0])
    _NET_CACHE[key] = stats
    return stats


def seconds_per_image_step(net_kwargs: dict[str, Any], channels: int, image_size: tuple[int, int],
                           num_classes: int, device: torch.device, *, reps: int = 7,
                           clock: Callable[[], float] = time.perf_counter) -> float:
    """Measured seconds of one training step per image (forward + backward, batch 32) on ``device``.

    The fastest of ``reps`` timed steps (after one warm-up): other jobs on the machine only ever
    lengthen a step, so the minimum is the least disturbed measure of what it costs. Against a
    machine busy for the whole measurement it cannot help: on this project's 2-core machine, running
    three single-threaded jobs, a batch-32 step of a width-32 ConvNet-3 on 28x28 took 0.037 s at best
    with 1 torch thread and 0.25-1.46 s with 2 (threads waiting for a core), which is why
    ``ddlnl sweep --dry-run`` says when the CPU is busier than its cores.
    """
    key = (tuple(sorted(net_kwargs.items())), channels, tuple(image_size), num_classes, str(device))
    if key in _STEP_CACHE:
        return _STEP_CACHE[key]
    net = create_model("convnet", channels=channels, num_classes=num_classes, image_size=tuple(image_size),
                       **net_kwargs).to(device)
    x = torch.randn(32, channels, *image_size, device=device)
    y = torch.randint(num_classes, (32,), device=device)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up
    times = []
    for _ in range(reps):
        t0 = clock()
        step()
        times.append(clock() - t0)
    value = min(times) / 32
    _STEP_CACHE[key] = value
    return value


def available_memory(device: torch.device) -> int:
    """Free bytes of ``device`` (:func:`ddlnl.utils.free_memory_bytes`); 0 when it cannot be told,
    so that every cell is flagged rather than promised to fit."""
    free = free_memory_bytes(device)
    return 0 if free is None else free


@dataclass(frozen=True)
class CellPlan:
    """The estimate for one cell: peak bytes, seconds, and the parts they were made of."""

    peak_bytes: int
    seconds: float
    parts: dict[str, float]  # named byte counts that make up peak_bytes
    step_images: float  # training-step images (forward + backward units)

    def fits(self, budget: int) -> bool:
        return self.peak_bytes <= budget


def _backward(stats: NetStats, batch: int) -> float:
    """Bytes the backward pass allocates besides the saved activations: the gradient of the largest
    layer's output and of its input, alive together (``2 x max_layer`` per image of ``batch``)."""
    return 2 * stats.max_layer * batch * BYTES


def _train_peak(stats: NetStats, batch: int, data_images: int, image_elems: int) -> dict[str, float]:
    return {"runtime": RUNTIME_BYTES, "network (weights, grads, optimizer)": 3 * stats.params * BYTES,
            "activations": stats.activations * batch * BYTES, "backward buffers": _backward(stats, batch),
            "data": data_images * image_elems * BYTES}


def method_plan(method: str, cfg: Any, *, ipc: int, num_classes: int, n_train: int, channels: int,
                image_size: tuple[int, int], device: torch.device | str = "cpu",
                ) -> tuple[dict[str, float], float, NetStats, dict[str, Any]]:
    """The distillation part of a cell on ``device``: peak parts (bytes), training-step images, the network."""
    k, s = num_classes, ipc * num_classes
    img = channels * image_size[0] * image_size[1]
    net_kw = _net_kwargs(cfg)
    stats = net_stats(net_kw, channels, image_size, k)
    p, a = stats.params, stats.activations
    data = {"runtime": RUNTIME_BYTES, "training images": n_train * img * BYTES,
            "synthetic set (+ optimizer state)": 3 * s * img * BYTES}
    if method == "random":
        return {}, 0.0, stats, net_kw
    if method == "dm":
        # one class at a time (methods/dm.py): its real batch without a graph, its ipc images with one
        real = k * cfg.batch_real
        parts = {**data, "network": p * BYTES, "one class's real batch (augmented copy)": 2 * cfg.batch_real * img * BYTES,
                 "activations": (ipc * a + 2 * cfg.batch_real * stats.max_layer) * BYTES,
                 "backward buffers": _backward(stats, ipc)}
        return parts, cfg.iterations * (s + real / 3), stats, net_kw
    if method == "datm":
        batch = cfg.batch_syn or s
        e = cfg.expert_train_epochs
        parts = {**data, "network + expert endpoints": 4 * p * BYTES,
                 "expert trajectory being trained": (e + 1) * p * BYTES,
                 # training the experts (batch expert_batch) or matching, whichever holds more; a
                 # TESLA step's double backward keeps the forward activations, the first backward's
                 # (with its graph) and the second's gradients of both: 4 copies (raised from 3 after
                 # benchmarks/results/memory_plan.md measured 0.76-0.91x)
                 "activations": max(4 * min(batch, s), cfg.expert_batch) * a * BYTES,
                 "backward buffers": _backward(stats, max(min(batch, s), cfg.expert_batch))}
        experts = cfg.num_experts * e * n_train * (2 if cfg.expert_ftd else 1)
        return parts, experts + cfg.iterations * cfg.syn_steps * min(batch, s) * 3, stats, net_kw
    if method == "dance":
        decoded = ipc * cfg.factor ** 2
        parts = {**data, "pre-trained models": 2 * cfg.num_pretrained * p * BYTES,
                 "activations": max(2 * cfg.batch_real + decoded, cfg.pretrain_batch) * a * BYTES,
                 "backward buffers": _backward(stats, max(decoded, cfg.pretrain_batch))}
        pre = cfg.num_pretrained * cfg.pretrain_epochs * n_train
        return parts, pre + cfg.iterations * k * (2 * cfg.batch_real / 3 + decoded), stats, net_kw
    if method == "rcig":
        from .methods.rcig import jacobian_budget_mb

        n = cfg.batch_real + (2 if cfg.use_flip else 1) * s
        parts = {**data, "network pool (+ Adam state)": 3 * cfg.pool_size * p * BYTES,
                 # the JVP's primal and tangent activations, and the reverse pass through it keeps
                 # a third copy (raised from 2 after benchmarks/results/memory_plan.md measured 0.71x)
                 "activations": 3 * n * a * BYTES, "backward buffers": _backward(stats, n),
                 # materialised up to its budget; about two copies while it is built (methods/rcig.py)
                 "support Jacobian": 2 * min(s * k * p * BYTES, jacobian_budget_mb(cfg.jacobian_mb, device) * 2 ** 20)}
        return parts, cfg.iterations * n * (2 + cfg.inner_steps + cfg.hinv_steps), stats, net_kw
    return {**data, "activations": s * a * BYTES}, 0.0, stats, net_kw  # an unknown method: the set itself


def plan_cell(resolved: Any, method: str, ipc: int, *, num_classes: int, n_train: int, channels: int,
              image_size: tuple[int, int], device: torch.device, baseline: bool = False,
              eval_cfg: Any = None) -> CellPlan:
    """Peak memory and time of one cell (a method at ``ipc``, or a full-noisy baseline).

    ``resolved`` is the cell's :class:`ddlnl.pipeline.ResolvedJob`; ``eval_cfg`` the
    :class:`TrainConfig` it is evaluated with (default: ``resolved.train``).
    """
    img = channels * image_size[0] * image_size[1]
    job = resolved.job
    if baseline:
        cfg = resolved.baseline
        stats = net_stats(_net_kwargs(cfg), channels, image_size, num_classes)
        parts = _train_peak(stats, min(cfg.batch_size, n_train), n_train, img)
        steps = job.runs_per_baseline * cfg.epochs * n_train
        per = seconds_per_image_step(_net_kwargs(cfg), channels, image_size, num_classes, device)
        return CellPlan(int(sum(parts.values())), steps * per, parts, steps)
    mcfg = resolved.method_cfg(method, ipc)
    parts, steps, stats, net_kw = method_plan(method, mcfg, ipc=ipc, num_classes=num_classes, n_train=n_train,
                                              channels=channels, image_size=image_size, device=device)
    seconds = steps * seconds_per_image_step(net_kw, channels, image_size, num_classes, device) if steps else 0.0
    ecfg = eval_cfg or resolved.train
    s = ipc * num_classes
    estats = net_stats(_net_kwargs(ecfg), channels, image_size, num_classes)
    eparts = _train_peak(estats, min(ecfg.batch_size, s), s, img)
    eval_steps = job.n_runs * ecfg.epochs * s
    seconds += eval_steps * seconds_per_image_step(_net_kwargs(ecfg), channels, image_size, num_classes, device)
    # The evaluation runs after distillation: the peak is the larger of the two (the training
    # images stay loaded for both).
    eval_peak = sum(eparts.values()) + n_train * img * BYTES
    if sum(parts.values()) < eval_peak:
        parts = {**eparts, "training images": n_train * img * BYTES}
    return CellPlan(int(sum(parts.values())), seconds, parts, steps + eval_steps)


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


def fmt_seconds(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.0f} min"
    return f"{s:.0f} s"


