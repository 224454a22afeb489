"""RCIG (Loo, Hasani, Lechner & Rus, "Dataset Distillation with Convexified Implicit Gradients", ICML 2023).

Distillation as a bilevel problem, made convex and cheap:

* **Convexified inner model.** A ConvNet without normalisation, with ``softplus(beta x) / beta``
  activations (smooth, so second derivatives exist; beta = 60), is linearised around its current
  weights ``theta0`` (taken from a pool, below). The reference (``algorithms.get_linear_forward``)
  uses the *centred* linearisation: only the tangent part ``J(x; theta0) Delta`` is a prediction,
  ``f(x; theta0)`` itself is dropped.
* **Final layer in closed form.** The final-layer weight is not part of ``Delta``: its Jacobian is
  just the penultimate features ``phi0(x) = phi(x; theta0)``, so for a given body ``Delta`` it is
  solved by kernel ridge regression with ``K = phi0 phi0^T`` (no trace scaling) and ridge
  ``lambda = l2_rate * N`` (``N`` learned images, flips not counted; ``distill_dataset.py``). The
  prediction on any ``x`` is ``J(x) Delta + phi0(x) phi0_s^T (K_ss + lambda I)^-1 (Y_s - J_s Delta)``
  (``algorithms.get_krr_loss``).
* **Inner problem** (``get_krr_loss_gd``, ``self_loss``): ridge regression of the learned labels,
  ``[0.5 ||Y_s - preds_s||^2 + 0.5 lambda (||W*||^2 + ||Delta||^2)] / (N K)``; ``Delta`` (all conv
  weights and biases and the final bias) takes a few Adam steps from 0. Because ``W*`` is optimal,
  the loss equals ``0.5 lambda [<R, (K + lambda I)^-1 R> + ||Delta||^2] / (N K)`` with
  ``R = Y_s - J_s Delta``: a convex quadratic in ``Delta`` whose gradient is one JVP and one VJP.
* **Outer loss** on a real batch: cross-entropy of the Platt-scaled predictions
  ``exp(log_temp) * preds`` against the (noisy) one-hot labels, minus a small label-margin bonus.
* **Implicit gradient.** ``dL/dx = dL/dx|_direct - d/dx <v, grad_Delta L_inner>`` with
  ``v = H^-1 dL/dDelta`` approximated by a few Adam steps on ``0.5 v^T H v - g^T v``
  (``get_h_inv_vp``); the implicit part is clipped to the direct part's norm, tensor by tensor,
  and the two are added (``do_meta_train_step``).
* **Model pool.** 30 networks; each outer step uses a random one, then trains its (nonlinear)
  weights for 1..15 Adam steps on the current synthetic set (MSE); a network is re-initialised
  once it has taken 100 steps (``run_rcig``).

Learned labels start as centred one-hot vectors (``init_proto``) and are real-valued regression
targets; the returned :class:`SyntheticSet` carries probabilities ``softmax(exp(log_temp) * y)``
(RCIG's own Platt scale turns regression outputs into logits) and keeps the raw targets in
``meta["raw_labels"]`` for an MSE evaluation (:func:`rcig_eval_recipe`).

Why this may denoise: the outer loss fits the *real* noisy batch through a heavily regularised,
convex model; learned labels can move away from a slot's initial (noisy) class, and the
label-margin bonus is capped at ``1/(2K)``, so it does not stop a label from flipping.

Deviations from the reference, each deliberate:
  * the final-layer weight is excluded from ``Delta`` in the Hessian-inverse product too (the
    reference keeps a never-trained zero tangent for it there, at which the inner problem is not
    stationary, so the implicit function theorem does not apply in that direction);
  * the inner Adam state starts fresh at every outer step (the reference reuses the pool model's
    optimiser state, whose step count only changes Adam's bias correction);
  * ``solver="cg"`` (conjugate gradients, exact for the quadratic) is offered for tests/ablations.

ZCA (``zca=True``): RCIG whitens every dataset but MNIST/Fashion-MNIST (``dataloader.py``
``normalize_zca``; ``ops.get_whitening_transform``: biased covariance of the per-channel
standardised images, ``zca_reg * trace / D`` added to the eigenvalues, reg 0.1); the training
images are whitened so (convention ``rcig`` of :func:`ddlnl.augment.fit_zca_space`) and the set
records ``image_space = "zca"``, so evaluation whitens the test images the same way.

The reference ConvNet doubles its width per block (``width_multiplier=2``: 128, 256, 512) and
pads 1-channel 28x28 inputs by 3 in the first convolution (28x28 -> 32x32; :mod:`ddlnl.models`).

Defining steps (pinned by ``tests/test_defining_rcig.py``, ``tests/test_rcig.py``):

1. centred predictions of the linearised network plus the closed-form kernel-ridge final layer,
   ridge ``l2_rate * N``;
2. the inner problem solved for ``Delta`` from 0; the implicit gradient ``v = H^-1 dL/dDelta``,
   clipped to the direct part's norm;
3. outer loss: Platt-scaled cross-entropy MINUS the capped label margin;
4. the model pool: a random network per outer step, trained on the current set afterwards and
   re-initialised after ``pool_reinit_after`` steps;
5. AdaBelief on the synthetic set (optax ``scale_by_belief``); the lr search at start-up and the
   online inner-lr rule; centred one-hot initial labels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ..augment import fit_zca_space
from ..data import LabeledTensors
from ..errors import ConfigError
from ..models import create_model
from ..synthetic import SyntheticSet
from ..train import TrainConfig
from ..utils import derive_seed, generator, progress as progress_bar
from .common import class_indices, sample_per_class

Params = dict[str, torch.Tensor]

# Learning-rate tuning as in distill_dataset.main: start small, x1.2 while the loss curve stays
# monotone, then x0.7; and the online rule of run_rcig for the inner lr.
INNER_LR_START = 1e-5
HINV_LR_START = 5e-5
LR_TUNE_GROWTH = 1.2
LR_TUNE_BACKOFF = 0.7
LR_TUNE_MAX_TRIES = 100


@dataclass(frozen=True)
class RCIGConfig:
    """RCIG hyperparameters; defaults are the published CIFAR-10 ones.

    Sources: ``configs_final/depth_3.txt`` (d3), ``distill_dataset.py`` (dd), ``algorithms.py``
    (alg), ``models.py`` (mod) and the README's CIFAR-10 IPC 10 command of yolky/RCIG.
    """

    iterations: int = 10000  # outer steps (README: --max_steps 10000; checkpoint_10000 shipped)
    batch_real: int = 1024  # real images per outer step (dd get_config: kernel.batch_size)
    lr_img: float = 0.003  # AdaBelief lr on pixels and labels (d3 proto_learning_rate)
    lr_temp: float = 0.03  # AdaBelief lr on log Platt scale (alg run_rcig coreset_opt); 0 freezes it
    learn_labels: bool = True  # labels are learned (d3 learn_labels)
    label_margin: bool = True  # subtract mean min(top1 - top2, 1/(2K)) of labels (alg get_krr_loss)
    l2_rate: float = 0.0005  # ridge lambda = l2_rate * N for N learned images (d3 l2_rate; dd)
    inner_steps: int = 20  # Adam steps on Delta per outer step (d3 n_inner_steps)
    hinv_steps: int = 20  # Adam steps for H^-1 g (d3 n_hinv_steps)
    inner_lr: float | None = None  # inner Adam lr; None: tuned as published (dd main, from 1e-5)
    hinv_lr: float | None = None  # Hessian-inverse Adam lr; None: tuned (dd main, from 5e-5)
    adapt_inner_lr: bool = True  # every adapt_every steps: x0.9 if >= 29% of inner runs end
    adapt_every: int = 50  #   above their start, x1.05 if >= 70% decrease monotonically (alg)
    pool_size: int = 30  # networks in the pool (d3 pool_model_count)
    pool_lr: float = 5e-5  # Adam lr of pool networks' own training (d3 pool_learning_rate)
    pool_max_steps: int = 16  # a visit trains 1..pool_max_steps-1 steps (d3 n_max_steps_pool)
    pool_reinit_after: int = 100  # re-initialise a network after this many steps (d3 max_online_steps)
    width: int = 128  # ConvNet width of the first block (dd: width=128)
    width_multiplier: int = 2  # block i has width * 2**i channels (mod Conv: features=width * 2**i: 128, 256, 512)
    depth: int = 3  # conv blocks (dd: depth 3 for 28x28 and 32x32)
    softplus_beta: float = 60.0  # softplus(beta x)/beta in place of ReLU (d3 softplus_temp)
    net_init: str = "lecun"  # lecun: flax defaults (truncated-normal lecun, zero bias) | torch
    image_init: str = "real"  # real | noise (0.3 N(0,1), dd --init_random_noise)
    use_flip: bool = True  # add horizontal flips of the synthetic set (d3 use_flip; FRePo trick)
    clip_implicit: bool = True  # clip implicit to direct gradient norm per tensor (alg)
    ema_decay: float = 0.99  # EMA of the synthetic set; eval.py evaluates ema_average (alg)
    solver: str = "adam"  # adam (published) | cg (exact conjugate gradients; our addition)
    jacobian_mb: float | None = None  # materialise the support Jacobian (N K x P) up to this many
    #   MiB: same maths, faster inner/Hessian solves; None: a quarter of the memory free on the
    #   device at the time (jacobian_budget_mb); 0 = always JVP/VJP (speed knob only)
    label_output: str = "platt"  # platt: softmax(exp(log_temp) * y) | hard: argmax of y
    zca: bool = False  # distil in ZCA space (dataloader.py: normalize_zca for every dataset but MNIST/Fashion-MNIST)
    zca_reg: float = 0.1  # RCIG zca_reg: reg * trace(cov) / D added to the eigenvalues (ops.get_whitening_transform)
    log_every: int = 1  # record the outer loss every this many iterations

    # Fashion-MNIST (28x28, 10k-image subset), IPC 10 on 2 CPU cores in about 3-5 minutes
    # (~1.2-1.8 s an outer step on a loaded 2-core machine, plus ~20 s of lr search).
    # use_flip off: depth_3_no_flip.txt is RCIG's own (Fashion-)MNIST setting. Width 32 (cost ~
    # width^2), 10 inner and 10 Hessian-inverse steps, 256 real images per step; 8 networks so
    # each is still re-initialised about once in the run. 150 steps instead of thousands, so the
    # pixel/label rate is ~3x the published 0.003 (AdaBelief steps are ~lr per entry; a label
    # needs to move ~0.5 to change its argmax).
    # Constant width (width_multiplier 1) on the CPU: doubling per block costs ~5x per step at depth 3.
    PRESETS: ClassVar[dict[str, dict]] = {"cpu": {
        "iterations": 150, "batch_real": 256, "width": 32, "inner_steps": 10, "hinv_steps": 10,
        "pool_size": 8, "use_flip": False, "lr_img": 0.01, "width_multiplier": 1}}
    # Added after results existed: at this value it leaves result keys unchanged.
    KEY_NEUTRAL: ClassVar[dict[str, Any]] = {"width_multiplier": 1, "zca": False, "zca_reg": 0.1}
    ZCA_CONVENTION: ClassVar[str] = "rcig"  # RCIG/FRePo ops.get_whitening_transform

    def check(self) -> None:
        if self.iterations < 0 or self.batch_real < 1 or self.pool_size < 1:
            raise ConfigError("rcig: iterations must be >= 0, batch_real and pool_size >= 1")
        if self.inner_steps < 0 or self.hinv_steps < 0:
            raise ConfigError("rcig: inner_steps and hinv_steps must be >= 0")
        if self.zca_reg <= 0:
            raise ConfigError(f"rcig: zca_reg must be > 0 (RCIG uses 0.1), got {self.zca_reg}")
        if self.width_multiplier < 1:
            raise ConfigError(f"rcig: width_multiplier must be >= 1, got {self.width_multiplier}")
        if self.pool_max_steps < 2 or self.pool_reinit_after < 1:
            raise ConfigError("rcig: pool_max_steps must be >= 2 and pool_reinit_after >= 1")
        if self.l2_rate <= 0:
            raise ConfigError(f"rcig: l2_rate must be > 0, got {self.l2_rate}")
        for key, value in (("inner_lr", self.inner_lr), ("hinv_lr", self.hinv_lr)):
            if value is not None and value <= 0:
                raise ConfigError(f"rcig: {key} must be > 0 or none (tuned), got {value}")
        choices = {"net_init": ("lecun", "torch"), "image_init": ("real", "noise"),
                   "solver": ("adam", "cg"), "label_output": ("platt", "hard")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"rcig: {key} {getattr(self, key)!r}: use {' or '.join(allowed)}")


# --------------------------------------------------------------------------------------------
# Parameter dictionaries as vectors
# --------------------------------------------------------------------------------------------


def _zeros(p: Params) -> Params:
    return {k: torch.zeros_like(v) for k, v in p.items()}


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)  # type: ignore[return-value]


def _axpy(alpha: float | torch.Tensor, x: Params, y: Params) -> Params:
    """``alpha * x + y``."""
    return {k: alpha * x[k] + y[k] for k in x}


# --------------------------------------------------------------------------------------------
# The linearised network
# --------------------------------------------------------------------------------------------


class _LogitsAndFeatures(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net.embed(x)
        return self.net.classifier(feats), feats


class LinearizedNet:
    """A network linearised around its current weights ``theta0``, final-layer weight held out.

    ``f_lin(x; theta0 + Delta) = f(x; theta0) + J(x; theta0) Delta`` where ``Delta`` covers every
    parameter except the final-layer weight (``classifier.weight``), whose role is taken by the
    kernel-ridge head (:func:`krr_fit`) on the penultimate features ``phi0(x)``. RCIG itself
    predicts with the centred part ``J Delta`` plus that head (:func:`outer_predictions`).

    ``base`` holds ``theta0`` without the head, keyed by the wrapped module's parameter names
    (``"net.features.0.weight"``, ..., ``"net.classifier.bias"``); a tangent ``Delta`` is a dict
    with the same keys, shapes and dtypes.

    Args:
        net: a module with ``embed(x) -> N x D`` and a linear ``classifier`` (e.g. ConvNet); its
            weights are read once (detached) and never changed here.
    """

    HEAD = "net.classifier.weight"

    def __init__(self, net: nn.Module) -> None:
        self.module = _LogitsAndFeatures(net)
        params = {k: v.detach() for k, v in self.module.named_parameters()}
        self.head = params.pop(self.HEAD)
        self.base: Params = params  # theta0 without the final-layer weight

    def zero_tangent(self) -> Params:
        """``Delta = 0`` with the shapes, dtypes and device of ``theta0``."""
        return _zeros(self.base)

    def _call(self, params: Params, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return functional_call(self.module, {**params, self.HEAD: self.head}, (x,))

    def network(self, x: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """The (nonlinear) network's logits ``N x K`` at ``params`` (default ``theta0``)."""
        return self._call(self.base if params is None else params, x)[0]

    def tangent(self, x: torch.Tensor, delta: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(phi0(x), f(x; theta0), J(x; theta0) Delta)``: features ``N x D``, logits and the
        linearised change ``N x K``, by one forward-mode pass (``torch.func.jvp``).

        Differentiable with respect to ``x`` and ``delta`` (reverse-over-forward).
        """
        (logits, feats), (dlogits, _) = jvp(lambda p: self._call(p, x), (self.base,), (delta,))
        return feats, logits, dlogits

    def __call__(self, x: torch.Tensor, delta: Params) -> torch.Tensor:
        """``f_lin(x; theta0 + Delta)``, logits ``N x K``."""
        _, logits, dlogits = self.tangent(x, delta)
        return logits + dlogits


# --------------------------------------------------------------------------------------------
# Kernel ridge head
# --------------------------------------------------------------------------------------------


class _RidgeSolver:
    """Solves ``(K + l2 I) A = B`` for a fixed ``K`` (Cholesky; LU if Cholesky breaks down)."""

    def __init__(self, gram: torch.Tensor, l2: float) -> None:
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        self.matrix = gram + l2 * eye
        chol, info = torch.linalg.cholesky_ex(self.matrix)
        self.chol = chol if int(info) == 0 else None

    def __call__(self, rhs: torch.Tensor) -> torch.Tensor:
        if self.chol is not None:
            return torch.cholesky_solve(rhs, self.chol)
        return torch.linalg.solve(self.matrix, rhs)


def krr_fit(feats: torch.Tensor, targets: torch.Tensor, l2: float) -> torch.Tensor:
    """Dual coefficients ``alpha = (F F^T + l2 I)^-1 targets`` of kernel ridge regression.

    Args:
        feats: ``N x D`` features of the support (synthetic) set; the kernel is ``F F^T`` (linear
            in the features, as RCIG: no trace scaling).
        targets: ``N x K`` regression targets.
        l2: ridge ``lambda > 0``.

    Returns:
        ``N x K`` tensor, differentiable in ``feats`` and ``targets``. The equivalent final-layer
        weight is ``W = F^T alpha`` (``D x K``), the minimiser of
        ``0.5 ||targets - F W||^2 + 0.5 l2 ||W||^2``.
    """
    return _RidgeSolver(feats @ feats.T, l2)(targets)


def krr_predict(feats_support: torch.Tensor, targets: torch.Tensor, feats_query: torch.Tensor,
                l2: float) -> torch.Tensor:
    """Kernel ridge predictions ``F_q F_s^T (F_s F_s^T + l2 I)^-1 targets``, ``M x K``."""
    return feats_query @ (feats_support.T @ krr_fit(feats_support, targets, l2))


# --------------------------------------------------------------------------------------------
# Inner and outer objectives
# --------------------------------------------------------------------------------------------


def inner_loss(lin: LinearizedNet, images: torch.Tensor, labels: torch.Tensor, delta: Params,
               l2: float) -> torch.Tensor:
    """RCIG's inner (training) loss of the linearised network with the KRR final layer.

    ``[0.5 ||Y - preds||^2 + 0.5 l2 (||W*||^2 + ||Delta||^2)] / (N K)`` with ``preds = J Delta +
    phi0 W*`` and ``W*`` the ridge solution; written as ``0.5 l2 [<R, (K + l2 I)^-1 R> +
    ||Delta||^2] / (N K)``, ``R = Y - J Delta``, which is the same number.

    Args:
        images: ``N x C x H x W`` support images (flips already appended if used).
        labels: ``N x K`` real-valued targets.
        delta: tangent (see :class:`LinearizedNet`).
    """
    feats, _, dlogits = lin.tangent(images, delta)
    resid = labels - dlogits
    alpha = krr_fit(feats, resid, l2)
    return 0.5 * l2 * ((resid * alpha).sum() + _dot(delta, delta)) / labels.numel()


def outer_predictions(lin: LinearizedNet, images: torch.Tensor, labels: torch.Tensor, delta: Params,
                      query: torch.Tensor, l2: float) -> torch.Tensor:
    """Regression outputs ``N_q x K`` on ``query`` of the trained linearised network:
    ``J_q Delta + phi0_q phi0_s^T (K_ss + l2 I)^-1 (Y_s - J_s Delta)`` (centred, as the reference)."""
    feats_s, _, dlogits_s = lin.tangent(images, delta)
    feats_q, _, dlogits_q = lin.tangent(query, delta)
    return dlogits_q + krr_predict(feats_s, labels - dlogits_s, feats_q, l2)


def label_margin(labels: torch.Tensor) -> torch.Tensor:
    """Mean of ``min(top1 - top2, 1/(2K))`` over rows: RCIG subtracts it from the outer loss so a
    label's leading entry stays a little ahead of the next (reference ``get_krr_loss``)."""
    top2 = labels.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]).clamp(max=1.0 / (2 * labels.shape[1])).mean()


def outer_loss(lin: LinearizedNet, images: torch.Tensor, labels: torch.Tensor, log_temp: torch.Tensor,
               delta: Params, real_images: torch.Tensor, real_targets: torch.Tensor, l2: float,
               margin: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Platt-scaled cross-entropy on a real batch, and the batch accuracy.

    Args:
        real_targets: ``M x K`` one-hot (rows are probabilities) labels of ``real_images``.
        log_temp: scalar; logits are ``exp(log_temp) * outer_predictions``.
        margin: subtract :func:`label_margin` of ``labels``.

    Returns:
        ``(loss, accuracy)``, both 0-d tensors; the loss is differentiable in everything.
    """
    preds = outer_predictions(lin, images, labels, delta, real_images, l2)
    loss = -(real_targets * F.log_softmax(preds * log_temp.exp(), dim=1)).sum(1).mean()
    if margin:
        loss = loss - label_margin(labels)
    acc = (preds.argmax(1) == real_targets.argmax(1)).float().mean()
    return loss, acc.detach()


# Share of the free device memory the materialised support Jacobian may take when
# ``jacobian_mb`` is None: building it (vmap of jacrev, then one concatenation) holds about two
# copies at its peak, so half the free memory at most, leaving the rest to the solves.
JACOBIAN_FREE_FRACTION = 0.25


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


def jacobian_budget_mb(jacobian_mb: float | None, device: torch.device | str) -> float:
    """The Jacobian budget in MiB: ``jacobian_mb`` when set, else :data:`JACOBIAN_FREE_FRACTION`
    of :func:`free_memory_bytes` (512 MiB where the free memory is unknown)."""
    if jacobian_mb is not None:
        return float(jacobian_mb)
    free = free_memory_bytes(device)
    return 512.0 if free is None else JACOBIAN_FREE_FRACTION * free / 2 ** 20


class _Support:
    """The inner problem for fixed support images/labels: a convex quadratic in ``Delta``.

    ``grad = c (Delta - J^T alpha)``, ``H v = c (v + J^T (K + l2 I)^-1 J v)``, ``c = l2 / (N K)``,
    ``alpha = (K + l2 I)^-1 (Y - J Delta)``. ``J`` (``N K x P``) is materialised when it fits in
    ``jacobian_mb`` MiB (per-sample ``jacrev``: about ten backward passes once, then every solver
    step is two matrix-vector products); otherwise every product is one JVP or one VJP at
    ``theta0`` (the VJP graph is built once). Both give the same numbers up to rounding.
    """

    def __init__(self, lin: LinearizedNet, images: torch.Tensor, labels: torch.Tensor, l2: float,
                 jacobian_mb: float | None = 0.0) -> None:
        self.lin, self.images, self.labels = lin, images.detach(), labels.detach()
        jacobian_mb = jacobian_budget_mb(jacobian_mb, self.images.device)
        self.l2 = l2
        self.scale = l2 / labels.numel()
        n_params = sum(v.numel() for v in lin.base.values())
        itemsize = self.images.element_size()
        self.jacobian: torch.Tensor | None = None
        if labels.numel() * n_params * itemsize <= jacobian_mb * 2 ** 20:
            with torch.no_grad():
                feats = lin._call(lin.base, self.images)[1]
                self.jacobian = self._materialise()
        else:
            _, self._vjp, feats = vjp(lambda p: lin._call(p, self.images), lin.base, has_aux=True)
        self.solve = _RidgeSolver(feats.detach() @ feats.detach().T, l2)

    def _materialise(self) -> torch.Tensor:
        lin = self.lin

        def logits_one(params: Params, image: torch.Tensor) -> torch.Tensor:
            return lin._call(params, image[None])[0][0]

        # Images are independent, so per-sample Jacobians (K rows each) make up J.
        jac = vmap(jacrev(logits_one), in_dims=(None, 0), chunk_size=16)(lin.base, self.images)
        rows = self.labels.numel()
        return torch.cat([jac[k].reshape(rows, -1) for k in lin.base], dim=1)

    def _jv(self, v: Params) -> torch.Tensor:
        if self.jacobian is None:
            return self.lin.tangent(self.images, v)[2]
        flat = torch.cat([v[k].reshape(-1) for k in self.lin.base])
        return (self.jacobian @ flat).view_as(self.labels)

    def _jt(self, cotangent: torch.Tensor) -> Params:
        if self.jacobian is None:
            return self._vjp(cotangent)[0]
        flat = self.jacobian.T @ cotangent.reshape(-1)
        sizes = [v.numel() for v in self.lin.base.values()]
        return {k: part.view_as(self.lin.base[k]) for k, part in zip(self.lin.base, flat.split(sizes))}

    def value_and_grad(self, delta: Params) -> tuple[float, Params]:
        resid = self.labels - self._jv(delta)
        alpha = self.solve(resid)
        value = 0.5 * self.scale * float((resid * alpha).sum() + _dot(delta, delta))
        jt_alpha = self._jt(alpha)
        return value, {k: self.scale * (delta[k] - jt_alpha[k]) for k in delta}

    def hvp(self, v: Params) -> Params:
        back = self._jt(self.solve(self._jv(v)))
        return {k: self.scale * (v[k] + back[k]) for k in v}


# --------------------------------------------------------------------------------------------
# Solvers (Adam as published; conjugate gradients for exact answers)
# --------------------------------------------------------------------------------------------


def _adam_minimize(value_and_grad: Callable[[Params], tuple[float, Params]], x0: Params, lr: float,
                   steps: int) -> tuple[Params, list[float]]:
    """``steps`` Adam steps (optax defaults b1 0.9, b2 0.999, eps 1e-8); values before each step."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    x, m, v = dict(x0), _zeros(x0), _zeros(x0)
    values: list[float] = []
    for t in range(1, steps + 1):
        value, g = value_and_grad(x)
        values.append(value)
        for k in x:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
            x[k] = x[k] - lr * (m[k] / (1 - b1 ** t)) / ((v[k] / (1 - b2 ** t)).sqrt() + eps)
    return x, values


def _cg_solve(hvp: Callable[[Params], Params], rhs: Params, steps: int) -> tuple[Params, list[float]]:
    """Conjugate gradients for ``H x = rhs`` from 0; values ``x^T (H x - 2 rhs)`` per step.

    Stops once the residual norm falls below ``10 * eps`` (of the dtype) times the right-hand side's:
    past that point the float32 recurrences lose conjugacy and the iterate can run away (observed:
    :func:`objective` at 2e9 and 1e17 on a 4-class toy problem with 200 steps, instead of O(1)).
    """
    x, r = _zeros(rhs), dict(rhs)
    p, rs = dict(r), _dot(r, r)
    eps = torch.finfo(next(iter(rhs.values())).dtype).eps
    stop = (10 * eps) ** 2 * float(rs)  # squared norms: ||r|| <= 10 eps ||rhs||
    values: list[float] = []
    for _ in range(steps):
        values.append(float(-_dot(x, _axpy(1.0, rhs, r))))  # x^T(Hx - 2b) = -x^T(b + r)
        hp = hvp(p)
        curvature = _dot(p, hp)
        if float(rs) <= stop or float(curvature) <= 0.0:
            break
        a = rs / curvature
        x, r = _axpy(a, p, x), _axpy(-a, hp, r)
        rs_new = _dot(r, r)
        p, rs = _axpy(rs_new / rs, p, r), rs_new
    return x, values


def solve_inner(support: _Support, steps: int, lr: float, solver: str = "adam") -> tuple[Params, list[float]]:
    """Train ``Delta`` from 0 on the inner loss; returns it and the loss before each step."""
    start = support.lin.zero_tangent()
    if solver == "cg":
        _, g0 = support.value_and_grad(start)  # the gradient is affine: grad(D) = H D - b
        delta, _ = _cg_solve(support.hvp, {k: -g for k, g in g0.items()}, steps)
        values = [support.value_and_grad(delta)[0]] if steps else []
        return delta, values
    return _adam_minimize(support.value_and_grad, start, lr, steps)


def solve_hinv(support: _Support, rhs: Params, steps: int, lr: float,
               solver: str = "adam") -> tuple[Params, list[float]]:
    """Approximate ``H^-1 rhs`` by minimising ``0.5 v^T H v - rhs^T v`` from 0 (reference
    ``get_h_inv_vp``); returns ``v`` and the residuals ``v^T (H v - 2 rhs)`` before each step."""
    if solver == "cg":
        return _cg_solve(support.hvp, rhs, steps)

    def value_and_grad(v: Params) -> tuple[float, Params]:
        hv = support.hvp(v)
        return float(_dot(v, _axpy(-2.0, rhs, hv))), _axpy(-1.0, rhs, hv)

    return _adam_minimize(value_and_grad, _zeros(rhs), lr, steps)


# --------------------------------------------------------------------------------------------
# One meta-gradient
# --------------------------------------------------------------------------------------------


class OuterStep(NamedTuple):
    """What one outer step computes (gradients are w.r.t. the *learned* images/labels, without
    flips; ``grad_* = direct_* + clipped implicit_*``)."""

    loss: float
    accuracy: float
    grad_images: torch.Tensor
    grad_labels: torch.Tensor
    grad_log_temp: torch.Tensor
    direct_images: torch.Tensor
    implicit_images: torch.Tensor
    direct_labels: torch.Tensor
    implicit_labels: torch.Tensor
    inner_losses: list[float]
    hinv_residuals: list[float]
    delta: Params


def _with_flips(images: torch.Tensor, labels: torch.Tensor, use_flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not use_flip:
        return images, labels
    return torch.cat([images, images.flip(-1)]), torch.cat([labels, labels])


def _clip_to(implicit: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
    """``implicit`` scaled down to at most ``direct``'s norm (NaN-free; reference clip)."""
    ni, nd = implicit.norm(), direct.norm()
    if float(ni) == 0.0:
        return implicit
    return implicit * torch.clamp(nd / ni, max=1.0)


def outer_step(lin: LinearizedNet, images: torch.Tensor, labels: torch.Tensor, log_temp: torch.Tensor,
               real_images: torch.Tensor, real_targets: torch.Tensor, *, l2: float, inner_steps: int,
               inner_lr: float, hinv_steps: int, hinv_lr: float, solver: str = "adam",
               use_flip: bool = False, margin: bool = True, clip_implicit: bool = True,
               jacobian_mb: float | None = 0.0) -> OuterStep:
    """RCIG's meta-gradient for one network and one real batch (``algorithms.do_meta_train_step``).

    1. ``Delta*``: ``inner_steps`` of ``solver`` on :func:`inner_loss` from ``Delta = 0``.
    2. direct gradients of :func:`outer_loss` in (images, labels, log_temp) and ``g = dL/dDelta``.
    3. ``v ~ H^-1 g`` by ``hinv_steps`` of ``solver``.
    4. implicit gradient ``-d/d(images, labels) <v, grad_Delta L_inner>``, which equals
       ``d/d(.) c <J_s v, (K + l2 I)^-1 (Y_s - J_s Delta*)>`` with ``c = l2 / (N K)``.

    Args:
        images: ``N x C x H x W`` learned images; labels ``N x K`` learned targets; ``log_temp``
            0-d. No input needs ``requires_grad``; nothing is modified in place.
        real_images, real_targets: the real batch and its one-hot labels ``M x K``.
        l2: ridge lambda (RCIG: ``l2_rate * N``).
        use_flip: append horizontally flipped copies of the support set (labels repeated).
        clip_implicit: clip the implicit gradient to the direct one's norm (per tensor).
        jacobian_mb: see :class:`RCIGConfig` (speed only).
    """
    x = images.detach().requires_grad_(True)
    y = labels.detach().requires_grad_(True)
    t = log_temp.detach().requires_grad_(True)
    xs, ys = _with_flips(x.detach(), y.detach(), use_flip)
    support = _Support(lin, xs, ys, l2, jacobian_mb)
    delta, inner_losses = solve_inner(support, inner_steps, inner_lr, solver)

    delta_req = {k: v.detach().requires_grad_(True) for k, v in delta.items()}
    xs, ys = _with_flips(x, y, use_flip)
    loss, acc = outer_loss(lin, xs, ys, t, delta_req, real_images, real_targets, l2, margin)
    grads = torch.autograd.grad(loss, [x, y, t, *delta_req.values()])
    direct_x, direct_y, grad_t = grads[:3]
    g_delta = dict(zip(delta_req, (g.detach() for g in grads[3:])))

    with torch.no_grad():
        v, residuals = solve_hinv(support, g_delta, hinv_steps, hinv_lr, solver)
    feats, _, dlogits = lin.tangent(xs, delta)
    _, _, jv = lin.tangent(xs, v)
    alpha = krr_fit(feats, ys - dlogits, l2)
    cross = (l2 / ys.numel()) * (jv * alpha).sum()
    implicit_x, implicit_y = torch.autograd.grad(cross, [x, y])
    if clip_implicit:
        implicit_x, implicit_y = _clip_to(implicit_x, direct_x), _clip_to(implicit_y, direct_y)
    return OuterStep(loss=float(loss.detach()), accuracy=float(acc), grad_images=direct_x + implicit_x,
                     grad_labels=direct_y + implicit_y, grad_log_temp=grad_t, direct_images=direct_x,
                     implicit_images=implicit_x, direct_labels=direct_y, implicit_labels=implicit_y,
                     inner_losses=inner_losses, hinv_residuals=residuals,
                     delta={k: d.detach() for k, d in delta.items()})


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
                           depth=cfg.depth, width=cfg.width, norm="none", activation="softplus",
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
                        l2: float) -> tuple[float, float]:
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
                             real_images, real_targets, l2, margin=False)
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
            num_classes: int, device: torch.device | str = "cpu", progress: bool = False) -> SyntheticSet:
    """Distil ``train`` (noisy hard labels) into ``ipc`` images per class with RCIG.

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
                                                cfg, l2)
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
                          jacobian_mb=cfg.jacobian_mb)
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


# --------------------------------------------------------------------------------------------
# RCIG's evaluation recipe
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RCIGEvalRecipe:
    """How RCIG trains a network on a distilled set (``eval.py`` of yolky/RCIG, with augmentation).

    The loss is MSE on the *raw* learned labels, ``0.5 * mean((f(x) - y)^2)`` over all ``N x K``
    entries (``get_training_loss_l2`` with ``l2 = 0``), not cross-entropy.
    """

    optimizer: str = "adam"  # optax.adam, default betas/eps
    lr: float = 1e-4  # eval_lr
    warmup_steps: int = 500  # linear 0 -> lr
    steps: int = 2000  # 1000 if the learned set has exactly 10 images, else 2000
    final_lr_fraction: float = 0.01  # cosine decay to lr * 0.01 over steps - warmup_steps
    loss: str = "mse"  # on meta["raw_labels"]
    weight_decay: float = 0.0  # eval_l2
    batch_size: int | None = None  # 256 if the learned set has > 256 images, else full batch
    # augmax ops, one drawn per image: flip_color_crop_rotate_translate_cutout (RGB) or
    # crop_rotate_translate_cutout (MNIST, Fashion-MNIST: depth_3_no_flip.txt)
    augment: str = "flip_color_crop_rotate_translate_cutout"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # our closest DSA tokens
    flip_copies: bool = True  # RGB: train on the set plus its horizontal flips (use_flip)
    activation: str = "relu"  # evaluation nets use ReLU (use_softplus=False)
    norm: str = "none"
    width: int = 128  # first block
    width_multiplier: int = 2  # eval.py builds the same models.Conv: 128, 256, 512


GRAYSCALE_DATASETS = {"mnist", "fashion-mnist", "digits"}


def rcig_eval_recipe(num_images: int, dataset_name: str | None = None) -> RCIGEvalRecipe:
    """The published evaluation recipe for a set of ``num_images`` images (flips not counted).

    Grayscale datasets (MNIST, Fashion-MNIST; digits by analogy) drop flips and colour jitter.
    """
    gray = dataset_name in GRAYSCALE_DATASETS
    # eval.py decides both from the learned set's size, before appending flips.
    return RCIGEvalRecipe(
        steps=1000 if num_images == 10 else 2000,
        batch_size=256 if num_images > 256 else None,
        augment="crop_rotate_translate_cutout" if gray else "flip_color_crop_rotate_translate_cutout",
        dsa_strategy="crop_cutout_scale_rotate" if gray else "color_crop_cutout_flip_scale_rotate",
        flip_copies=not gray)


def rcig_eval_config(base: TrainConfig, *, num_images: int, dataset_name: str | None = None) -> TrainConfig:
    """``base`` changed to RCIG's evaluation recipe, as far as :class:`TrainConfig` can hold it.

    Set here: ConvNet width 128 doubling per block (128, 256, 512), no normalisation, ReLU;
    weight decay 0; the step budget as epochs (``ceil(steps / batches per epoch)``, counted on the
    set plus its flip copies, which :func:`own_protocol` trains on, as ``eval.py`` does); batch
    size; cosine schedule; DSA with the closest tokens to RCIG's augmax ops; ``optimizer="adam"``,
    ``lr=1e-4``, ``loss="mse"`` (on the raw labels, see :func:`own_protocol`), ``warmup_epochs``,
    ``final_lr_fraction``.
    """
    recipe = rcig_eval_recipe(num_images, dataset_name)
    seen = num_images * (2 if recipe.flip_copies else 1)
    batch = recipe.batch_size or seen
    per_epoch = max(1, math.ceil(seen / batch))
    changes: dict[str, object] = dict(
        norm=recipe.norm, activation=recipe.activation, width=recipe.width,
        width_multiplier=recipe.width_multiplier, weight_decay=recipe.weight_decay,
        epochs=math.ceil(recipe.steps / per_epoch), batch_size=batch, schedule="cosine", augment="dsa",
        dsa_strategy=recipe.dsa_strategy)
    changes.update(optimizer=recipe.optimizer, loss=recipe.loss, lr=recipe.lr,
                   warmup_epochs=math.ceil(recipe.warmup_steps / per_epoch),
                   final_lr_fraction=recipe.final_lr_fraction)
    return dataclasses.replace(base, **changes)


def own_protocol(base: TrainConfig, syn: SyntheticSet, dataset_name: str):
    """RCIG's evaluation recipe (:func:`rcig_eval_config`): Adam, MSE on the *raw* learned labels
    (``meta["raw_labels"]``), warm-up then cosine to 1%, its step budget and augmentation, trained
    on the set plus its horizontal flips (labels repeated) where the recipe has flip copies
    (``eval.py``: ``if use_flip: coreset_images = concatenate([images, flip(images)])``), so the
    planned steps are the steps taken (CIFAR-10 IPC 50: 2000, 500 of them warm-up)."""
    cfg = rcig_eval_config(base, num_images=len(syn), dataset_name=dataset_name)
    raw = syn.meta.get("raw_labels")
    labels = torch.tensor(raw, dtype=torch.float32) if raw is not None else syn.labels
    images = syn.images
    if rcig_eval_recipe(len(syn), dataset_name).flip_copies:
        images, labels = _with_flips(images, labels, True)
    return cfg, LabeledTensors(images, labels)
