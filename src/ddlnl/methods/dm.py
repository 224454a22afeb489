"""Distribution Matching (Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023).

Synthetic images start as real images of each (noisy) class. Every iteration draws a freshly
initialised ConvNet, embeds a real batch and the synthetic images of each class under the same DSA
transform, and moves the synthetic images so that the class-mean embeddings agree (squared L2
distance, summed over classes). Only the images are learned; labels stay the class of each slot.

Memory: one class at a time, as the reference (``main_DM.py`` embeds each class's real batch
separately, detached). Each class's loss is back-propagated as soon as it is computed and the
gradients accumulate in the synthetic images, so the peak holds one class's real batch (256 images
at the paper setting) and one class's synthetic graph, whatever the number of classes; the
gradient is that of the summed loss (the classes' terms share no synthetic image). On a CPU the
C allocator is told to reuse freed memory (:func:`ddlnl.utils.retain_freed_cpu_memory`): the
activations of each class's real batch are then not page-faulted in again every time.

Why this denoises: a class mean over many real images of a noisy class is dominated by the
majority (clean) pattern when the noise is below the identifiability limit, so the synthetic set is
pulled towards clean class statistics rather than towards individual mislabelled samples.

Defining steps (pinned by ``tests/test_defining_dm.py``):

1. synthetic images start as real images of their (noisy) class (``init="real"``); slot ``k`` has
   the hard label ``k // ipc``, never learned;
2. every iteration embeds with a FRESHLY initialised ConvNet (random weights, never trained);
3. a class's real batch and its synthetic images are augmented with ONE shared DSA draw;
4. the loss is the squared L2 distance between the class-mean embeddings, summed over classes, with
   no gradient through the real side;
5. one SGD step (lr ``lr_img`` 1, momentum 0.5) on the synthetic pixels per iteration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Sequence

import torch

from ..data import LabeledTensors
from ..correction import CORRECTION_SOURCES, NoiseModel, check_noise_model, unmix_means, unmixing_matrix
from ..errors import ConfigError
from ..precision import autocast, check_precision, inplace_relu_
from ..synthetic import SyntheticSet
from ..train import DSA_STRATEGY, TrainConfig, build_model, reinitialize_
from ..utils import derive_seed, generator, progress as progress_bar, retain_freed_cpu_memory
from .common import class_indices, sample_per_class


@dataclass(frozen=True)
class DMConfig:
    """DM hyperparameters; defaults are the published ones (DM code: lr_img 1, momentum 0.5,
    batch_real 256, 20k iterations, real init, ConvNet-3 width 128 with instance norm, DSA)."""

    iterations: int = 20000  # outer iterations (one fresh random network each)
    lr_img: float = 1.0  # SGD learning rate on the synthetic pixels (normalised space)
    momentum: float = 0.5  # SGD momentum on the pixels
    batch_real: int = 256  # real images per class per iteration
    init: str = "real"  # real | noise
    width: int = 128  # embedding ConvNet width
    depth: int = 3  # embedding ConvNet depth
    norm: str = "instance"
    dsa_strategy: str = DSA_STRATEGY  # siamese augmentation shared by real and synthetic batches
    log_every: int = 1  # record the matching loss every this many iterations
    # Structured-noise remedy (ddlnl.correction): none | estimated | true. Not the published method
    # (off by default); with a source of T, each class's matching target is the unmixed mean
    # sum_y B[c, y] mean embed(real of given class y), B = P(true | given)^-1, and one DSA draw per
    # iteration is shared by all classes (the targets mix every class's real batch). "true" is an
    # oracle (the injected noise's realized T).
    noise_correction: str = "none"
    # With the remedy, where the initial images come from (init="real"): "given" (the images of the
    # slot's given class, as DM) | "posterior": images whose P(true | x, given) (the estimated
    # route's per-sample posterior, ddlnl.correction.sample_posterior) is largest for the slot's
    # class, drawn at random among those whose posterior argmax is that class (topped up by the
    # highest posterior), so that a flipped image does not start in the class it was flipped into.
    correction_init: str = "given"
    # With noise_correction=estimated: 1 (T from teachers on the unremedied DM set) | 2: T
    # re-estimated once (ddlnl.remedy.noise_model_for_job): 3 new teachers, trained on the DM set
    # remedied with the first T (this config's correction_init), give T and the posteriors again.
    correction_rounds: int = 1

    # ddlnl option, not in DM: "bf16" embeds under bfloat16 autocast (ddlnl.precision); "fp32" is
    # the exact path, as main_DM.py.
    precision: str = "fp32"

    KEY_NEUTRAL: ClassVar[dict[str, object]] = {"noise_correction": "none", "precision": "fp32",
                                                "correction_init": "given", "correction_rounds": 1}

    # Smaller settings for a 2-core CPU: DM's images move most in the first few hundred iterations
    # (measured on Fashion-MNIST: 81 iterations already took IPC 10 from 37% to 68% at 60% noise), and the class
    # mean of 64 real images is a fair estimate of the 256-image one.
    PRESETS: ClassVar[dict[str, dict]] = {"cpu": {"iterations": 300, "batch_real": 64, "width": 64}}

    def check(self) -> None:
        if self.iterations < 0 or self.batch_real < 1:
            raise ConfigError("dm: iterations must be >= 0 and batch_real >= 1")
        if self.init not in {"real", "noise"}:
            raise ConfigError(f"dm: init {self.init!r}: use real or noise")
        if self.noise_correction not in CORRECTION_SOURCES:
            raise ConfigError(f"dm: noise_correction {self.noise_correction!r}: use one of {', '.join(CORRECTION_SOURCES)}")
        check_precision(self.precision, "dm")
        if self.correction_init not in {"given", "posterior"}:
            raise ConfigError(f"dm: correction_init {self.correction_init!r}: use given or posterior")
        if self.correction_init == "posterior" and (self.noise_correction != "estimated" or self.init != "real"):
            raise ConfigError("dm: correction_init=posterior needs noise_correction=estimated (its per-sample "
                              "posteriors) and init=real")
        if self.correction_rounds not in (1, 2):
            raise ConfigError(f"dm: correction_rounds {self.correction_rounds!r}: use 1 or 2 (T re-estimated once)")
        if self.correction_rounds == 2 and self.noise_correction != "estimated":
            raise ConfigError("dm: correction_rounds=2 re-estimates T: it needs noise_correction=estimated")


def class_matching_loss(net: torch.nn.Module, real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """``||mean embed(real) - mean embed(syn)||^2`` for one class (real side without a graph).

    Args:
        real: ``B x C x H x W`` real images of the class (already augmented).
        syn: ``S x C x H x W`` its synthetic images (already augmented; carries the graph).
    """
    with torch.no_grad():
        mean_real = net.embed(real).float().mean(0)  # .float(): a no-op in float32; bf16 means in float32
    return ((mean_real - net.embed(syn).float().mean(0)) ** 2).sum()


def matching_loss(net: torch.nn.Module, real: list[torch.Tensor], syn: list[torch.Tensor]) -> torch.Tensor:
    """Sum over classes of ``||mean embed(real_c) - mean embed(syn_c)||^2``.

    All classes go through the network in one forward pass: the network's normalisation is
    per-sample (instance norm), so batching classes together changes nothing but speed, at a
    memory cost that grows with the number of classes (:func:`distill` goes class by class).
    """
    sizes_r = [r.shape[0] for r in real]
    sizes_s = [s.shape[0] for s in syn]
    with torch.no_grad():
        emb_r = net.embed(torch.cat(real)).float().split(sizes_r)
    emb_s = net.embed(torch.cat(syn)).float().split(sizes_s)
    loss = torch.zeros((), device=emb_s[0].device)
    for er, es in zip(emb_r, emb_s):
        loss = loss + ((er.mean(0) - es.mean(0)) ** 2).sum()
    return loss


def distill(train: LabeledTensors, ipc: int | Sequence[int], cfg: DMConfig = DMConfig(), *, seed: int,
            num_classes: int, device: torch.device | str = "cpu", progress: bool = False,
            noise_model: NoiseModel | None = None) -> SyntheticSet:
    """Distil ``train`` (noisy labels) into ``ipc`` images per class by distribution matching.

    Args:
        ipc: images per class, or one count per class (a per-class budget, :mod:`ddlnl.longtail`).
        noise_model: ``T`` and the class prior for ``cfg.noise_correction`` (required when it is
            on; :func:`ddlnl.correction.noise_model_for_job` makes it in a job).

    Returns:
        SyntheticSet with hard labels (class-major: ``ipc[0]`` slots of class 0 first) and
        ``meta["loss"]``, the matching loss recorded every ``log_every`` iterations.
    """
    from ..augment import DSA

    cfg.check()
    unmix = None
    if cfg.noise_correction != "none":
        unmix = unmixing_matrix(check_noise_model("dm", cfg.noise_correction, noise_model, num_classes))
    device = torch.device(device)
    if device.type == "cpu":
        # Each class's real batch allocates large activations afresh; without this, glibc maps
        # and unmaps them every time and the page faults took up to half of an iteration here.
        retain_freed_cpu_memory()
    g = generator(derive_seed(seed, "dm"))
    indices = class_indices(train.labels, num_classes)
    counts = [int(ipc)] * num_classes if isinstance(ipc, int) else [int(n) for n in ipc]
    if len(counts) != num_classes:
        raise ConfigError(f"dm: {len(counts)} per-class IPC values for {num_classes} classes: give one per class")
    if cfg.correction_init == "posterior":
        init_idx = posterior_init_indices(noise_model, counts, g)
    else:
        init_idx = sample_per_class(indices, ipc if isinstance(ipc, int) else counts, g)
    if cfg.init == "real":
        syn = train.images[init_idx].clone()
    else:
        syn = torch.randn((sum(counts), *train.images.shape[1:]), generator=g)
    syn = syn.to(device).float().requires_grad_(True)
    labels = torch.arange(num_classes).repeat_interleave(torch.tensor(counts))
    starts = [0] + torch.tensor(counts).cumsum(0).tolist()
    images = train.images.to(device)
    opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    dsa = DSA(cfg.dsa_strategy) if cfg.dsa_strategy else None
    net_cfg = TrainConfig(width=cfg.width, depth=cfg.depth, norm=cfg.norm)
    channels, h, w = train.images.shape[1:]
    losses: list[torch.Tensor] = []
    bar = progress_bar(range(cfg.iterations), desc=f"dm ipc={ipc}", enabled=progress)
    # One network, re-initialised in place each iteration with the weights a fresh build with that
    # iteration's seed would have (bit-identical), instead of constructing a new one every time.
    net = build_model(net_cfg, channels=channels, num_classes=num_classes, image_size=(h, w), seed=0,
                      device=device)
    host = None if device.type == "cpu" else build_model(net_cfg, channels=channels, num_classes=num_classes,
                                                          image_size=(h, w), seed=0)
    inplace_relu_(net)  # the reference's ReLU(inplace=True): same values, less memory traffic
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    for it in bar:
        reinitialize_(net, derive_seed(seed, "dm-net", it), host=host)
        opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=device)
        if unmix is not None:
            loss = _corrected_step(net, images, syn, indices, starts, unmix, cfg, dsa, g)
        for c in range(num_classes if unmix is None else 0):
            idx = indices[c]
            pick = idx[torch.randperm(idx.numel(), generator=g)[:cfg.batch_real]]
            real_c = images[pick.to(device)]
            syn_c = syn[starts[c]:starts[c + 1]]
            if dsa is not None:
                # One parameter set for both batches of the class: the siamese part of DSA.
                draw = dsa.sample(1, g, siamese=True)
                real_c, syn_c = dsa.apply(real_c, draw), dsa.apply(syn_c, draw)
            # Back-propagate class by class: the gradients add up in syn.grad, and only this
            # class's real batch and graph are alive (memory bounded by one class).
            with autocast(device, cfg.precision):
                loss_c = class_matching_loss(net, real_c, syn_c)
            loss_c.backward()
            loss = loss + loss_c.detach()
        opt.step()
        if cfg.log_every and it % cfg.log_every == 0:
            losses.append(loss.detach())  # read once at the end: no device sync per iteration
        if progress:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    return SyntheticSet(images=syn.detach().cpu(), labels=labels,
                        meta={"method": "dm", "config": asdict(cfg), "ipc": ipc if isinstance(ipc, int) else counts,
                              "seed": seed,
                              "num_classes": num_classes,
                              "loss": torch.stack(losses).tolist() if losses else [],
                              "init_indices": init_idx.tolist(),
                              **({"noise_model": noise_model.to_dict()} if unmix is not None else {})})


def posterior_init_indices(noise_model: NoiseModel, counts: Sequence[int], g: torch.Generator) -> torch.Tensor:
    """Class-major initial indices for ``correction_init=posterior``: for class ``c``, ``counts[c]``
    distinct samples drawn at random among those whose ``P(true | x, given)`` argmax is ``c``, the
    rest (when too few) the highest ``P(true = c | x, given)`` among the others; a sample serves
    one slot at most."""
    post = noise_model.sample_posterior
    if post is None:
        raise ConfigError("dm: correction_init=posterior needs per-sample posteriors (the estimated route's "
                          "noise model carries them)")
    post = torch.as_tensor(post)
    best = post.argmax(1)
    used = torch.zeros(post.shape[0], dtype=torch.bool)
    picks = []
    for c, n in enumerate(counts):
        cand = torch.nonzero((best == c) & ~used).flatten()
        take = cand[torch.randperm(cand.numel(), generator=g)[:n]]
        if take.numel() < n:
            rest = torch.nonzero(~used & (best != c)).flatten()
            order = rest[torch.argsort(post[rest, c], descending=True, stable=True)]
            take = torch.cat([take, order[:n - take.numel()]])
        if take.numel() < n:
            raise ConfigError(f"dm: correction_init=posterior: {n} images for class {c}, fewer samples left")
        used[take] = True
        picks.append(take)
    return torch.cat(picks)


def _corrected_step(net: torch.nn.Module, images: torch.Tensor, syn: torch.Tensor, indices: list[torch.Tensor],
                    starts: list[int], unmix, cfg: DMConfig, dsa, g: torch.Generator) -> torch.Tensor:
    """One DM iteration with unmixed targets (``ddlnl.correction``); gradients accumulate in
    ``syn.grad``. One DSA draw for every class, since each target blends all classes' real batches.
    Returns the summed matching loss (detached)."""
    device = syn.device
    draw = dsa.sample(1, g, siamese=True) if dsa is not None else None
    means = []
    with torch.no_grad():
        for idx in indices:
            pick = idx[torch.randperm(idx.numel(), generator=g)[:cfg.batch_real]]
            real = images[pick.to(device)]
            if draw is not None:
                real = dsa.apply(real, draw)
            means.append(net.embed(real).mean(0))
    targets = unmix_means(torch.stack(means), unmix)
    loss = torch.zeros((), device=device)
    for c in range(len(indices)):
        syn_c = syn[starts[c]:starts[c + 1]]
        if draw is not None:
            syn_c = dsa.apply(syn_c, draw)
        loss_c = ((targets[c] - net.embed(syn_c).mean(0)) ** 2).sum()
        loss_c.backward()
        loss = loss + loss_c.detach()
    return loss


def own_recipe(base: TrainConfig, syn: SyntheticSet, dataset_name: str):
    """DM's evaluation recipe: the common one trained for 1000 epochs (main_DM.py
    ``epoch_eval_train``; the DC/DSA protocol uses 300)."""
    from dataclasses import replace

    return replace(base, epochs=1000), syn.as_labeled()
