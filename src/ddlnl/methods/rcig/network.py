"""Parameter dictionaries as vectors, the linearised network (a first-order Taylor expansion of
the ConvNet around its initial weights) and the kernel-ridge head."""

from __future__ import annotations

import torch

from torch import nn
from torch.func import functional_call, jvp

from .config import Params


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
