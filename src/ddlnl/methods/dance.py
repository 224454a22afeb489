"""DANCE: Dual-view distribution AligNment for dataset CondEnsation (Zhang et al., IJCAI 2024,
"DANCE: Dual-View Distribution Alignment for Dataset Condensation").

DANCE is distribution matching (:mod:`ddlnl.methods.dm`) with a few pre-trained models. Read from
the reference Hansong-Zhang/DANCE (``DANCE.py``, ``pretrain.py``, ``common.py``, ``misc/augment.py``,
``arguments/*.py``, ``test.py``, ``train.py``); the study Kciiiman/DD_LNL (``DANCE+ours/``) runs
the same code with every hyperparameter unchanged, the pre-trained models trained on the *noisy*
training set (``pretrain.py --noise_type ... --noise_rate ...``), depth 4 on Tiny-ImageNet.

- **Pre-trained models.** K ConvNets trained on the noisy training set; only each one's initial
  and final weights are used. They are ddlnl experts (:func:`ddlnl.experts.get_experts`, cached
  under a key of data fingerprint + settings + seed) with DANCE's pre-training: SGD lr 0.01,
  momentum 0.9 (one optimiser for the whole run, so its buffer carries over epochs), weight decay
  5e-4, batch 64, 60 epochs, lr x0.2 at epochs 2N//3 and 5N//6, per-sample colour AND crop on every
  batch (IDC ``DiffAug(strategy="color_crop", batch=False)``: ddlnl DSA mode ``idc``), then CutMix
  with probability 0.5, beta 1 (``reproduce_pretrain.py``, ``arg_pretrain.py``: ``mix_p = 0.5``
  for every dataset, ``--mixup cut``; ``pretrain.py`` -> ``train.train_epoch``). Epoch 0 of a
  trajectory is theta_init, the last epoch theta_final.
- **Multi-formation** (from IDC, Kim et al. ICML 2022): each stored synthetic image is a
  ``factor x factor`` grid of tiles; decoding cuts the tiles (after padding the image with 0.5 to a
  multiple of ``factor``) and upsamples each bilinearly to full size, so one stored image gives
  ``factor^2`` training images with its label (``Synthesizer.decode_zoom``). IPC counts *stored*
  images, as in the reference.
- **Inner-class view** (pseudo long-term distribution alignment): every iteration picks one
  pre-trained model uniformly at random and ``lam ~ U(0, 1)``, and builds the "middle encoder"
  ``theta = lam * theta_init + (1 - lam) * theta_final`` (the reference's convention: lam = 1 is
  the initial network, lam = 0 the trained one). For each class in turn it matches the mean
  embedding of a real batch of that class and of the class's decoded synthetic images, both under
  one DSA draw (siamese), and takes one SGD step on the synthetic images (``innerloss``).
- **Inter-class view** (distribution calibration): then, ``iter_calib`` times, for each class in
  turn, one SGD step on the cross-entropy of the *final* pre-trained model on the class's decoded,
  DSA-augmented synthetic images with their labels (``interloss``). The two losses have equal
  weight and share one optimiser (SGD, momentum 0.5); they are separate steps, not a sum.

Why this may denoise: as in DM, class means of many real images are dominated by the majority
(clean) pattern below the identifiability limit. The calibration step, however, pulls synthetic
images towards what a model trained on the *noisy* labels predicts for their class, which is what
the study measures.

Pixel space. The reference optimises images in [0, 1] pixel units (learning rate ``0.01 * ipc``,
clamped to [0, 1] at the start of every iteration, padding and noise initialisation around 0.5)
and normalises inside its augmentation. ddlnl's images are normalised with the training mean/std,
and ``distill`` is not told those statistics, so the pixel box is recovered from the data: per
channel, ``lo`` and ``hi`` are the minimum and maximum of the (normalised) training images, which
are exactly ``-mean/std`` and ``(1 - mean)/std`` whenever the split holds a black and a white pixel
(CIFAR, Fashion-MNIST, MNIST do). The synthetic images are *parameterised* in pixel units
``p = (x - lo) / (hi - lo)`` and fed to networks as ``lo + (hi - lo) * p``, so learning rate,
momentum, clamp and padding mean what they mean in the reference; the returned images are
normalised like every other SyntheticSet.

Returned set. The SyntheticSet holds the DECODED images (``num_classes * ipc * factor^2``, hard
labels, class-major; within a class tile-major: tile (0, 0) of every stored image, then tile
(0, 1), ...), so every evaluator treats it like any other set. ``meta`` records ``factor``,
``stored_images`` (``num_classes * ipc``) and ``images_per_class`` (``ipc * factor^2``).

Not implemented / deviations (all documented in the config too):
- Evaluation-time selection: the reference reports the best test accuracy over checkpoints every
  500 iterations; ddlnl returns the last iteration's set.
- ``decode_type`` "multi"/"bound" (ImageNet only in the reference) and non-ConvNet encoders.
- ddlnl option, not in DANCE: ``noise_correction`` (off by default), the structured-noise remedy of
  :mod:`ddlnl.correction` (unmixed inner-class targets; calibration toward the rows of ``T``).

Defining steps (pinned by ``tests/test_defining_dance.py``, ``tests/test_dance.py``):

1. pre-trained models trained on the noisy labels (DANCE's pre-training recipe), their initial and
   final weights only;
2. inner-class view: the middle encoder ``lam * theta_init + (1 - lam) * theta_final``, ``lam ~
   U(0, 1)``, one random model per iteration; per class, one SGD step on the class-mean embedding
   distance of a real batch and the decoded synthetic images under ONE shared DSA draw;
3. inter-class view: ``iter_calib`` SGD steps per class on the final model's cross-entropy of the
   decoded synthetic images;
4. multi-formation decoding (``factor x factor`` tiles upsampled);
5. pixels in [0, 1] units, clipped every iteration, lr ``0.01 * ipc`` (momentum 0.5).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..augment import DSA
from ..correction import (CORRECTION_SOURCES, NoiseModel, calibration_targets, check_noise_model, unmix_means,
                          unmixing_matrix)
from ..data import LabeledTensors
from ..errors import ConfigError
from ..experts import ExpertConfig, Trajectories, get_experts
from ..precision import autocast, check_precision, inplace_relu_
from ..synthetic import SyntheticSet
from ..train import TrainConfig
from ..utils import derive_seed, generator, progress as progress_bar, retain_freed_cpu_memory
from .common import check_ipc, class_indices, sample_per_class
from .dm import matching_loss

# IDC/DANCE matching augmentation (arg_condense.py --aug_type): colour, crop and cutout, ALL applied
# in that order with one parameter set for the whole batch (misc/augment.py DiffAug(batch=True)).
MATCH_STRATEGY = "color_crop_cutout"
# Pre-training augmentation: aug_type minus cutout (the reference removes it when CutMix is on).
PRETRAIN_STRATEGY = "color_crop"


@dataclass(frozen=True)
class DANCEConfig:
    """DANCE hyperparameters; defaults are the published CIFAR-10 recipe
    (``arguments/reproduce_condense.py`` + ``arg_condense.py`` with ``--reproduce``; the study's
    scripts add ``--factor 2``)."""

    iterations: int = 10000  # outer iterations (reference niter)
    factor: int = 2  # multi-formation: each stored image holds factor x factor tiles (1 = none)
    lr_img_per_ipc: float = 0.01  # SGD lr on the pixels, in [0, 1] pixel units, is this x IPC (lr_img = 0.01 * ipc)
    momentum: float = 0.5  # SGD momentum on the pixels (mom_img)
    batch_real: int = 128  # real images per class per matching step
    batch_syn_max: int = 200  # at most this many decoded synthetic images per class per step (random subset)
    iter_calib: int = 1  # calibration passes over the classes per iteration (0 = no inter-class view)
    init: str = "real"  # real (factor > 1: factor^2 down-scaled real images per stored image, IDC "mix") | noise
    clamp: bool = True  # clip the pixels to [0, 1] at the start of every iteration (and at the end)
    dsa_strategy: str = MATCH_STRATEGY  # matching augmentation (siamese, all ops applied; '' = none)
    # Pre-trained models: ddlnl experts trained once per noisy training set (cached, shared by every IPC).
    num_pretrained: int = 5  # models drawn from (num_premodel; the reference trains 20, uses the first 5)
    pretrain_epochs: int = 60  # pretrain_epochs
    pretrain_lr: float = 0.01  # SGD lr; x pretrain_lr_gamma at epochs 2N//3 and 5N//6 (MultiStepLR)
    pretrain_lr_gamma: float = 0.2
    pretrain_momentum: float = 0.9
    pretrain_weight_decay: float = 5e-4
    pretrain_batch: int = 64  # batch_real of arg_pretrain.py (the pre-training loader's batch)
    pretrain_dsa_strategy: str = PRETRAIN_STRATEGY  # per-sample DSA of every pre-training batch ('' = none)
    # CutMix in pre-training and in DANCE's own evaluation (arg_pretrain.py / arg_condense.py:
    # --mixup cut, mix_p 0.5 for every dataset, --beta 1; train.py train_epoch).
    cutmix_prob: float = 0.5  # probability per batch; 0 = off
    cutmix_beta: float = 1.0  # lam ~ Beta(beta, beta)
    expert_seed: int = 0  # pre-trained models depend on (data, config, this seed), not on the distillation seed
    cache_experts: bool = True  # False: pre-train in memory on every call (tests)
    # Architecture of the pre-trained models (= the encoders).
    width: int = 128
    depth: int = 3
    norm: str = "instance"
    log_every: int = 1  # record the two losses every this many iterations
    # ddlnl option, not in DANCE: "bf16" runs both views' networks under bfloat16 autocast
    # (ddlnl.precision); "fp32" is the exact path, as DANCE.py.
    precision: str = "fp32"
    # Structured-noise remedy (ddlnl.correction): none | estimated | true. Not the published method
    # (off by default). With a source of T: the inner-class view matches each class to the unmixed
    # mean sum_y B[c, y] mean embed(real of given class y), B = P(true | given)^-1, under ONE DSA
    # draw per iteration shared by every class (the targets mix every class's real batch); the
    # inter-class calibration's target for class c is the row T[c] (what the noisy-label model
    # should say for a clean class-c image) instead of the one-hot c. "true" is an oracle.
    noise_correction: str = "none"
    KEY_NEUTRAL: ClassVar[dict[str, object]] = {"precision": "fp32", "noise_correction": "none"}

    # A 2-core CPU on a 5,000-image 28x28 Fashion-MNIST subset at IPC 10 (factor 2: 40 decoded
    # images per class): 3 pre-trained models x 10 epochs at width 32 (lr x0.2 at epochs 6 and 8;
    # cached per noisy set, shared by every IPC), then 200 iterations with 64 real images per class.
    # Measured with 1 thread on a shared 2-core machine: 1.6-2.6 s per pre-training epoch (50-80 s
    # for all 30), 0.14-0.36 s per iteration (30-70 s), so 1.5-2.5 min per noisy set and IPC 10.
    # At 40% symmetric noise (one seed, one 300-epoch width-32 evaluation run): 68.8% test
    # accuracy, against 55.2% for 10 random noisy images per class and 65.3% for 40.
    PRESETS: ClassVar[dict[str, dict]] = {"cpu": {
        "iterations": 200, "batch_real": 64, "num_pretrained": 3, "pretrain_epochs": 10, "width": 32}}

    def check(self) -> None:
        if self.iterations < 0 or self.batch_real < 1 or self.batch_syn_max < 1 or self.iter_calib < 0:
            raise ConfigError("dance: iterations and iter_calib must be >= 0, batch_real and batch_syn_max >= 1")
        if self.factor < 1:
            raise ConfigError(f"dance: factor must be >= 1, got {self.factor}")
        if self.init not in {"real", "noise"}:
            raise ConfigError(f"dance: init {self.init!r}: use real or noise")
        if self.lr_img_per_ipc <= 0 or not 0 <= self.momentum < 1:
            raise ConfigError("dance: lr_img_per_ipc must be > 0 and momentum in [0, 1)")
        if not 0.0 <= self.cutmix_prob <= 1.0 or self.cutmix_beta <= 0:
            raise ConfigError("dance: cutmix_prob must be in [0, 1] and cutmix_beta > 0")
        if self.num_pretrained < 1 or self.pretrain_epochs < 1:
            raise ConfigError("dance: num_pretrained and pretrain_epochs must be >= 1")
        check_precision(self.precision, "dance")
        if self.noise_correction not in CORRECTION_SOURCES:
            raise ConfigError(f"dance: noise_correction {self.noise_correction!r}: use one of {', '.join(CORRECTION_SOURCES)}")
        self.expert_config().check()

    def pretrain_milestones(self) -> tuple[int, ...]:
        """Epochs at which the pre-training lr is multiplied by ``pretrain_lr_gamma``: ``2N//3``
        and ``5N//6`` (``pretrain.py``), without zeros or repeats for very short runs."""
        n = self.pretrain_epochs
        return tuple(sorted({m for m in (2 * n // 3, 5 * n // 6) if m >= 1}))

    def expert_config(self) -> ExpertConfig:
        """The pre-training as an :class:`~ddlnl.experts.ExpertConfig` (its epoch 0 = theta_init,
        its last epoch = theta_final). ``ddlnl experts --method dance`` trains these."""
        return ExpertConfig(num_experts=self.num_pretrained, epochs=self.pretrain_epochs, lr=self.pretrain_lr,
                            batch_size=self.pretrain_batch, momentum=self.pretrain_momentum,
                            weight_decay=self.pretrain_weight_decay,
                            augment="dsa" if self.pretrain_dsa_strategy else "none",
                            dsa_strategy=self.pretrain_dsa_strategy or PRETRAIN_STRATEGY, dsa_mode="idc",
                            cutmix_prob=self.cutmix_prob, cutmix_beta=self.cutmix_beta,
                            width=self.width, depth=self.depth, norm=self.norm,
                            lr_milestones=self.pretrain_milestones(), lr_gamma=self.pretrain_lr_gamma)


# --------------------------------------------------------------------------------------------
# Pixel space
# --------------------------------------------------------------------------------------------


def pixel_box(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(lo, hi)``, each ``1 x C x 1 x 1``: the normalised values of pixel 0 and 1.

    Recovered as the per-channel min and max of ``images`` (normalised training images); exact
    when the split holds a black and a white pixel in every channel. A constant channel gets a
    unit-width box so the map stays invertible.
    """
    lo = images.amin(dim=(0, 2, 3)).float()
    hi = images.amax(dim=(0, 2, 3)).float()
    hi = torch.where(hi > lo, hi, lo + 1.0)
    return lo.view(1, -1, 1, 1), hi.view(1, -1, 1, 1)


# --------------------------------------------------------------------------------------------
# Multi-formation
# --------------------------------------------------------------------------------------------


def _tile_size(side: int, factor: int) -> int:
    return math.ceil(side / factor)


def decode(stored: torch.Tensor, labels: torch.Tensor, factor: int, *,
           pad_value: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform multi-formation (IDC/DANCE ``decode_zoom``): every stored image -> ``factor^2`` images.

    Each image is padded (bottom/right, with ``pad_value``) to a multiple of ``factor`` per side,
    cut into ``factor x factor`` tiles, and every tile is upsampled bilinearly
    (``align_corners=False``) back to ``H x W``. Differentiable w.r.t. ``stored``.

    Args:
        stored: ``N x C x H x W`` stored images (pixel units when ``pad_value`` is 0.5).
        labels: ``N`` labels (any dtype; rows of soft labels also work).
        factor: tiles per side; 1 returns the inputs unchanged.

    Returns:
        ``(images N*factor^2 x C x H x W, labels)``, tile-major: tile (0, 0) of all N images, then
        tile (0, 1), ..., with ``labels`` repeated ``factor^2`` times in the same order.
    """
    if factor <= 1:
        return stored, labels
    h, w = stored.shape[-2:]
    th, tw = _tile_size(h, factor), _tile_size(w, factor)
    pad_h, pad_w = th * factor - h, tw * factor - w
    padded = F.pad(stored, (0, pad_w, 0, pad_h), value=pad_value) if pad_h or pad_w else stored
    tiles = [padded[:, :, i * th:(i + 1) * th, j * tw:(j + 1) * tw] for i in range(factor) for j in range(factor)]
    images = F.interpolate(torch.cat(tiles), size=(h, w), mode="bilinear", align_corners=False)
    return images, torch.cat([labels] * factor ** 2)


def decode_per_class(stored: torch.Tensor, num_classes: int, factor: int, *,
                     pad_value: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a class-major stored set (``num_classes * ipc`` images, slot ``k`` of class
    ``k // ipc``) class by class.

    Returns:
        ``(images num_classes*ipc*factor^2 x C x H x W, int64 labels)``, class-major, tile-major
        within a class (see :func:`decode`).
    """
    ipc = stored.shape[0] // num_classes
    out_x, out_y = [], []
    for c in range(num_classes):
        x, y = decode(stored[c * ipc:(c + 1) * ipc], torch.full((ipc,), c, dtype=torch.int64), factor,
                      pad_value=pad_value)
        out_x.append(x)
        out_y.append(y)
    return torch.cat(out_x), torch.cat(out_y)


def encode_real(real: torch.Tensor, ipc: int, factor: int, *, pad_value: float = 0.5) -> torch.Tensor:
    """IDC "mix" initialisation: ``ipc`` stored images from ``ipc * factor^2`` real ones.

    Tile ``k = i * factor + j`` of stored image ``n`` is real image ``k * ipc + n`` down-scaled
    (nearest, as the reference's ``F.interpolate`` default) to the tile size, so :func:`decode`
    returns each real image, blurred by the down/up-scaling, in the same tile-major order. Parts
    of the padded grid that fall outside ``H x W`` are dropped.

    Args:
        real: ``ipc * factor^2 x C x H x W`` (pixel units when ``pad_value`` is 0.5).

    Returns:
        ``ipc x C x H x W``.
    """
    if factor <= 1:
        return real[:ipc].clone()
    n, c, h, w = real.shape
    if n != ipc * factor ** 2:
        raise ValueError(f"encode_real needs ipc * factor^2 = {ipc * factor ** 2} images, got {n}")
    th, tw = _tile_size(h, factor), _tile_size(w, factor)
    canvas = torch.full((ipc, c, th * factor, tw * factor), pad_value, dtype=real.dtype, device=real.device)
    small = F.interpolate(real, size=(th, tw), mode="nearest")
    for i in range(factor):
        for j in range(factor):
            k = i * factor + j
            canvas[:, :, i * th:(i + 1) * th, j * tw:(j + 1) * tw] = small[k * ipc:(k + 1) * ipc]
    return canvas[:, :, :h, :w].contiguous()


# --------------------------------------------------------------------------------------------
# The two views
# --------------------------------------------------------------------------------------------


def interpolate(theta_init: torch.Tensor, theta_final: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """The middle encoder's flat parameters ``lam * theta_init + (1 - lam) * theta_final``
    (``DANCE.py``: ``l * model_init + (1 - l) * model_final``; lam 1 = init, lam 0 = final)."""
    return lam * theta_init + (1 - lam) * theta_final


def inner_class_loss(encoder: torch.nn.Module, real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """``||mean embed(real) - mean embed(syn)||^2`` for one class (``innerloss``; gradient only
    through ``syn``)."""
    return matching_loss(encoder, [real], [syn])


def inter_class_loss(model: torch.nn.Module, syn: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` (the final pre-trained network) on ``syn`` with ``labels``
    (``interloss``): hard ``B`` int64 labels, or ``B x K`` probability rows (the remedy's ``T[c]``)."""
    logits = model(syn).float()
    if labels.ndim == 2:
        return -(labels * F.log_softmax(logits, dim=1)).sum(1).mean()
    return F.cross_entropy(logits, labels)


def unmixed_targets(encoder: torch.nn.Module, real: list[torch.Tensor], unmix) -> torch.Tensor:
    """The remedy's inner-class targets, ``K x D``: row ``c`` is ``sum_y B[c, y]`` mean
    ``embed(real[y])`` (``real[y]``: a batch of given class ``y``, already augmented), the estimate
    of class ``c``'s clean mean embedding (:func:`ddlnl.correction.unmix_means`)."""
    with torch.no_grad():
        means = torch.stack([encoder.embed(r).float().mean(0) for r in real])
    return unmix_means(means, unmix)


def _frozen(experts: Trajectories, device: torch.device) -> torch.nn.Module:
    net = experts.build_model(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.train()  # as the reference (instance norm: train and eval modes agree)


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


def _initial_pixels(train: LabeledTensors, ipc: int, cfg: DANCEConfig, indices: list[torch.Tensor],
                    lo: torch.Tensor, hi: torch.Tensor, g: torch.Generator,
                    num_classes: int) -> tuple[torch.Tensor, list[int]]:
    """Stored images in pixel units, ``num_classes * ipc x C x H x W``, and the real indices used."""
    if cfg.init == "noise":
        # Synthesizer.__init__: clamp(randn / 4 + 0.5, 0, 1)
        shape = (num_classes * ipc, *train.images.shape[1:])
        return (torch.randn(shape, generator=g) / 4 + 0.5).clamp(0, 1), []
    # The reference takes the class's first images in dataset order; here a seeded random choice.
    per_stored = cfg.factor ** 2
    picks = sample_per_class(indices, ipc * per_stored, g)
    pixels = (train.images[picks].float() - lo.cpu()) / (hi - lo).cpu()
    stored = [encode_real(pixels[c * ipc * per_stored:(c + 1) * ipc * per_stored], ipc, cfg.factor)
              for c in range(num_classes)]
    return torch.cat(stored), picks.tolist()


def distill(train: LabeledTensors, ipc: int, cfg: DANCEConfig = DANCEConfig(), *, seed: int,
            num_classes: int, device: torch.device | str = "cpu", progress: bool = False,
            noise_model: NoiseModel | None = None) -> SyntheticSet:
    """Distil ``train`` (noisy hard labels) with DANCE into ``ipc`` STORED images per class.

    Pre-trained models come from :func:`ddlnl.experts.get_experts` (:meth:`DANCEConfig.expert_config`;
    cached per noisy training set unless ``cfg.cache_experts`` is False). The set after the last
    iteration is returned (no selection by test accuracy).

    Returns:
        SyntheticSet of the DECODED images: float32 ``num_classes * ipc * factor^2 x C x H x W`` in
        the training set's normalised space, hard ``int64`` labels, class-major (within a class
        tile-major, see :func:`decode`). ``meta``: ``factor``, ``stored_images``,
        ``images_per_class`` (= ``ipc * factor^2``), ``loss`` and ``loss_inner`` (inner-class
        matching loss, mean over classes, per logged iteration), ``loss_calib`` (calibration
        cross-entropy, mean over classes and passes), ``pretrained`` and ``lam`` (the model and
        interpolation weight of each logged iteration), ``expert_key``, ``pixel_box`` (per-channel
        normalised values of pixels 0 and 1), ``init_indices``; with ``noise_correction`` also
        ``noise_model``.

    ``noise_model``: ``T`` and the class prior for ``cfg.noise_correction`` (required when it is on;
    :func:`ddlnl.remedy.noise_model_for_job` makes it in a job).
    """
    cfg.check()
    unmix = transition = None
    if cfg.noise_correction != "none":
        noise_model = check_noise_model("dance", cfg.noise_correction, noise_model, num_classes)
        unmix = unmixing_matrix(noise_model)
        transition = torch.as_tensor(noise_model.transition, dtype=torch.float32)
    device = torch.device(device)
    if device.type == "cpu":
        # Each class's real batch allocates large activations afresh, as in DM: without this, glibc
        # maps and unmaps them every time (page faults; see there). Set here too, not only by the
        # training loop: pre-trained models from the cache train nothing in this process.
        retain_freed_cpu_memory()
    indices = class_indices(train.labels, num_classes)
    check_ipc(indices, ipc * (cfg.factor ** 2 if cfg.init == "real" else 1))
    experts = get_experts(train, cfg.expert_config(), seed=cfg.expert_seed, num_classes=num_classes,
                          device=device, progress=progress, cache=cfg.cache_experts)
    g = generator(derive_seed(seed, "dance"))
    lo, hi = (t.to(device) for t in pixel_box(train.images))
    scale = hi - lo

    stored, init_idx = _initial_pixels(train, ipc, cfg, indices, lo, hi, g, num_classes)
    stored = stored.to(device).requires_grad_(True)
    # One tensor for all classes, as the reference: a class's step also moves the other classes by
    # the momentum they carry.
    opt = torch.optim.SGD([stored], lr=cfg.lr_img_per_ipc * ipc, momentum=cfg.momentum)
    dsa = DSA(cfg.dsa_strategy, mode="all") if cfg.dsa_strategy else None
    encoder, final = inplace_relu_(_frozen(experts, device)), inplace_relu_(_frozen(experts, device))
    images = train.images.to(device)

    def synthetic(c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Class ``c``'s decoded images (normalised, differentiable) and labels (Synthesizer.sample)."""
        x, y = decode(stored[c * ipc:(c + 1) * ipc], torch.full((ipc,), c, dtype=torch.int64), cfg.factor)
        if x.shape[0] > cfg.batch_syn_max:
            keep = torch.randperm(x.shape[0], generator=g)[:cfg.batch_syn_max]
            x, y = x[keep.to(device)], y[keep]
        return lo + scale * x, y.to(device)

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    log: dict[str, list] = {"loss_inner": [], "loss_calib": [], "pretrained": [], "lam": []}
    # Only each model's first and last epochs are used: read them once, not from disk every iteration.
    ends = [(experts.params(k, 0, device=device), experts.params(k, -1, device=device))
            for k in range(experts.num_experts)]
    bar = progress_bar(range(cfg.iterations), desc=f"dance ipc={ipc}", enabled=progress)
    for it in bar:
        model_id = int(torch.randint(experts.num_experts, (1,), generator=g))
        lam = float(torch.rand(1, generator=g))
        theta_init, theta_final = ends[model_id]
        experts.layout.load(encoder, interpolate(theta_init, theta_final, lam))
        experts.layout.load(final, theta_final)
        if cfg.clamp:
            with torch.no_grad():
                stored.clamp_(0.0, 1.0)
        inner = 0.0
        if unmix is not None:
            # The remedy: every class's real batch under the iteration's one draw, unmixed into
            # clean-class targets once (the encoder is fixed for the iteration; the real side has
            # no graph), then one step per class as below.
            draw = dsa.sample(1, g, siamese=True) if dsa is not None else None
            reals = []
            for idx in indices:
                real = images[idx[torch.randperm(idx.numel(), generator=g)[:cfg.batch_real]].to(device)]
                reals.append(dsa.apply(real, draw) if draw is not None else real)
            with autocast(device, cfg.precision):
                targets = unmixed_targets(encoder, reals, unmix)
        for c in range(num_classes):  # inner-class view: one step per class
            if unmix is not None:
                syn, _ = synthetic(c)
                if draw is not None:
                    syn = dsa.apply(syn, draw)
                with autocast(device, cfg.precision):
                    loss = ((targets[c] - encoder.embed(syn).float().mean(0)) ** 2).sum()
                step(loss)
                inner += float(loss.detach())
                continue
            idx = indices[c]
            real = images[idx[torch.randperm(idx.numel(), generator=g)[:cfg.batch_real]].to(device)]
            syn, _ = synthetic(c)
            if dsa is not None:
                draw = dsa.sample(1, g, siamese=True)  # one draw for the real and the synthetic batch
                real, syn = dsa.apply(real, draw), dsa.apply(syn, draw)
            with autocast(device, cfg.precision):
                loss = inner_class_loss(encoder, real, syn)
            step(loss)
            inner += float(loss.detach())
        calib = 0.0
        for _ in range(cfg.iter_calib):  # inter-class view: calibration by the final model
            for c in range(num_classes):
                syn, labels = synthetic(c)
                if transition is not None:  # the remedy: toward T[c], what the noisy-label model says for clean c
                    labels = calibration_targets(labels, transition.to(device))
                if dsa is not None:
                    syn = dsa.apply(syn, dsa.sample(1, g, siamese=True))
                with autocast(device, cfg.precision):
                    loss = inter_class_loss(final, syn, labels)
                step(loss)
                calib += float(loss.detach())
        if cfg.log_every and it % cfg.log_every == 0:
            log["loss_inner"].append(inner / num_classes)
            log["loss_calib"].append(calib / (num_classes * cfg.iter_calib) if cfg.iter_calib else 0.0)
            log["pretrained"].append(model_id)
            log["lam"].append(lam)
        if progress:
            bar.set_postfix(inner=f"{inner / num_classes:.3f}", calib=f"{calib / max(1, num_classes * cfg.iter_calib):.3f}")

    with torch.no_grad():
        final_pixels = stored.detach().clamp(0.0, 1.0) if cfg.clamp else stored.detach()
        decoded, labels = decode_per_class(final_pixels, num_classes, cfg.factor)
        decoded = (lo + scale * decoded).float().cpu()
    return SyntheticSet(images=decoded, labels=labels,
                        meta={"method": "dance", "config": asdict(cfg), "ipc": ipc, "seed": seed,
                              "num_classes": num_classes, "factor": cfg.factor,
                              "stored_images": num_classes * ipc, "images_per_class": ipc * cfg.factor ** 2,
                              "loss": log["loss_inner"], **log, "expert_key": experts.key,
                              "num_pretrained": experts.num_experts,
                              "pixel_box": {"lo": lo.flatten().tolist(), "hi": hi.flatten().tolist()},
                              "init_indices": init_idx, "image_space": "normalised",
                              **({"noise_model": noise_model.to_dict()} if unmix is not None else {})})


# --------------------------------------------------------------------------------------------
# DANCE's own evaluation recipe
# --------------------------------------------------------------------------------------------


def dance_eval_config(base: TrainConfig, cfg: DANCEConfig = DANCEConfig()) -> TrainConfig:
    """DANCE's evaluation recipe on ``base``'s architecture and (dataset-adapted) DSA strategy.

    From ``arg_condense.py`` (non-ImageNet datasets) and ``train.py``: 1500 epochs, batch 64, SGD
    lr 0.01, momentum 0.9, weight decay 5e-4, on the decoded set; every batch gets the IDC
    augmentation (``DiffAug(batch=False)``, ddlnl DSA mode ``idc``): per-sample flip and colour,
    then one of crop / scale / rotate, with ``cutout`` removed (``arg_condense.py`` drops it when
    ``--mixup cut``), then CutMix with ``cfg.cutmix_prob`` (0.5) and ``cfg.cutmix_beta`` (1); the lr
    is multiplied by 0.2 at epoch 2N//3 and again at 5N//6 (``train.py``: ``MultiStepLR`` stepped
    once per epoch; ddlnl schedule ``multistep``).
    """
    strategy = "_".join(op for op in base.dsa_strategy.split("_") if op != "cutout")
    return replace(base, epochs=1500, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                   augment="dsa", dsa_strategy=strategy, dsa_mode="idc", cutmix_prob=cfg.cutmix_prob,
                   cutmix_beta=cfg.cutmix_beta, optimizer="sgd", loss="ce", warmup_epochs=0,
                   final_lr_fraction=0.0)


def own_recipe(base: TrainConfig, syn: SyntheticSet, dataset_name: str) -> tuple[TrainConfig, LabeledTensors]:
    """DANCE's evaluation for the ``own`` protocol: :func:`dance_eval_config` on the common config
    (whose DSA strategy is already adapted to ``dataset_name``) with the set's own CutMix settings
    (``meta["config"]``, else DANCE's), trained on the decoded set."""
    recorded = syn.meta.get("config") or {}
    defaults = DANCEConfig()
    cfg = replace(defaults, cutmix_prob=float(recorded.get("cutmix_prob", defaults.cutmix_prob)),
                  cutmix_beta=float(recorded.get("cutmix_beta", defaults.cutmix_beta)))
    return dance_eval_config(base, cfg), syn.as_labeled()
