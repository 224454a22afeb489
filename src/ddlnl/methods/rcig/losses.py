"""RCIG's inner and outer objectives, and the support set whose Jacobians fit a memory budget."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import jacrev, vjp, vmap

from ...correction import forward_corrected_ce
from ...utils import free_memory_bytes
from .config import Params
from .network import LinearizedNet, _RidgeSolver, _dot, krr_fit, krr_predict


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
               margin: bool = True, transition: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Platt-scaled cross-entropy on a real batch, and the batch accuracy.

    Args:
        real_targets: ``M x K`` one-hot (rows are probabilities) labels of ``real_images``.
        log_temp: scalar; logits are ``exp(log_temp) * outer_predictions``.
        margin: subtract :func:`label_margin` of ``labels``.
        transition: ``K x K`` ``T[i, j] = P(given = j | true = i)`` (the structured-noise remedy,
            ``noise_correction``; not in RCIG): the cross-entropy is forward-corrected (Patrini et
            al., CVPR 2017), ``-sum_j t_j log (softmax(logits) @ T)_j``, so the synthetic set's
            predictions are read as ``P(true | x)`` and only ``T`` explains the flips of the batch.

    Returns:
        ``(loss, accuracy)``, both 0-d tensors; the loss is differentiable in everything.
    """
    preds = outer_predictions(lin, images, labels, delta, real_images, l2)
    logits = preds * log_temp.exp()
    if transition is None:
        loss = -(real_targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    else:
        loss = forward_corrected_ce(logits, real_targets, transition)
    if margin:
        loss = loss - label_margin(labels)
    acc = (preds.argmax(1) == real_targets.argmax(1)).float().mean()
    return loss, acc.detach()


# Share of the free device memory the materialised support Jacobian may take when
# ``jacobian_mb`` is None: building it (vmap of jacrev, then one concatenation) holds about two
# copies at its peak, so half the free memory at most, leaving the rest to the solves.
JACOBIAN_FREE_FRACTION = 0.25


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
