"""Structured-noise remedy: correct what a distiller learns from with a transition matrix ``T``.

Conventions (as :mod:`ddlnl.estimate`): ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1;
``pi[i] = P(true = i)``.

Why class-conditional matching absorbs structured noise, and the correction. Under
class-conditional noise the samples *labelled* ``y`` are a mixture of the true classes,

    E[f(x) | given = y] = sum_j A[y, j] E[f(x) | true = j],   A[y, j] = P(true = j | given = y)
                                                                    = pi_j T[j, y] / sum_i pi_i T[i, y],

for any feature map ``f`` (a random ConvNet's embedding in DM). Symmetric noise spreads the
wrong mass over every class, so each given-class mean stays closest to its own clean mean;
asymmetric (pair) noise puts it all on one other class, and a given-class mean is a fixed blend of
two clean means that no amount of averaging undoes (the study's Observation II). When ``A`` is
invertible, ``B = A^{-1}`` undoes the blend exactly in expectation:

    E[f(x) | true = c] = sum_y B[c, y] E[f(x) | given = y].

This is the backward correction of Patrini et al. (CVPR 2017, "Making deep neural networks robust
to label noise: a loss correction approach") applied to class means instead of to a loss. The rows
of ``B`` sum to 1 (``A 1 = 1``), so each target is an affine blend of the given-class means; its
negative weights amplify the sampling noise of the batch means, by ``||B[c]||_2`` (about 3.6 for a
0.4 swap between two equally frequent classes), which is why :func:`unmixing_matrix` refuses a
nearly singular ``A``.

Where ``T`` comes from (:class:`NoiseModel.source`):

* ``estimated``: :func:`ddlnl.estimate.estimate_noise` on teachers trained *only on a synthetic set*
  (they never saw a noisy label), scoring the given labels (:func:`ddlnl.remedy.estimated_noise_model`;
  in a job :func:`ddlnl.remedy.noise_model_for_job`). This is the remedy a user can run.
* ``true``: the realized transition matrix and class prior of noise injected here (an oracle: it
  needs the clean labels). For tests and for the oracle rows of benchmarks, labelled as such.

Which distillers take it (each through its ``noise_correction`` field, off by default):

* DM (``--set dm.noise_correction=estimated|true``): its per-class matching targets become the
  unmixed means above.
* DANCE (``dance.noise_correction``): the inner-class view matches the same unmixed means (under
  the iteration's middle encoder), and the inter-class calibration's target for a synthetic image
  of class ``c`` is the row ``T[c]`` (:func:`calibration_targets`) instead of the one-hot ``c``: the
  final pre-trained model was fitted to the *noisy* labels, so what it predicts for a clean
  class-``c`` image is ``P(given | true = c) = T[c]``, and pushing it to say ``c`` with certainty
  pulls the image toward the samples that carry label ``c``, flipped ones included.
* DATM (``datm.noise_correction``): the expert trajectories are trained with the forward-corrected
  cross-entropy ``-log (softmax(f(x)) T)[given]`` (:func:`forward_corrected_ce`; Patrini et al.'s
  forward correction), so each expert's softmax estimates ``P(true | x)`` while its corrected
  output fits the noisy labels; the student matches those trajectories, and the label
  initialisation reads the corrected experts. The student's own loss is unchanged.

RCIG refuses the option with one line (:func:`refuse_unsupported`): its kernel targets are not
corrected here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, UserError

__all__ = [
    "CORRECTION_SOURCES",
    "SUPPORTED_METHODS",
    "NoiseModel",
    "given_posterior",
    "sample_posterior",
    "unmixing_matrix",
    "unmix_means",
    "forward_corrected_ce",
    "calibration_targets",
    "check_noise_model",
    "true_noise_model",
    "refuse_unsupported",
]

# Values of a method's ``noise_correction`` field: "none" (off, the default), or the source of T.
CORRECTION_SOURCES = ("none", "estimated", "true")
# Methods with a ``noise_correction`` field.
SUPPORTED_METHODS = ("dance", "datm", "dm", "rcig")
# A given-class blend whose inverse weights exceed this norm in some row is refused: the corrected
# target would be mostly sampling noise (the norm is 3.6 at a 0.4 swap and 9.5 at 0.45; 10 keeps
# every rate < 0.45 of a two-class swap).
MAX_UNMIXING_NORM = 10.0


@dataclass(frozen=True)
class NoiseModel:
    """A class-conditional noise model.

    Attributes:
        transition: ``K x K`` float64, ``T[i, j] = P(noisy = j | true = i)``.
        class_prior: ``K`` float64, ``P(true = i)``.
        source: ``"estimated"`` (from synthetic-set teachers) or ``"true"`` (oracle).
    """

    transition: np.ndarray
    class_prior: np.ndarray
    source: str
    # Optional N x K float64 P(true = c | x_n, given = y_n) of each training sample (the estimated
    # route: teachers' clean posteriors times T's column of the given label, :func:`sample_posterior`);
    # DM's correction_init=posterior chooses its initial images by it.
    sample_posterior: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.transition, dtype=np.float64)
        p = np.asarray(self.class_prior, dtype=np.float64)
        if t.ndim != 2 or t.shape[0] != t.shape[1] or p.shape != (t.shape[0],):
            raise UserError(f"noise model: transition must be K x K and the prior K long, got {t.shape} and {p.shape}")
        if np.any(t < -1e-9) or not np.allclose(t.sum(1), 1.0, atol=1e-6):
            raise UserError("noise model: transition rows must be probability vectors (T[i, j] = P(noisy = j | true = i))")
        if np.any(p < -1e-9) or not np.isclose(p.sum(), 1.0, atol=1e-6):
            raise UserError("noise model: the class prior must be a probability vector")
        if self.source not in CORRECTION_SOURCES[1:]:
            raise UserError(f"noise model source {self.source!r}: use estimated or true")
        object.__setattr__(self, "transition", t)
        object.__setattr__(self, "class_prior", p)
        if self.sample_posterior is not None:
            q = np.asarray(self.sample_posterior, dtype=np.float64)
            if q.ndim != 2 or q.shape[1] != t.shape[0] or not np.all(np.isfinite(q)) or np.any(q < -1e-9):
                raise UserError(f"noise model: sample_posterior must be N x {t.shape[0]} probabilities, got {q.shape}")
            object.__setattr__(self, "sample_posterior", q)

    def to_dict(self) -> dict[str, Any]:
        out = {"source": self.source, "transition": self.transition.tolist(),
               "class_prior": self.class_prior.tolist(), "convention": "T[i, j] = P(noisy = j | true = i)"}
        if self.sample_posterior is not None:  # N x K is the data's size: only what it says in sum
            out["sample_posterior"] = {"n": int(self.sample_posterior.shape[0]),
                                       "argmax_counts": np.bincount(self.sample_posterior.argmax(1),
                                                                    minlength=self.transition.shape[0]).tolist()}
        return out


def sample_posterior(clean_probs: np.ndarray, given: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """``N x K`` ``P(true = c | x_n, given = y_n)`` by Bayes' rule under class-conditional noise:
    proportional to ``P(true = c | x_n) T[c, y_n]`` (``clean_probs``: a model's clean posterior,
    e.g. teachers that never saw a noisy label); a row whose products all vanish keeps
    ``clean_probs``."""
    q = np.asarray(clean_probs, dtype=np.float64)
    joint = q * np.asarray(transition, dtype=np.float64)[:, np.asarray(given)].T
    total = joint.sum(1, keepdims=True)
    return np.where(total > 0, joint / np.maximum(total, 1e-300), q)


def given_posterior(model: NoiseModel) -> np.ndarray:
    """``K x K`` float64 ``A[y, j] = P(true = j | given = y)`` (a given class nobody carries keeps
    an identity row: it has no samples whose mean would be blended)."""
    joint = model.class_prior[:, None] * model.transition  # Q[i, y] = P(true = i, given = y)
    given = joint.sum(0)
    k = joint.shape[0]
    return np.where(given[:, None] > 0, joint.T / np.maximum(given[:, None], 1e-300), np.eye(k))


def unmixing_matrix(model: NoiseModel, max_norm: float = MAX_UNMIXING_NORM) -> np.ndarray:
    """``B = A^{-1}`` (:func:`given_posterior`): ``B @ given-class means = true-class means``.

    Raises:
        UserError: ``A`` is singular or so ill-conditioned that some row of ``B`` has an L2 norm
            above ``max_norm`` (e.g. a two-class swap at rate >= 0.45: not identifiable enough).
    """
    a = given_posterior(model)
    singular = UserError(f"noise_correction: P(true | given) from this {model.source} T is singular (some class "
                         "is never the true class of a given label): use noise_correction=none")
    try:
        with np.errstate(all="ignore"):
            b = np.linalg.inv(a)
    except np.linalg.LinAlgError:
        raise singular from None
    norm = float(np.linalg.norm(b, axis=1).max())
    if not np.isfinite(norm):
        raise singular
    if norm > max_norm:
        raise UserError(f"noise_correction: unmixing the class means would amplify their noise {norm:.1f}x "
                        f"(limit {max_norm:g}; T is too close to singular): use noise_correction=none")
    return b


def unmix_means(given_means: torch.Tensor, unmixing: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Corrected per-class means ``B @ given_means``.

    Args:
        given_means: ``K x D`` tensor, row ``y`` the mean feature of samples labelled ``y``.
        unmixing: ``K x K`` ``B`` from :func:`unmixing_matrix`.
    Returns:
        ``K x D`` tensor (same dtype and device as ``given_means``), row ``c`` the estimate of the
        mean feature of samples truly of class ``c``.
    """
    b = torch.as_tensor(unmixing, dtype=given_means.dtype, device=given_means.device)
    return b @ given_means


def forward_corrected_ce(logits: torch.Tensor, target: torch.Tensor,
                         transition: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Mean forward-corrected cross-entropy ``-log (softmax(logits) @ T)[target]`` (Patrini et al.,
    CVPR 2017): the model's softmax is read as ``P(true | x)`` and ``T`` maps it to the
    distribution of the given (noisy) label.

    Args:
        logits: ``B x K``.
        target: ``B`` int64 given labels, or ``B x K`` probability rows over the given labels (a
            CutMix mix is two calls; soft rows give ``-sum_j t_j log (p @ T)_j``).
        transition: ``K x K`` ``T[i, j] = P(noisy = j | true = i)``.
    Computed in log space (``logsumexp(log_softmax + log T)``), so zero entries of ``T`` are exact.
    """
    t = torch.as_tensor(transition, dtype=torch.float32, device=logits.device)
    log_noisy = torch.logsumexp(F.log_softmax(logits.float(), dim=1).unsqueeze(2) + torch.log(t).unsqueeze(0), dim=1)
    if target.ndim == 2:
        return -(target * log_noisy).sum(1).mean()
    return F.nll_loss(log_noisy, target)


def calibration_targets(labels: torch.Tensor, transition: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rows ``T[labels]`` (``B x K`` float32 on ``labels``' device): what a model fitted to the
    noisy labels should predict for clean images of classes ``labels`` (DANCE's corrected
    calibration target)."""
    t = torch.as_tensor(transition, dtype=torch.float32, device=labels.device)
    return t[labels]


def check_noise_model(method: str, source: str, noise_model: NoiseModel | None, num_classes: int) -> NoiseModel:
    """The noise model a distiller's ``noise_correction=source`` needs, checked (ConfigError when it
    is missing or of another class count)."""
    if noise_model is None:
        raise ConfigError(f"{method}: noise_correction={source} needs a noise model (T): run it through a job "
                          "(ddlnl run/sweep) or pass noise_model=")
    if noise_model.transition.shape[0] != num_classes:
        raise ConfigError(f"{method}: the noise model has {noise_model.transition.shape[0]} classes, the data {num_classes}")
    return noise_model


def true_noise_model(noisy: Any) -> NoiseModel:
    """The oracle model of noise injected here: realized ``T`` and the clean labels' class
    frequencies (``noisy`` is a :class:`ddlnl.noise.NoisyLabels`)."""
    k = noisy.num_classes
    prior = np.bincount(noisy.clean.numpy(), minlength=k).astype(np.float64)
    t = np.asarray(noisy.realized_T, dtype=np.float64)
    t = np.where(t.sum(1, keepdims=True) > 0, t, np.eye(k))  # a class without samples: identity row
    return NoiseModel(t, prior / prior.sum(), "true")


def refuse_unsupported(method: str, overrides: Mapping[str, Any] | Sequence[str] | None) -> None:
    """One clear line when ``noise_correction`` is set for a method without it."""
    if not overrides or method in SUPPORTED_METHODS:
        return
    keys = overrides.keys() if isinstance(overrides, Mapping) else [str(o).split("=", 1)[0].strip() for o in overrides]
    if "noise_correction" in keys:
        raise ConfigError(f"{method} does not support noise_correction (implemented for: {', '.join(SUPPORTED_METHODS)}): "
                          f"remove {method}.noise_correction")
