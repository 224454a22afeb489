"""Solvers (Adam as published; conjugate gradients for exact answers) and one meta-gradient
(:func:`outer_step`: the implicit gradient through the inverse-Hessian solve)."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from .config import Params
from .network import LinearizedNet, _axpy, _dot, _zeros, krr_fit
from .losses import _Support, outer_loss


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
               jacobian_mb: float | None = 0.0, transition: torch.Tensor | None = None) -> OuterStep:
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
        transition: forward-correct the outer loss with this ``T`` (:func:`outer_loss`).
    """
    x = images.detach().requires_grad_(True)
    y = labels.detach().requires_grad_(True)
    t = log_temp.detach().requires_grad_(True)
    xs, ys = _with_flips(x.detach(), y.detach(), use_flip)
    support = _Support(lin, xs, ys, l2, jacobian_mb)
    delta, inner_losses = solve_inner(support, inner_steps, inner_lr, solver)

    delta_req = {k: v.detach().requires_grad_(True) for k, v in delta.items()}
    xs, ys = _with_flips(x, y, use_flip)
    loss, acc = outer_loss(lin, xs, ys, t, delta_req, real_images, real_targets, l2, margin, transition)
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
