"""Label noise as pure functions of labels (and, for instance-dependent noise, images).

Conventions used throughout this module:

* **Transition matrix**: ``T[i, j] = P(noisy = j | true = i)``; ``T`` is a ``K x K`` float64
  numpy array whose rows sum to 1. (cleanlab's ``noise_matrix`` is the transpose of this.)
* **Noise rate**: the fraction of training labels that differ from the clean label, *as
  realized*. The requested rate is a parameter of the generator; :class:`NoisyLabels` always
  records the realized rate and the realized (empirical) transition matrix next to it.
* **Randomness** is explicit: every stochastic function takes an integer ``seed`` and builds its
  own ``np.random.default_rng(seed)``. Nothing seeds or reads a global generator, so the same
  spec and seed give the same labels, bit for bit.

The test split is never corrupted: everything here acts on ``dataset.train`` only.

Defining steps of each kind (pinned by ``tests/test_defining_noise.py``,
``tests/test_reference_values.py``, ``tests/test_noise.py``):

* symmetric: flip with probability ``rate`` to one of the OTHER classes, uniformly
  (``symmetric-inclusive``: resample from all classes);
* pairflip: class ``i`` flips to ``(i + 1) mod K`` with probability ``rate``;
* asymmetric: the published class maps (CIFAR-10, MNIST/Fashion-MNIST), CIFAR-100 to the next
  fine class within the true superclass;
* instance (PTD): Xia et al.'s procedure on raw 0-255 pixels, flip rate from a truncated normal;
* natural / file: labels read, checked, never drawn;
* sampling: inverse-CDF of row ``T[true]`` with one uniform per sample; the realized rate and
  transition are what the labels show.

One module per concept: :mod:`.spec` (what to draw), :mod:`.matrices` (class-conditional
transition matrices), :mod:`.sampling` (drawing labels, instance-dependent noise), :mod:`.labels`
(the :class:`NoisyLabels` value and its file), :mod:`.make` (spec + dataset -> labels, natural and
file labels, the summary); every name is re-exported here.
"""

from __future__ import annotations


import numpy as np  # noqa: F401 (``ddlnl.noise.np``, as before the split)

from ..errors import DataError, UserError  # noqa: F401

# Re-exported: ``ddlnl.noise.X`` keeps working for every name of the former module.
from .spec import (  # noqa: F401
    ASYMMETRIC_MAPS, NOISE_KINDS, NoiseSpec, _ASYMMETRIC_NUM_CLASSES, _INSTANCE_RATE_STD, _KIND_ALIASES,
    _RATE_KINDS, _ROW_SUM_TOL, _check_num_classes, _check_rate, _check_seed, _parse_rate, parse_noise_spec,
)
from .matrices import (  # noqa: F401
    _log, _map_matrix, _next_within_group, _validate_transition, asymmetric_map, asymmetric_matrix,
    pairflip_matrix, symmetric_matrix,
)
from .sampling import (  # noqa: F401
    _as_labels, _check_range, _class_flip_probabilities, _instance_setup, _raw_pixels, _sample_from_rows,
    _truncated_normal, apply_transition, instance_dependent_labels, instance_flip_probabilities,
    truncated_normal_mean,
)
from .labels import (  # noqa: F401
    NoisyLabels, _check_same_length, _read_npz, load_noisy_labels, realized_noise_rate, realized_transition,
)
from .make import (  # noqa: F401
    _check_length, _check_summary, _file_labels, _is_int, _natural_labels, _pick_npz_labels, _read_csv_labels,
    _spec_matrix, make_noise, summary_text,
)


__all__ = [
    "NOISE_KINDS",
    "ASYMMETRIC_MAPS",
    "NoiseSpec",
    "NoisyLabels",
    "parse_noise_spec",
    "symmetric_matrix",
    "pairflip_matrix",
    "asymmetric_map",
    "asymmetric_matrix",
    "apply_transition",
    "instance_dependent_labels",
    "instance_flip_probabilities",
    "truncated_normal_mean",
    "realized_transition",
    "realized_noise_rate",
    "make_noise",
    "load_noisy_labels",
    "summary_text",
]
