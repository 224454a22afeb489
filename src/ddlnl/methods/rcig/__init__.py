"""RCIG (Loo, Hasani, Lechner & Rus, "Dataset Distillation with Convexified Implicit Gradients", ICML 2023).

Distillation as a bilevel problem, made convex and cheap:

* **Convexified inner model.** A ConvNet without normalisation, with ``softplus(beta x) / beta``
  activations (smooth, so second derivatives exist; beta = 60; ``softplus_beta=0`` is plain ReLU, as
  RCIG's ``softplus_temp 0``, which the study uses on Tiny-ImageNet), is linearised around its current
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

ddlnl option, not in RCIG: ``noise_correction`` (off by default), the structured-noise remedy of
:mod:`ddlnl.correction`: with a ``T`` the outer cross-entropy is forward-corrected,
``-log (softmax(exp(log_temp) preds) @ T)[given]`` (:func:`.losses.outer_loss`), so the learned
set is fitted as ``P(true | x)`` and the flips of the real batch are left to ``T``.

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

The package: :mod:`.config` (:class:`RCIGConfig`), :mod:`.network` (the linearised network and
the kernel-ridge head), :mod:`.losses` (inner and outer losses, the support set and its memory
budget), :mod:`.solvers` (inner solves, the inverse-Hessian solve, one meta-gradient step),
:mod:`.loop` (the optimiser, the model pool, learning-rate tuning, :func:`distill`),
:mod:`.recipe` (RCIG's own evaluation recipe); every name is re-exported here.
"""

from __future__ import annotations


# Re-exported: ``ddlnl.rcig.X`` keeps working for every name of the former module.
from .config import (  # noqa: F401
    HINV_LR_START, INNER_LR_START, LR_TUNE_BACKOFF, LR_TUNE_GROWTH, LR_TUNE_MAX_TRIES, Params, RCIGConfig,
)
from .network import (  # noqa: F401
    LinearizedNet, _LogitsAndFeatures, _RidgeSolver, _axpy, _dot, _zeros, krr_fit, krr_predict,
)
from .losses import (  # noqa: F401
    JACOBIAN_FREE_FRACTION, _Support, free_memory_bytes, inner_loss, jacobian_budget_mb, label_margin,
    outer_loss, outer_predictions,
)
from .solvers import (  # noqa: F401
    OuterStep, _adam_minimize, _cg_solve, _clip_to, _with_flips, outer_step, solve_hinv, solve_inner,
)
from .loop import (  # noqa: F401
    _AdaBelief, _PoolMember, _diverged, _lecun_init_, _monotone, _new_net, _one_hot, _search_lr,
    _train_member, distill, objective, tune_learning_rates,
)
from .recipe import (  # noqa: F401
    GRAYSCALE_DATASETS, RCIGEvalRecipe, own_recipe, rcig_eval_config, rcig_eval_recipe,
)



