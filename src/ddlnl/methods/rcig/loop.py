"""The optimiser of the synthetic set, the pool of networks, learning-rate tuning, and
:func:`distill`."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...augment import fit_zca_space
from ...correction import NoiseModel, check_noise_model
from ...data import LabeledTensors
from ...models import create_model
from ...synthetic import SyntheticSet
from ...utils import derive_seed, generator, progress as progress_bar, retain_freed_cpu_memory
from ..common import class_indices, sample_per_class

from .config import HINV_LR_START, INNER_LR_START, LR_TUNE_BACKOFF, LR_TUNE_GROWTH, LR_TUNE_MAX_TRIES, RCIGConfig
from .network import LinearizedNet
from .losses import _Support, outer_loss
from .solvers import _with_flips, outer_step, solve_hinv, solve_inner


# --------------------------------------------------------------------------------------------
# Optimiser of the synthetic set, networks, pool
# --------------------------------------------------------------------------------------------


class _AdaBelief:
    """AdaBelief (Zhuang et al. 2020) as optax's ``scale_by_belief`` (RCIG's optimiser of the
    synthetic set, ``optax.adabelief``; defaults b1 0.9, b2 0.999, eps = eps_root = 1e-16).

    Per step ``t`` with gradient ``g``: the prediction error uses the moment BEFORE this step's
    update (optax: ``prediction_error = g - state.mu``), ``m <- b1 m + (1 - b1) g``,
    ``s <- b2 s + (1 - b2)(g - m_old)^2 + eps_root``, ``p <- p - lr * m_hat / (sqrt(s_hat) + eps)``
    with ``m_hat = m / (1 - b1^t)``, ``s_hat = s / (1 - b2^t)``.
    """

    def __init__(self, params: list[torch.Tensor], lrs: list[float]) -> None:
        self.params, self.lrs = params, lrs
        self.m = [torch.zeros_like(p) for p in params]
        self.s = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        b1, b2, eps = 0.9, 0.999, 1e-16
        self.t += 1
        for p, g, m, s, lr in zip(self.params, grads, self.m, self.s, self.lrs):
            error = g - m  # with the previous first moment, as optax
            m.mul_(b1).add_(g, alpha=1 - b1)
            s.mul_(b2).add_(error ** 2, alpha=1 - b2).add_(eps)
            m_hat = m / (1 - b1 ** self.t)
            s_hat = s / (1 - b2 ** self.t)
            p.sub_(lr * m_hat / (s_hat.sqrt() + eps))


def _lecun_init_(net: nn.Module, g: torch.Generator) -> None:
    """Flax's default initialisation (RCIG's models are flax ``nn.Conv``/``nn.Dense``): weights
    truncated normal in +-2 std with variance ``1/fan_in`` after truncation, biases zero. It sets
    the scale of the features, hence what the fixed ridge ``lambda`` means."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std, generator=g)
                if module.bias is not None:
                    module.bias.zero_()


def _new_net(cfg: RCIGConfig, *, channels: int, num_classes: int, image_size: tuple[int, int], seed: int,
             device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_model("convnet", channels=channels, num_classes=num_classes, image_size=image_size,
                           depth=cfg.depth, width=cfg.width, norm="none",
                           activation="relu" if cfg.softplus_beta == 0 else "softplus",
                           pooling="avg", softplus_beta=cfg.softplus_beta, width_multiplier=cfg.width_multiplier)
    if cfg.net_init == "lecun":
        _lecun_init_(net, generator(seed))
    return net.to(device=device, dtype=dtype)


class _PoolMember:
    def __init__(self, net: nn.Module, lr: float) -> None:
        self.net = net
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)
        self.steps = 0


def _train_member(member: _PoolMember, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    """Pool training (``do_training_steps`` with ``use_base_params``): the *nonlinear* network on
    the synthetic set, loss ``0.5 ||f(x) - y||^2 / (N K)``, Adam."""
    for _ in range(steps):
        loss = 0.5 * ((member.net(images) - labels) ** 2).sum() / labels.numel()
        member.opt.zero_grad(set_to_none=True)
        loss.backward()
        member.opt.step()
    member.steps += steps


def _monotone(values: list[float]) -> bool:
    return len(values) > 1 and all(a > b for a, b in zip(values[:-1], values[1:]))


def _diverged(values: list[float]) -> bool:
    return len(values) > 1 and values[-1] > values[0]


def tune_learning_rates(lin: LinearizedNet, images: torch.Tensor, labels: torch.Tensor,
                        real_images: torch.Tensor, real_targets: torch.Tensor, cfg: RCIGConfig,
                        l2: float, transition: torch.Tensor | None = None) -> tuple[float, float]:
    """RCIG's start-up search (``distill_dataset.main``): from 1e-5 (inner) and 5e-5 (Hessian
    inverse), multiply by 1.2 after each run while the run's loss curve decreases at every step;
    then multiply by 0.7. The Hessian-inverse search uses the tuned inner lr. Returns
    ``(inner_lr, hinv_lr)``; a value set in ``cfg`` is kept as is."""
    xs, ys = _with_flips(images, labels, cfg.use_flip)
    support = _Support(lin, xs, ys, l2, cfg.jacobian_mb)
    inner_lr = cfg.inner_lr
    if inner_lr is None:
        inner_lr = _search_lr(INNER_LR_START, lambda lr: solve_inner(support, cfg.inner_steps, lr)[1])
    hinv_lr = cfg.hinv_lr
    if hinv_lr is None:
        delta = solve_inner(support, cfg.inner_steps, inner_lr, cfg.solver)[0]
        delta = {k: v.requires_grad_(True) for k, v in delta.items()}
        loss, _ = outer_loss(lin, xs, ys, torch.zeros((), dtype=xs.dtype, device=xs.device), delta,
                             real_images, real_targets, l2, margin=False, transition=transition)
        g = dict(zip(delta, torch.autograd.grad(loss, list(delta.values()))))
        hinv_lr = _search_lr(HINV_LR_START, lambda lr: solve_hinv(support, g, cfg.hinv_steps, lr)[1])
    return float(inner_lr), float(hinv_lr)


@torch.no_grad()
def _search_lr(start: float, losses_at: Callable[[float], list[float]]) -> float:
    """Grow ``start`` by LR_TUNE_GROWTH after each run whose loss curve ``losses_at(lr)`` decreases
    at every step (at most LR_TUNE_MAX_TRIES runs, the first failing run included), then back off."""
    lr = start
    for _ in range(LR_TUNE_MAX_TRIES):
        ok = _monotone(losses_at(lr))
        lr *= LR_TUNE_GROWTH
        if not ok:
            break
    return lr * LR_TUNE_BACKOFF


# --------------------------------------------------------------------------------------------
# distill
# --------------------------------------------------------------------------------------------


def _one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(labels, num_classes).to(dtype)


def distill(train: LabeledTensors, ipc: int, cfg: RCIGConfig = RCIGConfig(), *, seed: int,
            num_classes: int, device: torch.device | str = "cpu", progress: bool = False,
            noise_model: NoiseModel | None = None) -> SyntheticSet:
    """Distil ``train`` (noisy hard labels) into ``ipc`` images per class with RCIG.

    ``noise_model``: ``T`` for ``cfg.noise_correction`` (required when it is on; ignored when off):
    the outer loss on every real batch is forward-corrected by ``T`` (:func:`outer_loss`).

    Returns:
        SyntheticSet with ``num_classes * ipc`` images (class-major initial order: slot ``k``
        started as a real image of noisy class ``k // ipc``), the EMA of the learned set
        (``ema_decay``; RCIG evaluates the EMA), and labels:

        * ``label_output="platt"``: float32 ``N x K`` probabilities ``softmax(s * y)`` where ``y``
          are the learned real-valued targets and ``s = exp(log_temp)`` RCIG's learned Platt scale
          (the factor that turns its regression outputs into logits);
        * ``label_output="hard"``: int64 ``argmax(y)``.

        ``meta``: ``raw_labels`` (``y``, N x K list), ``label_scale`` (``s``), ``loss`` (outer
        loss incl. margin, every ``log_every`` steps), ``accuracy`` (on the real batches),
        ``inner_lr`` / ``hinv_lr`` (start and end), ``l2``, ``init_indices``, ``seconds``.
    """
    cfg.check()
    device = torch.device(device)
    transition = None
    if cfg.noise_correction != "none":
        model = check_noise_model("rcig", cfg.noise_correction, noise_model, num_classes)
        transition = torch.as_tensor(model.transition, dtype=torch.float32, device=device)
    if device.type == "cpu":
        # Every outer step allocates the support Jacobian (N K x P) and the real batch's
        # activations afresh; without this, glibc maps and unmaps each such tensor of 32 MiB or
        # more every time (page faults; see there).
        retain_freed_cpu_memory()
    start_time = time.perf_counter()
    zca_space = None
    if cfg.zca:  # RCIG's normalize_zca preprocessing: distil (and evaluate) in ZCA space
        zca_space = fit_zca_space(train.images, cfg.ZCA_CONVENTION, cfg.zca_reg)
        train = LabeledTensors(zca_space.transform(train.images), train.labels)
    g = generator(derive_seed(seed, "rcig"))
    indices = class_indices(train.labels, num_classes)
    init_idx = sample_per_class(indices, ipc, g)
    if cfg.image_init == "real":
        images = train.images[init_idx].clone().float()
    else:
        images = 0.3 * torch.randn((num_classes * ipc, *train.images.shape[1:]), generator=g)
    images = images.to(device)
    slot_class = torch.arange(num_classes).repeat_interleave(ipc)
    # Centred one-hot (init_proto: one_hot - 1/K).
    labels = (_one_hot(slot_class, num_classes, torch.float32) - 1.0 / num_classes).to(device)
    log_temp = torch.zeros((), device=device)
    l2 = cfg.l2_rate * images.shape[0]

    channels, h, w = train.images.shape[1:]
    net_counter = iter(range(1 << 30))

    def fresh_net() -> nn.Module:
        return _new_net(cfg, channels=channels, num_classes=num_classes, image_size=(h, w),
                        seed=derive_seed(seed, "rcig-net", next(net_counter)), device=device)

    pool = [_PoolMember(fresh_net(), cfg.pool_lr) for _ in range(cfg.pool_size)]
    real_all = train.images.to(device)
    real_labels = train.labels.to(device)
    n_real = real_all.shape[0]
    batch = min(cfg.batch_real, n_real)

    def real_batch() -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randperm(n_real, generator=g)[:batch].to(device)
        return real_all[pick].float(), _one_hot(real_labels[pick], num_classes, torch.float32)

    inner_lr, hinv_lr = cfg.inner_lr, cfg.hinv_lr
    if cfg.solver == "cg":  # conjugate gradients take no learning rate
        inner_lr, hinv_lr = inner_lr or 0.0, hinv_lr or 0.0
    elif inner_lr is None or hinv_lr is None:
        xt, yt = real_batch()
        inner_lr, hinv_lr = tune_learning_rates(LinearizedNet(pool[0].net), images, labels, xt, yt,
                                                cfg, l2, transition)
    lr_start = (inner_lr, hinv_lr)

    params = [images, labels, log_temp]
    opt = _AdaBelief(params, [cfg.lr_img, cfg.lr_img if cfg.learn_labels else 0.0, cfg.lr_temp])
    ema_hidden = [torch.zeros_like(p) for p in params]
    losses: list[float] = []
    accs: list[float] = []
    inner_stats: list[int] = []
    bar = progress_bar(range(cfg.iterations), desc=f"rcig ipc={ipc}", enabled=progress)
    for it in bar:
        member = pool[int(torch.randint(cfg.pool_size, (1,), generator=g))]
        xt, yt = real_batch()
        step = outer_step(LinearizedNet(member.net), images, labels, log_temp, xt, yt, l2=l2,
                          inner_steps=cfg.inner_steps, inner_lr=inner_lr, hinv_steps=cfg.hinv_steps,
                          hinv_lr=hinv_lr, solver=cfg.solver, use_flip=cfg.use_flip,
                          margin=cfg.label_margin, clip_implicit=cfg.clip_implicit,
                          jacobian_mb=cfg.jacobian_mb, transition=transition)
        opt.step([step.grad_images, step.grad_labels, step.grad_log_temp])
        with torch.no_grad():  # EMA (reference get_updated_ema, order 1); bias-corrected after the loop
            for p, hid in zip(params, ema_hidden):
                hid.mul_(cfg.ema_decay).add_(p, alpha=1 - cfg.ema_decay)

        # Online inner-lr rule of run_rcig: 1 = monotone decrease, -1 = ended above its start.
        inner_stats.append(1 if _monotone(step.inner_losses) else -1 if _diverged(step.inner_losses) else 0)
        if cfg.adapt_inner_lr and cfg.solver == "adam" and it > 0 and it % cfg.adapt_every == 0:
            if sum(s == -1 for s in inner_stats) >= 0.29 * len(inner_stats):
                inner_lr *= 0.9
            elif sum(s == 1 for s in inner_stats) >= 0.7 * len(inner_stats):
                inner_lr *= 1.05
            inner_stats = []

        # Train the network just used, on the updated set; 1..pool_max_steps-1 steps (randint).
        xs, ys = _with_flips(images.detach(), labels.detach(), cfg.use_flip)
        n_steps = int(torch.randint(1, cfg.pool_max_steps, (1,), generator=g))
        _train_member(member, xs, ys, n_steps)
        if member.steps >= cfg.pool_reinit_after:
            pool[pool.index(member)] = _PoolMember(fresh_net(), cfg.pool_lr)

        if cfg.log_every and it % cfg.log_every == 0:
            losses.append(step.loss)
            accs.append(step.accuracy)
        if progress:
            bar.set_postfix(loss=f"{step.loss:.3f}", acc=f"{step.accuracy:.2f}")

    ema = ([hid / (1 - cfg.ema_decay ** cfg.iterations) for hid in ema_hidden] if cfg.iterations
           else [p.clone() for p in params])
    out_images, out_raw, out_log_temp = (t.detach().cpu() for t in ema)
    scale = float(out_log_temp.exp())
    if cfg.label_output == "platt":
        out_labels = torch.softmax(scale * out_raw, dim=1).float()
    else:
        out_labels = out_raw.argmax(1)
    return SyntheticSet(images=out_images.float(), labels=out_labels,
                        meta={"method": "rcig", "config": asdict(cfg), "ipc": ipc, "seed": seed,
                              "num_classes": num_classes, "loss": losses, "accuracy": accs,
                              "raw_labels": out_raw.tolist(), "label_scale": scale, "l2": l2,
                              "inner_lr": [lr_start[0], inner_lr], "hinv_lr": [lr_start[1], hinv_lr],
                              "init_indices": init_idx.tolist(),
                              **({"noise_model": model.to_dict()} if transition is not None else {}),
                              "seconds": time.perf_counter() - start_time,
                              **({"image_space": "zca", "zca": zca_space.describe()} if zca_space is not None
                                 else {"image_space": "normalised"})})


def objective(syn: SyntheticSet, real: LabeledTensors, cfg: RCIGConfig, *, seeds: list[int],
              solver: str = "cg", steps: int = 200) -> float:
    """RCIG's outer cross-entropy (no margin term) of a returned set on ``real``, averaged over
    freshly initialised networks (one per seed), with the inner problem solved by ``solver``.

    A fixed yardstick for tests and diagnostics; needs ``meta["raw_labels"]`` and
    ``meta["label_scale"]`` (as :func:`distill` writes them).
    """
    labels = torch.tensor(syn.meta["raw_labels"], dtype=torch.float32)
    log_temp = torch.tensor(math.log(syn.meta["label_scale"]))
    num_classes = labels.shape[1]
    l2 = cfg.l2_rate * syn.images.shape[0]
    xs, ys = _with_flips(syn.images.float(), labels, cfg.use_flip)
    targets = _one_hot(real.labels, num_classes, torch.float32)
    channels, h, w = syn.images.shape[1:]
    total = 0.0
    for s in seeds:
        lin = LinearizedNet(_new_net(cfg, channels=channels, num_classes=num_classes, image_size=(h, w),
                                     seed=s, device=torch.device("cpu")))
        with torch.no_grad():
            delta, _ = solve_inner(_Support(lin, xs, ys, l2, cfg.jacobian_mb), steps, cfg.inner_lr or 1e-3, solver)
            loss, _ = outer_loss(lin, xs, ys, log_temp, delta, real.images.float(), targets, l2, margin=False)
        total += float(loss)
    return total / len(seeds)
