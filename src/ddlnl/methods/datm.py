"""DATM: Difficulty-Aligned Trajectory Matching (Guo et al., ICLR 2024, "Towards Lossless Dataset
Distillation via Difficulty-Aligned Trajectory Matching"), with TESLA's constant-memory gradient
(Cui et al., ICML 2023, "Scaling Up Dataset Distillation to ImageNet-1K with Constant Memory").

Trajectory matching (MTT, Cazenavette et al., CVPR 2022): a student starts at epoch ``t`` of an
expert trajectory (experts trained on the noisy set, :mod:`ddlnl.experts`), takes ``syn_steps``
SGD steps with a learnable learning rate ``alpha`` on DSA-augmented synthetic mini-batches, and the
synthetic set is moved so that the student lands near the expert's epoch ``t + M``::

    L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2
    theta_{i+1} = theta_i - alpha * grad_theta CE(f(A_i(X[B_i]); theta_i), softmax(Y[B_i]))

What DATM adds (all read from NUS-HPC-AI-Lab/DATM ``distill/DATM.py``, ``DATM_tesla.py``,
``utils/cfg.py`` and ``configs/CIFAR-10/ConvIN/IPC*.yaml``; the study Kciiiman/DD_LNL runs
``DATM_tesla.py`` unchanged apart from its configs):

- **Difficulty-aligned window**: ``t ~ U{min_start_epoch, ..., upper - 1}`` with
  ``upper = min(max_start_epoch, current_max_start_epoch + int((max_start_epoch -
  current_max_start_epoch) * it / expansion_end_iteration))`` ("Sequential_Generation"; the
  reference calls the denominator ``expansion_end_epoch`` but counts iterations). IPC 1 does not
  expand (``upper = max_start_epoch``).
- **Learnable soft labels**: label *logits* ``Y`` trained by SGD (``lr_y``, momentum 0.9); the
  student's target is ``softmax(Y)`` (temperature 1, DATM's ``SoftCrossEntropy``).
- **Initialisation** (``pix_init: samples_predicted_correctly``): for each class, real images of
  that (noisy) class in random order, kept when an expert at ``Label_Model_Timestamp = -1`` (its
  LAST epoch, ``expert_train_epochs``; see "Label initialisation epoch" below) predicts that class; the first expert is scanned first and the next ones only if a
  class runs out. The logits are the mean, over all experts whose last epoch predicts the slot's
  class, of their logits on the image. Under label noise this keeps images the experts agree with
  (the denoising part of the initialisation).
- **Loss filter**: an iteration whose loss exceeds ``threshold`` (1.0; 1.1 at IPC 1) computes its
  gradients but updates nothing.
- **Learnable lr** ``alpha`` in linear space (SGD ``lr_lr``, momentum 0.5), initialised at
  ``syn_lr_init`` (reference ``lr_teacher``); it is the lr the synthetic set is evaluated with.

Gradient (``gradient``):

- ``"unrolled"``: exact MTT (``DATM.py``): the full graph through all ``syn_steps`` with
  ``create_graph=True``; memory grows linearly with ``syn_steps``. For small problems and tests.
- ``"tesla"`` (what ``DATM_tesla.py`` and the study run): write ``theta_N = theta_0 - alpha *
  sum_i g_i``. TESLA differentiates each ``g_i`` with respect to its own batch only, treating
  ``theta_i`` as a constant (it drops the dependence of later steps on earlier ones through
  ``theta``), so with ``v = dL/dtheta_N = 2 (theta_N - theta*) / D``::

      dL/dX  ~= sum_i  J_i^T (-alpha v),   J_i = d g_i / d X   (one vector-Jacobian product per step)
      dL/dY  ~= sum_i  (d g_i / d Y)^T (-alpha v)             (same products, w.r.t. the logits)
      dL/dalpha = -v . sum_i g_i                               (every g_i held fixed)

  ``DATM_tesla.py`` writes ``dL/dg_i`` as ``2 (alpha (theta* - theta_0) + alpha^2 sum_j g_j) / D``,
  which equals ``-alpha v``. Here the forward pass keeps no graph and stores only each step's
  batch indices and augmentation draw; a second pass re-runs the steps from ``theta_0``,
  recomputing ``g_i`` with a graph at ``theta_i`` for its vector-Jacobian product and advancing
  ``theta`` with the detached ``g_i``. Memory is one step's double-backward graph plus O(P),
  whatever ``syn_steps`` is (the reference also stores every ``theta_i`` and augmented batch).
  With ``syn_steps = 1`` the approximation is exact.

ZCA (``zca=True``; every DATM CIFAR config and every study config): as the reference
(``utils_baseline.get_dataset`` with ``--zca``: kornia ``ZCAWhitening(eps=0.1)`` fitted on the
un-normalised [0, 1] training pixels, applied to train and test), the training images are whitened
(:func:`ddlnl.augment.fit_zca_space`, convention ``kornia``, ``zca_reg``) before the experts are
trained (they get their own cache key, the data differ) and before distillation; the returned set
records ``image_space = "zca"`` and the whitening (``meta["zca"]``), and ddlnl's evaluation whitens
the test images the same way (:func:`ddlnl.augment.zca_space_for`).

Label initialisation epoch. ``label_epoch=-1`` (the reference's ``Label_Model_Timestamp = -1``)
is the experts' LAST stored epoch, i.e. epoch ``expert_train_epochs``: the reference indexes its
buffers, which hold ``train_epochs + 1`` parameter sets (``buffer_FTD.py``), with ``[-1]``. The
study's experts have 100 epochs, so its labels (and the ``samples_predicted_correctly`` selection)
come from epoch 100, far beyond the matching window (``max_start_epoch + expert_epochs`` <= 42):
the expert length changes the initialisation, in the reference as here. Set ``label_epoch`` to a
non-negative epoch to fix it independently of the length.

Not implemented: the reference's evaluation-driven checkpoint choice (the last iteration's set is
returned). ddlnl option, not in DATM: ``noise_correction`` (off by default), experts trained with
the forward-corrected cross-entropy of :mod:`ddlnl.correction`.

Defining steps (pinned by ``tests/test_defining_datm.py``, ``tests/test_datm.py``):

1. the student starts at expert epoch ``t`` and takes ``syn_steps`` SGD steps at the learnable lr
   ``alpha`` on DSA-augmented synthetic mini-batches, against the soft targets ``softmax(Y)``;
2. it is matched to the expert's epoch ``t + expert_epochs`` by the normalised squared distance;
3. ``t`` is drawn from the difficulty-aligned window, which grows with the iteration;
4. an iteration whose loss exceeds ``threshold`` updates nothing; otherwise images (SGD), label
   logits (SGD, momentum 0.9) and ``alpha`` (SGD, momentum 0.5) take one step each;
5. initialisation: images the experts' last epoch classifies as their noisy class, logits the mean
   expert logits;
6. TESLA: the gradient is the sum of per-step vector-Jacobian products, exact for one step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from ..augment import DSA, AugmentationDraw, fit_zca_space
from ..correction import CORRECTION_SOURCES, NoiseModel, check_noise_model
from ..data import LabeledTensors
from ..errors import ConfigError
from ..experts import ExpertConfig, ParamLayout, functional_forward, get_experts
from ..synthetic import SyntheticSet
from ..train import DSA_STRATEGY, TrainConfig, soft_cross_entropy
from ..utils import derive_seed, generator, progress as progress_bar, retain_freed_cpu_memory
from .common import check_ipc, class_indices, sample_per_class
from .datm_init import initial_label_logits, select_correct




@dataclass(frozen=True)
class DATMConfig:
    """DATM hyperparameters. Defaults: the published CIFAR-10 IPC 10 configuration with the
    study's initial lr for noisy CIFAR-10 (``syn_lr_init`` 0.001). ``--preset paper`` replaces
    them with the study's values for the cell's dataset, IPC and noise (``configs/study/datm.csv``,
    :mod:`ddlnl.study`).

    Experts (:class:`~ddlnl.experts.ExpertConfig`) are described by the ``expert_*`` fields and the
    architecture fields, which the student shares.
    """

    iterations: int = 10000  # outer updates of the synthetic set (reference Iteration)
    syn_steps: int = 80  # student SGD steps per iteration (N)
    expert_epochs: int = 2  # M: target is the expert M epochs after the start
    min_start_epoch: int = 0  # lower end of the start-epoch window (inclusive)
    current_max_start_epoch: int = 10  # initial upper end of the window (exclusive)
    max_start_epoch: int = 20  # T+: final upper end of the window (exclusive)
    sequential_generation: bool = True  # grow the window linearly from current_max to max
    expansion_end_iteration: int = 1000  # iteration at which the window reaches max_start_epoch
    lr_img: float = 100.0  # SGD lr on the synthetic pixels (momentum 0.5)
    lr_lr: float = 1e-5  # SGD lr on the learnable student lr (momentum 0.5)
    lr_y: float = 2.0  # SGD lr on the label logits
    momentum_y: float = 0.9  # SGD momentum on the label logits (reference Momentum_y)
    syn_lr_init: float = 0.001  # initial student lr (reference lr_teacher: 0.01 clean, 0.001 in the study's noisy runs)
    min_syn_lr: float = 1e-6  # ddlnl safeguard, not in DATM: the learned lr is kept >= this (a lr <= 0 cannot train)
    batch_syn: int = 0  # synthetic images per student step; 0 = all of them (the CIFAR-10 configs)
    threshold: float = 1.0  # skip the update when the matching loss exceeds this
    init: str = "correct"  # correct (samples_predicted_correctly) | real (random real images of the class)
    label_epoch: int = -1  # expert epoch that selects images and initialises labels (-1: the last, = expert_train_epochs, as the reference)
    learn_labels: bool = True  # DATM learns the label logits; False keeps them at their initial value
    gradient: str = "tesla"  # tesla (constant memory, DATM_tesla.py) | unrolled (exact MTT)
    dsa_strategy: str = DSA_STRATEGY  # per-sample DSA on every student batch ('' = none)
    zca: bool = False  # distil (and train experts) in ZCA space (the reference's CIFAR configs and the study: True)
    zca_reg: float = 0.1  # kornia ZCAWhitening eps on [0, 1] pixels (reference: 0.1)
    # Experts (trained once per noisy training set, cached, shared by every IPC).
    num_experts: int = 100  # reference buffer: 100
    expert_train_epochs: int = 50  # reference buffer: 50 (the study: 100)
    expert_lr: float = 0.01  # reference lr_teacher of buffer.py
    expert_batch: int = 256  # reference batch_train of buffer.py
    expert_seed: int = 0  # experts depend on (data, config, this seed), not on the distillation seed
    # FTD experts (sharpness-aware "flat trajectory" training, ddlnl.experts.FTD): DATM's and the
    # study's buffer_FTD.py. Off by default: plain-SGD MTT experts (buffer.py), which cost half.
    expert_ftd: bool = False
    expert_sam_rho: float = 0.01  # used only with expert_ftd (the study: 0.01)
    expert_sam_alpha: float = 0.3  # used only with expert_ftd (the study: 0.3; DATM's script: 0.4)
    cache_experts: bool = True  # False: train experts in memory on every call (tests)
    # Architecture of experts and student.
    width: int = 128
    depth: int = 3
    norm: str = "instance"
    log_every: int = 1  # record loss / lr / start epoch every this many iterations
    # Structured-noise remedy (ddlnl.correction): none | estimated | true. Not the published method
    # (off by default). With a source of T the experts are trained with the forward-corrected
    # cross-entropy -log (softmax(f(x)) T)[given] (their own cache key), so the trajectories the
    # student matches, and the experts that initialise its images and labels, estimate the clean
    # posterior; the student's loss is unchanged. "true" is an oracle (the realized T).
    noise_correction: str = "none"

    # A 2-core CPU on ~10k Fashion-MNIST images, ~4 min when the machine is idle (experts ~1.5 min,
    # once per noisy set; distillation ~2.5 min per IPC; 2-3x that when other jobs share the cores):
    # 2 experts x 8 epochs at width 32 (trained once per noisy set, cached); 100 iterations of 10
    # TESLA steps on batches of 100 (so one iteration costs the same at IPC 10 and 50); window
    # [0, 4) growing to [0, 8) by iteration 60; target 1 expert epoch ahead. One expert epoch on
    # 10k images is ~40 SGD steps of batch 256 at lr 0.01, which 10 student steps starting at the
    # study's 0.001 could not reach without a 40-fold lr growth, hence syn_lr_init 0.01 (DATM's
    # clean-data value). Measured on 2k images (2 experts x 4 epochs, W32, IPC 10): the matching
    # loss fell from 0.55 to ~0.1 within 20 iterations, the lr rose from 0.010 to 0.016.
    # Options added after results existed: at these values they leave result keys unchanged.
    KEY_NEUTRAL: ClassVar[dict[str, Any]] = {"expert_ftd": False, "expert_sam_rho": 0.01, "expert_sam_alpha": 0.3,
                                             "zca_reg": 0.1, "noise_correction": "none"}
    ZCA_CONVENTION: ClassVar[str] = "kornia"  # DATM/MTT: kornia.enhance.ZCAWhitening

    PRESETS: ClassVar[dict[str, dict]] = {"cpu": {
        "iterations": 100, "syn_steps": 10, "expert_epochs": 1, "min_start_epoch": 0,
        "current_max_start_epoch": 4, "max_start_epoch": 8, "expansion_end_iteration": 60,
        "batch_syn": 100, "num_experts": 2, "expert_train_epochs": 8, "width": 32, "syn_lr_init": 0.01}}

    def expert_config(self) -> ExpertConfig:
        """The experts this config matches: plain SGD, momentum 0, DSA, as MTT's buffer.py; with
        ``expert_ftd`` GSAM steps as FTD's buffer_FTD.py (adaptive, rho and alpha from this config)."""
        sam = ({"sam_rho": self.expert_sam_rho, "sam_alpha": self.expert_sam_alpha, "sam_adaptive": True}
               if self.expert_ftd else {})
        return ExpertConfig(num_experts=self.num_experts, epochs=self.expert_train_epochs, lr=self.expert_lr,
                            batch_size=self.expert_batch, dsa_strategy=self.dsa_strategy or DSA_STRATEGY,
                            augment="dsa" if self.dsa_strategy else "none", width=self.width,
                            depth=self.depth, norm=self.norm, **sam)

    def window_upper(self, iteration: int) -> int:
        """Exclusive upper end of the start-epoch window at ``iteration`` (DATM Upper_Bound)."""
        if not self.sequential_generation:
            return self.max_start_epoch
        grown = self.current_max_start_epoch + int(
            (self.max_start_epoch - self.current_max_start_epoch) * iteration / self.expansion_end_iteration)
        return min(grown, self.max_start_epoch)

    def check(self) -> None:
        if self.iterations < 0 or self.syn_steps < 1 or self.expert_epochs < 1:
            raise ConfigError("datm: iterations must be >= 0, syn_steps and expert_epochs >= 1")
        if self.batch_syn < 0:
            raise ConfigError(f"datm: batch_syn must be >= 0 (0 = all synthetic images), got {self.batch_syn}")
        # Without sequential generation the window is [min, max) from the start and the reference
        # never reads current_max_start_epoch (the study's IPC 1 configs leave it at cfg.py's 20).
        if self.sequential_generation and not (
                0 <= self.min_start_epoch < self.current_max_start_epoch <= self.max_start_epoch):
            raise ConfigError("datm: need 0 <= min_start_epoch < current_max_start_epoch <= max_start_epoch, got "
                              f"{self.min_start_epoch}, {self.current_max_start_epoch}, {self.max_start_epoch}")
        if not 0 <= self.min_start_epoch < self.max_start_epoch:
            raise ConfigError(f"datm: need 0 <= min_start_epoch < max_start_epoch, got {self.min_start_epoch}, "
                              f"{self.max_start_epoch}")
        if self.sequential_generation and self.expansion_end_iteration < 1:
            raise ConfigError("datm: expansion_end_iteration must be >= 1")
        last_target = self.max_start_epoch - 1 + self.expert_epochs
        if last_target > self.expert_train_epochs:
            raise ConfigError(f"datm: the latest target epoch max_start_epoch - 1 + expert_epochs = {last_target} "
                              f"exceeds expert_train_epochs = {self.expert_train_epochs}: lower max_start_epoch "
                              "or train longer experts")
        if not -self.expert_train_epochs - 1 <= self.label_epoch <= self.expert_train_epochs:
            raise ConfigError(f"datm: label_epoch {self.label_epoch} is not an expert epoch "
                              f"(0..{self.expert_train_epochs}, or negative from the end)")
        if self.noise_correction not in CORRECTION_SOURCES:
            raise ConfigError(f"datm: noise_correction {self.noise_correction!r}: use one of {', '.join(CORRECTION_SOURCES)}")
        if self.gradient not in {"tesla", "unrolled"}:
            raise ConfigError(f"datm: gradient {self.gradient!r}: use tesla or unrolled")
        if self.init not in {"correct", "real"}:
            raise ConfigError(f"datm: init {self.init!r}: use correct or real")
        if self.norm == "batch":
            raise ConfigError("datm: norm=batch is not supported (BatchNorm statistics are buffers a flat "
                              "parameter trajectory does not carry); use norm=instance")
        if self.zca_reg <= 0:
            raise ConfigError(f"datm: zca_reg must be > 0 (kornia eps; the reference uses 0.1), got {self.zca_reg}")
        if self.expert_ftd and (self.expert_sam_rho <= 0 or self.expert_sam_alpha < 0):
            raise ConfigError("datm: expert_ftd needs expert_sam_rho > 0 and expert_sam_alpha >= 0, got "
                              f"{self.expert_sam_rho}, {self.expert_sam_alpha}")
        if self.syn_lr_init <= 0 or self.min_syn_lr <= 0:
            raise ConfigError("datm: syn_lr_init and min_syn_lr must be > 0")
        self.expert_config().check()


def datm_eval_config(base: TrainConfig) -> TrainConfig:
    """DATM's own evaluation recipe on ``base``'s architecture.

    From DATM ``utils/utils_baseline.py::evaluate_synset`` and its configs: train 1000 epochs
    (``epoch_eval_train``) with SGD momentum 0.9, weight decay 5e-4, the learned lr (``lr_net =
    syn_lr``), x0.1 at half, batch 128 (``batch_train`` of the CIFAR-10 configs), DSA on every
    batch, soft cross-entropy against ``softmax(label logits)`` (a SyntheticSet from
    :func:`distill` carries those probabilities, so :func:`ddlnl.train.train` does this). The
    reference runs epochs 0..1000 and divides after epoch 501; ``schedule="step"`` divides at 500.
    """
    return replace(base, epochs=1000, batch_size=128, momentum=0.9, weight_decay=5e-4, schedule="step",
                   augment="dsa", use_learned_lr=True, optimizer="sgd", loss="ce", warmup_epochs=0,
                   final_lr_fraction=0.0)


def own_recipe(base: TrainConfig, syn: SyntheticSet, dataset_name: str) -> tuple[TrainConfig, LabeledTensors]:
    """DATM's evaluation recipe for the ``own`` protocol: :func:`datm_eval_config` on the common
    config (whose DSA strategy is already adapted to ``dataset_name``), trained on the set's soft
    labels (probabilities) with its learned lr."""
    return datm_eval_config(base), syn.as_labeled()


# --------------------------------------------------------------------------------------------
# One matching problem: plan, loss, gradients
# --------------------------------------------------------------------------------------------


class StepPlan(NamedTuple):
    """One student step: which synthetic images (``int64`` indices) under which DSA draw."""

    indices: torch.Tensor
    draw: AugmentationDraw | None


@dataclass
class Student:
    """The network a flat parameter vector is run through, and the student's augmentation."""

    model: torch.nn.Module
    layout: ParamLayout
    dsa: DSA | None = None

    def loss(self, theta: torch.Tensor, images: torch.Tensor, label_logits: torch.Tensor,
             step: StepPlan) -> torch.Tensor:
        """Soft cross-entropy of the student at ``theta`` on the step's (augmented) batch.

        ``images`` and ``label_logits`` are the batch already (``B x C x H x W``, ``B x K``); the
        target is ``softmax(label_logits)`` (DATM ``SoftCrossEntropy``).
        """
        x = images if step.draw is None or self.dsa is None else self.dsa.apply(images, step.draw)
        logits = functional_forward(self.model, self.layout, theta, x)
        return soft_cross_entropy(logits, F.softmax(label_logits, dim=1))


def plan_steps(num_images: int, syn_steps: int, batch_syn: int, dsa: DSA | None,
               g: torch.Generator) -> list[StepPlan]:
    """Batches as DATM draws them: a random permutation cut into ``batch_syn`` chunks, taken from
    the end; a new permutation when used up. Each batch gets its own per-sample DSA draw (the
    reference calls ``DiffAugment`` with no seed, i.e. not siamese)."""
    batch = batch_syn or num_images
    plan: list[StepPlan] = []
    chunks: list[torch.Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(num_images, generator=g), batch))
        idx = chunks.pop()
        draw = dsa.sample(idx.numel(), g, siamese=False) if dsa is not None else None
        plan.append(StepPlan(idx, draw))
    return plan


class MatchResult(NamedTuple):
    """Loss and gradients of one matching problem (``None`` where not requested)."""

    loss: float
    grad_images: torch.Tensor
    grad_labels: torch.Tensor | None
    grad_lr: torch.Tensor


def _distance(theta: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((theta - target) ** 2).sum() / ((start - target) ** 2).sum()


def unrolled_gradients(student: Student, images: torch.Tensor, label_logits: torch.Tensor,
                       syn_lr: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                       plan: list[StepPlan], *, learn_labels: bool = True) -> MatchResult:
    """Exact gradients of the normalised matching loss through every student step (MTT).

    Args:
        images: synthetic images ``S x C x H x W`` (a leaf; not modified).
        label_logits: ``S x K`` logits whose softmax is the student's target.
        syn_lr: 0-d student learning rate.
        start, target: flat expert parameters ``P`` at epochs ``t`` and ``t + M``.
        plan: the student's steps (:func:`plan_steps`).

    Returns:
        :class:`MatchResult` with gradients shaped like ``images``, ``label_logits``, ``syn_lr``.
        Memory grows linearly with ``len(plan)`` (the whole double-backward graph is kept).
    """
    x_all = images.detach().requires_grad_(True)
    y_all = label_logits.detach().requires_grad_(learn_labels)
    lr = syn_lr.detach().requires_grad_(True)
    theta = start.detach().requires_grad_(True)
    for step in plan:
        ce = student.loss(theta, x_all[step.indices], y_all[step.indices], step)
        grad = torch.autograd.grad(ce, theta, create_graph=True)[0]
        theta = theta - lr * grad
    loss = _distance(theta, start, target)
    inputs = [x_all, lr] + ([y_all] if learn_labels else [])
    grads = torch.autograd.grad(loss, inputs)
    return MatchResult(float(loss.detach()), grads[0], grads[2] if learn_labels else None, grads[1])


def tesla_gradients(student: Student, images: torch.Tensor, label_logits: torch.Tensor,
                    syn_lr: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                    plan: list[StepPlan], *, learn_labels: bool = True) -> MatchResult:
    """TESLA's gradients of the matching loss, in memory independent of ``len(plan)``.

    Same arguments and result as :func:`unrolled_gradients`. With ``v = 2 (theta_N - theta*) /
    ||theta_0 - theta*||^2``: image and label gradients are ``sum_i`` of the vector-Jacobian
    products of ``g_i = grad_theta CE_i`` with ``-alpha v`` at fixed ``theta_i`` (Cui et al. 2023,
    Sec. 4; ``DATM_tesla.py``), and the lr gradient is ``-v . sum_i g_i``. Exact for one step.
    """
    alpha = float(syn_lr.detach())
    x_all, y_all = images.detach(), label_logits.detach()
    # Pass 1: the student's path, no graph beyond one step's first-order backward.
    theta = start.detach().clone()
    grad_sum = torch.zeros_like(theta)
    for step in plan:
        theta_i = theta.requires_grad_(True)
        ce = student.loss(theta_i, x_all[step.indices], y_all[step.indices], step)
        g = torch.autograd.grad(ce, theta_i)[0]
        theta = theta_i.detach() - alpha * g
        grad_sum += g
    loss = _distance(theta, start, target)
    v = 2.0 * (theta - target) / ((start - target) ** 2).sum()
    grad_lr = -(v * grad_sum).sum()
    coef = -alpha * v  # dL/dg_i, the same for every step since theta_N = theta_0 - alpha * sum_i g_i
    # Pass 2: re-run the path; at each theta_i differentiate <coef, g_i> w.r.t. the step's batch.
    grad_x = torch.zeros_like(x_all)
    grad_y = torch.zeros_like(y_all) if learn_labels else None
    theta = start.detach().clone()
    for step in plan:
        theta_i = theta.requires_grad_(True)
        xb = x_all[step.indices].requires_grad_(True)
        yb = y_all[step.indices].requires_grad_(learn_labels)
        ce = student.loss(theta_i, xb, yb, step)
        g = torch.autograd.grad(ce, theta_i, create_graph=True)[0]
        wanted = [xb, yb] if learn_labels else [xb]
        parts = torch.autograd.grad((coef * g).sum(), wanted)
        grad_x.index_add_(0, step.indices.to(grad_x.device), parts[0])
        if learn_labels:
            grad_y.index_add_(0, step.indices.to(grad_y.device), parts[1])
        theta = theta_i.detach() - alpha * g.detach()
    return MatchResult(float(loss), grad_x, grad_y, grad_lr.reshape(syn_lr.shape))


GRADIENTS = {"tesla": tesla_gradients, "unrolled": unrolled_gradients}


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


def distill(train: LabeledTensors, ipc: int, cfg: DATMConfig = DATMConfig(), *, seed: int,
            num_classes: int, device: torch.device | str = "cpu", progress: bool = False,
            noise_model: NoiseModel | None = None) -> SyntheticSet:
    """Distil ``train`` (noisy hard labels) into ``ipc`` images per class with DATM.

    Experts come from :func:`ddlnl.experts.get_experts` (cached per noisy training set, trained
    when missing). The returned set is the one after the last iteration (no selection by test
    accuracy). With ``cfg.zca`` the training images are whitened first (see the module doc) and
    the set's images are in that ZCA space (``meta["image_space"] == "zca"``).

    Returns:
        SyntheticSet with images float32 ``S x C x H x W`` (``S = num_classes * ipc``, slot ``k``
        initialised from class ``k // ipc``), soft labels float32 ``S x K`` = ``softmax`` of the
        learned logits (temperature 1, as DATM trains and evaluates), ``lr`` = the learned student
        lr, and ``meta``: ``loss`` (matching loss per logged iteration), ``syn_lr`` and
        ``start_epoch`` per logged iteration, ``skipped`` (iterations above ``threshold``),
        ``expert_key``, ``init_indices``, ``init_filled``, ``initial_label_accuracy`` (share of
        slots whose initial soft label's argmax is the slot class); with ``noise_correction`` also
        ``noise_model``.

    ``noise_model``: ``T`` and the class prior for ``cfg.noise_correction`` (required when it is on;
    :func:`ddlnl.remedy.noise_model_for_job` makes it in a job): the experts are trained with its
    forward-corrected cross-entropy.
    """
    cfg.check()
    expert_cfg = cfg.expert_config()
    if cfg.noise_correction != "none":
        noise_model = check_noise_model("datm", cfg.noise_correction, noise_model, num_classes)
        expert_cfg = replace(expert_cfg, forward_transition=tuple(tuple(float(v) for v in row)
                                                                  for row in noise_model.transition))
    device = torch.device(device)
    if device.type == "cpu":
        # Each iteration allocates and frees the student steps' activations afresh; with glibc's
        # defaults any tensor of 32 MiB or more is mapped and unmapped every time (page faults;
        # see there). Set here too, not only by the training loop: experts from the cache train
        # nothing in this process.
        retain_freed_cpu_memory()
    indices = class_indices(train.labels, num_classes)
    check_ipc(indices, ipc)  # before the experts are trained
    zca_space = None
    if cfg.zca:  # experts and distillation in ZCA space, as the reference with --zca
        zca_space = fit_zca_space(train.images, cfg.ZCA_CONVENTION, cfg.zca_reg)
        train = LabeledTensors(zca_space.transform(train.images), train.labels)
    experts = get_experts(train, expert_cfg, seed=cfg.expert_seed, num_classes=num_classes,
                          device=device, progress=progress, cache=cfg.cache_experts)
    g = generator(derive_seed(seed, "datm"))
    dsa = DSA(cfg.dsa_strategy) if cfg.dsa_strategy else None
    student = Student(experts.build_model(device), experts.layout, dsa)
    student.model.train()

    slot_classes = torch.arange(num_classes).repeat_interleave(ipc)
    filled = 0
    if cfg.init == "correct":
        init_idx, filled = select_correct(train, ipc, experts, student, num_classes=num_classes,
                                          label_epoch=cfg.label_epoch, g=g, device=device)
    else:
        init_idx = sample_per_class(indices, ipc, g)
    images = train.images[init_idx].to(device).float().clone()
    logits, n_fallback = initial_label_logits(images, slot_classes, experts, student, label_epoch=cfg.label_epoch,
                                              device=device, only_first=cfg.init == "real")
    initial_acc = float((logits.argmax(1).cpu() == slot_classes).float().mean())

    images.requires_grad_(True)
    logits = logits.detach().clone().requires_grad_(True)
    syn_lr = torch.tensor(float(cfg.syn_lr_init), device=device, requires_grad=True)
    opt_img = torch.optim.SGD([images], lr=cfg.lr_img, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=cfg.lr_lr, momentum=0.5)
    opt_y = torch.optim.SGD([logits], lr=cfg.lr_y, momentum=cfg.momentum_y)
    match = GRADIENTS[cfg.gradient]

    losses: list[float] = []
    lrs: list[float] = []
    starts: list[int] = []
    skipped = 0
    order: list[int] = []
    bar = progress_bar(range(cfg.iterations), desc=f"datm ipc={ipc}", enabled=progress)
    for it in bar:
        if not order:  # every expert once per pass, in a fresh random order (the reference's buffer_id)
            order = torch.randperm(experts.num_experts, generator=g).tolist()
        expert = order.pop()
        start_epoch = int(torch.randint(cfg.min_start_epoch, cfg.window_upper(it), (1,), generator=g))
        start = experts.params(expert, start_epoch, device=device)
        target = experts.params(expert, start_epoch + cfg.expert_epochs, device=device)
        plan = plan_steps(images.shape[0], cfg.syn_steps, cfg.batch_syn, dsa, g)
        res = match(student, images, logits, syn_lr, start, target, plan, learn_labels=cfg.learn_labels)
        if res.loss <= cfg.threshold:  # DATM: `if grand_loss <= args.threshold: step` (NaN is skipped too)
            images.grad, syn_lr.grad = res.grad_images, res.grad_lr
            opt_img.step()
            opt_lr.step()
            if cfg.learn_labels:
                logits.grad = res.grad_labels
                opt_y.step()
            with torch.no_grad():
                syn_lr.clamp_(min=cfg.min_syn_lr)
        else:
            skipped += 1
        if cfg.log_every and it % cfg.log_every == 0:
            losses.append(res.loss)
            lrs.append(float(syn_lr.detach()))
            starts.append(start_epoch)
        if progress:
            bar.set_postfix(loss=f"{res.loss:.3f}", lr=f"{float(syn_lr.detach()):.4g}", skipped=skipped)

    probs = F.softmax(logits.detach().float(), dim=1).cpu()
    return SyntheticSet(images=images.detach().float().cpu(), labels=probs, lr=float(syn_lr.detach()),
                        meta={"method": "datm", "config": asdict(cfg), "ipc": ipc, "seed": seed,
                              "num_classes": num_classes, "loss": losses, "syn_lr": lrs,
                              "start_epoch": starts, "skipped": skipped, "expert_key": experts.key,
                              "num_experts": experts.num_experts, "init_indices": init_idx.tolist(),
                              "init_filled": filled, "init_label_fallback": n_fallback,
                              "initial_label_accuracy": initial_acc, "label_temperature": 1.0,
                              **_image_space_meta(zca_space),
                              **({"noise_model": noise_model.to_dict()} if cfg.noise_correction != "none" else {})})


def _image_space_meta(space: Any) -> dict[str, Any]:
    """``meta`` entries saying where a set's images live: ``normalised``, or ``zca`` with the whitening."""
    if space is None:
        return {"image_space": "normalised"}
    return {"image_space": "zca", "zca": space.describe()}
