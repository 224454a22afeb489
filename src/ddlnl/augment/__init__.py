"""Differentiable Siamese Augmentation (DSA) and ZCA whitening.

DSA (Zhao & Bilen, ICML 2021, "Dataset Condensation with Differentiable Siamese Augmentation")
augments the real and the synthetic batch with *the same* randomly drawn transform and keeps every
transform differentiable with respect to the pixels, so the matching loss can be back-propagated
into the synthetic images. Defaults and parameter distributions follow the reference code
(VICO-UoE/DatasetCondensation, ``utils.py``: ``ParamDiffAug``, ``DiffAugment``, ``rand_*``).

Randomness is explicit: a :class:`DSA` never touches the global RNG. :meth:`DSA.sample` turns a CPU
``torch.Generator`` into an :class:`AugmentationDraw` (which transform(s), with which parameters),
and :meth:`DSA.apply` applies a draw. Keeping the two apart is what makes the augmentation
*siamese*: draw once, apply to the real batch and to the synthetic batch.

ZCA whitening (:func:`fit_zca`, :class:`ZCA`) follows kornia's ``ZCAWhitening`` as used by MTT and
DATM with ``eps=0.1`` (``convention="kornia"``), or RCIG's ``ops.get_whitening_transform``
(``convention="rcig"``). :class:`ZCASpace` is what a distiller that works in ZCA space (DATM, RCIG)
fits on its training images and records in the synthetic set, so that evaluation whitens the test
images the same way (:func:`zca_space_for`).

Defining steps (pinned by ``tests/test_defining_dsa.py``, ``tests/test_augment.py``):

1. DSA ops as the reference's ``rand_*``: scale factors ``U[1/1.2, 1.2]`` per axis, rotation
   ``U[-15, 15]`` degrees, flip with probability 0.5, brightness ``+(u - 0.5)``, saturation ``u * 2``
   around the channel mean, contrast ``u + 0.5`` around the image mean, crop = integer shift in
   ``[-round(0.125 side), +round(0.125 side)]`` with zero fill, cutout = a zeroed square of half
   the side whose centre is uniform;
2. ``single`` mode: one strategy token per batch, uniformly; ``color`` applies brightness,
   saturation, contrast in that order;
3. siamese: one draw applied to the real and the synthetic batch;
4. ZCA: the whitened training data have (about) identity covariance and the inverse recovers the
   images; kornia's ``eps`` or RCIG's relative regulariser.

The package: :mod:`.params` (DSA's parameters, strategy tokens, one draw), :mod:`.ops` (the
differentiable operations), :mod:`.dsa` (:class:`DSA`), :mod:`.zca` (ZCA whitening and the ZCA space
of a set); every name is re-exported here.
"""

from __future__ import annotations


# Re-exported: ``ddlnl.augment.X`` keeps working for every name of the former module.
from .params import (  # noqa: F401
    AugmentationDraw, DSAParams, OP_PARAM_KEYS, STRATEGY_TOKENS, _MODES,
)
from .ops import (  # noqa: F401
    _affine, _brightness, _contrast, _crop, _cutout, _flip, _per_sample, _quantile_to_index, _rotate,
    _saturation, _scale, _translate,
)
from .dsa import (  # noqa: F401
    DSA,
)
from .zca import (  # noqa: F401
    ZCA, ZCASpace, ZCA_CONVENTIONS, _SPACE_CACHE, _ZCA_CHUNK_ROWS, _pixel_box, fit_zca, fit_zca_space,
    zca_space_for,
)


__all__ = [
    "DSAParams",
    "AugmentationDraw",
    "DSA",
    "STRATEGY_TOKENS",
    "OP_PARAM_KEYS",
    "ZCA",
    "fit_zca",
    "ZCA_CONVENTIONS",
    "ZCASpace",
    "fit_zca_space",
    "zca_space_for",
]
