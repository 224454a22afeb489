"""Noise-rate and IPC estimates: the study's two corollaries, and a direct estimate from a synthetic set.

Conventions: ``T[i, j] = P(noisy = j | true = i)``, rows sum to 1; the noise rate is
the fraction of training labels that differ from the true class.

Three pieces:

* :func:`ipc_upper_bound` and :func:`noise_rate_lower_bound`: the study's corollaries, pure
  arithmetic on ``|S|`` (training-set size), ``C`` (classes), ``tau`` (noise rate) and IPC.
* :func:`estimate_noise`: a direct estimate of ``T`` and of the noise rate from predicted class
  probabilities of models trained **only on a synthetic set** (they never saw a noisy label),
  scoring the given training labels. Estimator: anchor points (below).
* :func:`advise_ipc`: IPC advice that combines both, with the numbers it rests on
  (:func:`advice_text` prints them), never using a rate outside the valid range.

The direct estimator
--------------------
The teachers' probabilities ``p_n`` estimate ``P(true | x_n)``; the given label is drawn from row
``true`` of ``T`` (class-conditional noise), so ``P(y_n | x_n) = sum_j p_n[j] T[j, y_n]``. Fitting
``T`` *and* the teachers' calibration to the given labels alone is not identifiable: a
miscalibrated teacher and label noise explain the labels equally well. So ``T`` is read off
**anchor points** (:func:`anchor_transition`): the samples the teachers rank most confidently as
class ``i`` are taken to be truly of class ``i``, and their given labels are draws from row ``i``
of ``T``. That uses only the ranking of the teachers' scores, not their calibration. The class
prior ``pi`` is then the one whose label marginal ``T^T pi`` matches the given labels, and the
rate is ``1 - sum_i pi_i T[i, i]``. With ``T`` fixed, one temperature calibrates the teachers
(maximum likelihood of the given labels, now identifiable) for the per-sample posterior
``P(true | x, given)``. Where trusted labels exist, ``estimate_noise(..., calibration=...)`` fits
the temperature on them instead and ``T`` by EM.

Assumptions, and what breaks them: (1) noise is class-conditional (instance-dependent noise is
averaged into ``T``); (2) the teachers' prediction for a sample is independent of whether that
sample's label was flipped, given its true class -- true by construction, since the teachers were
trained on the synthetic set and not on the labels being scored; (3) the anchor-point assumption:
the most confident samples per class are right. Where (3) fails (a teacher confidently wrong, e.g.
shirt vs T-shirt), impure anchors move mass off the diagonal and the rate is over-estimated. With
a perfect teacher (one-hot ``p_n`` equal to the true class) each row is a sample of the realized
transition matrix's row.

Defining steps (pinned by ``tests/test_estimate.py``):

1. the corollaries' arithmetic (:func:`ipc_upper_bound`, :func:`noise_rate_lower_bound`);
2. anchor points: row ``i`` of ``T`` is the given-label histogram of the samples ranked most
   confidently as class ``i``;
3. the class prior whose label marginal ``T^T pi`` matches the given labels; the rate
   ``1 - sum_i pi_i T[i, i]``;
4. one temperature fitted by maximum likelihood with ``T`` fixed (or on trusted labels);
5. advice never uses a rate outside the valid range.

The package: :mod:`.bounds` (the study's corollaries: the IPC upper bound, the noise-rate lower
bound), :mod:`.transition` (the noise rate and transition matrix from a synthetic set's models),
:mod:`.advice` (IPC advice and what ``ddlnl estimate`` prints); every name is re-exported here.
"""

from __future__ import annotations


# Re-exported: ``ddlnl.estimate.X`` keeps working for every name of the former module.
from .bounds import (  # noqa: F401
    RateBound, _check_sizes, ipc_upper_bound, noise_rate_lower_bound,
)
from .transition import (  # noqa: F401
    DEFAULT_ANCHOR_FRACTION, NoiseEstimate, _PROB_FLOOR, _TEMPERATURE_GRID, _check_inputs, _em,
    _log_likelihood, _posterior, anchor_transition, calibration_temperature, class_prior_from_labels,
    estimate_noise, fit_temperature, sharpen,
)
from .advice import (  # noqa: F401
    IPCAdvice, RunRecord, _bound_refuted, advice_text, advise_ipc, estimate_text, max_valid_rate,
)


__all__ = [
    "ipc_upper_bound",
    "RateBound",
    "noise_rate_lower_bound",
    "NoiseEstimate",
    "estimate_noise",
    "anchor_transition",
    "class_prior_from_labels",
    "fit_temperature",
    "calibration_temperature",
    "sharpen",
    "max_valid_rate",
    "IPCAdvice",
    "advise_ipc",
    "advice_text",
    "RunRecord",
    "estimate_text",
]
