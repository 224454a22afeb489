"""Neighbour votes: the labels of each image's nearest neighbours in the teachers' feature space."""

from __future__ import annotations

import numpy as np

import torch

from ..errors import UserError


# ---------------------------------------------------------------------------------------------
# Neighbour vote
# ---------------------------------------------------------------------------------------------


def _pca(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Centred features projected on their top ``dim`` principal axes (exact eigendecomposition of
    the covariance, so no random projection and no hidden generator)."""
    x = features.double()
    x = x - x.mean(dim=0, keepdim=True)
    if dim <= 0 or dim >= x.shape[1]:
        return x.float()
    cov = x.T @ x / max(1, x.shape[0] - 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    return (x @ vecs[:, -dim:].flip(1)).float()


def neighbour_votes(features: torch.Tensor, labels: np.ndarray | torch.Tensor, num_classes: int,
                    k: int, *, embed_dim: int = 128, chunk: int = 1024) -> np.ndarray:
    """For each sample, the fraction of its ``k`` nearest other samples carrying each given label.

    Args:
        features: ``N x D`` float tensor (e.g. teachers' embeddings).
        labels: ``N`` given labels in ``[0, K)``.
        num_classes: ``K``.
        k: neighbours per sample (capped at ``N - 1``); a sample is never its own neighbour.
        embed_dim: PCA dimensions before the search (0 = none); cosine similarity after centring.
        chunk: rows of the similarity matrix held at once (memory ``chunk x N`` floats).

    Returns:
        ``N x K`` float64 array; rows sum to 1.
    """
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = features.shape[0]
    if n < 2:
        raise UserError("the neighbour vote needs at least 2 samples")
    k = min(int(k), n - 1)
    z = torch.nn.functional.normalize(_pca(features, embed_dim), dim=1)
    votes = torch.zeros(n, num_classes, dtype=torch.float64)
    for start in range(0, n, chunk):
        sim = z[start:start + chunk] @ z.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = -float("inf")  # never one's own neighbour
        idx = sim.topk(k, dim=1).indices
        votes[start:start + chunk].scatter_add_(1, y[idx], torch.ones(idx.shape, dtype=torch.float64))
    return (votes / k).numpy()
