"""The one training loop, and evaluation.

Baselines, evaluation of every synthetic set, and (later) expert training all go through
:func:`train`. Data are held as tensors on the device and batched by index; there is no per-sample
DataLoader in the hot path.

Evaluation protocol: accuracy on the clean test split **at the end of training**.
:func:`train` can record the test-accuracy curve for reading, but nothing here ever selects an
epoch, iteration or checkpoint by test accuracy. Model selection, where wanted (the early-stopping
baseline), uses a validation split carved from the *noisy* training set.

Defining steps (pinned by ``tests/test_defining_train.py``, ``tests/test_train.py``):

1. one SGD step per batch of ``batch_size``, every sample once per epoch in a fresh order;
2. SGD with momentum 0.9 and weight decay 5e-4 at lr 0.01 (the DC/DSA/DM ``evaluate_synset``
   recipe); the ``step`` schedule multiplies the lr by 0.1 from epoch ``epochs // 2`` (0-based) on
   (the reference decays after epoch ``Epoch // 2 + 1`` of ``Epoch + 1``: one epoch later, one more
   epoch in all);
3. every training batch is augmented (DSA, one draw per batch) unless ``augment="none"``;
4. the accuracy reported is the end of training's; early stopping, where asked, returns the
   earliest epoch with the best accuracy on a noisy validation split and never looks at the test
   split.

The package: :mod:`.config` (:class:`TrainConfig`, :class:`BaselineConfig`), :mod:`.step` (initial
weights, lr schedule, loss, optimiser, augmentation, CutMix, GSAM), :mod:`.loop` (:func:`train`),
:mod:`.together` (:func:`train_together`), :mod:`.predict` (:func:`predict_logits`,
:func:`accuracy`), :mod:`.measure` (:func:`evaluate`, :func:`run_baseline`); every name is
re-exported here, so ``ddlnl.train.X`` works wherever ``X`` lives.
"""

from __future__ import annotations

# Re-exported: ``ddlnl.train.X`` keeps working for every name of the former module.
from .config import BaselineConfig, DSA_STRATEGY, NO_FLIP_DATASETS, TrainConfig, dsa_strategy_for  # noqa: F401
from .step import (  # noqa: F401
    LossHook, _loss, _lr_at, _make_augment, _running_stats, build_model, cutmix, cutmix_box, gsam_gradient,
    make_optimizer, reinitialize_, soft_cross_entropy,
)
from .predict import accuracy, predict_logits  # noqa: F401
from .loop import TrainResult, train  # noqa: F401
from .together import _CHANNELWISE, _StackedConvNets, _loss_per_run, _stack_layer, together_supported, train_together  # noqa: F401
from .measure import EvalResult, curve_subsample, evaluate, run_baseline, stratified_split, use_together  # noqa: F401
