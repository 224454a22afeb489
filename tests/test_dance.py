"""DANCE: multi-formation decoding, the middle encoder's two ends, both objectives going down on
fixed encoders, the pixel box, the pre-training schedule and cache, the own protocol, the config."""

import math

import pytest
import torch

import ddlnl.experts as ex
from ddlnl.errors import ConfigError
from ddlnl.experts import ExpertConfig, expert_key, get_experts
from ddlnl.methods import METHODS, method_config
from ddlnl.methods.dance import (DANCEConfig, decode, decode_per_class, encode_real, inner_class_loss,
                                 inter_class_loss, interpolate, own_recipe, pixel_box)
from ddlnl.synthetic import SyntheticSet
from ddlnl.train import TrainConfig
from ddlnl.config import apply_overrides

# ~0.05 s per call on the 120-image blobs, after a one-off warm-up (depth 2: 8x8 inputs).
TINY = {"iterations": 2, "num_pretrained": 2, "pretrain_epochs": 2, "pretrain_lr": 0.05, "pretrain_batch": 32,
        "batch_real": 8, "width": 8, "depth": 2, "cache_experts": False}


def _cfg(**over) -> DANCEConfig:
    return apply_overrides(DANCEConfig(), {**TINY, **over})


# ---------------------------------------------------------------------------------- decoding


def test_decoding_a_factor_2_set_gives_4x_the_images_with_their_labels():
    stored = torch.rand(4 * 3, 1, 8, 8)  # 4 classes x 3 stored images, class-major
    images, labels = decode_per_class(stored, 4, 2)
    assert images.shape == (48, 1, 8, 8)
    assert labels.dtype == torch.int64 and labels.tolist() == [c for c in range(4) for _ in range(12)]
    # Within a class, tile-major: decoded image t * ipc + n is tile t of stored image n, upsampled.
    tile = stored[3 + 1, :, 0:4, 4:8]  # class 1, stored image 1, tile (0, 1)
    up = torch.nn.functional.interpolate(tile[None], size=(8, 8), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(images[12 + 1 * 3 + 1], up)


def test_factor_1_decodes_to_the_stored_images():
    stored, labels = torch.rand(6, 3, 5, 5), torch.arange(6)
    images, out = decode(stored, labels, 1)
    assert images is stored and out is labels


def test_encoding_real_images_then_decoding_returns_them():
    # Constant images survive the nearest down-scaling and bilinear up-scaling exactly.
    real = torch.arange(12, dtype=torch.float32).view(12, 1, 1, 1).expand(12, 2, 6, 6).contiguous() / 12
    stored = encode_real(real, 3, 2)
    assert stored.shape == (3, 2, 6, 6)
    images, labels = decode(stored, torch.zeros(3, dtype=torch.int64), 2)
    assert torch.allclose(images, real) and labels.shape == (12,)


def test_sides_not_divisible_by_the_factor_are_padded():
    stored = torch.rand(2, 1, 7, 7)
    images, labels = decode(stored, torch.tensor([0, 1]), 3)
    assert images.shape == (18, 1, 7, 7) and labels.tolist() == [0, 1] * 9
    # Tile (2, 2) covers rows/cols 6..8: one stored pixel and padding 0.5.
    corner = torch.full((1, 3, 3), 0.5)
    corner[:, 0, 0] = stored[0, :, 6, 6]
    up = torch.nn.functional.interpolate(corner[None], size=(7, 7), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(images[8 * 2], up)


def test_distill_returns_the_decoded_set_with_its_meta(tiny_dataset):
    syn = METHODS["dance"].distill(tiny_dataset.train, 2, _cfg(factor=2), seed=0, num_classes=4)
    assert syn.images.shape == (32, 1, 8, 8) and torch.isfinite(syn.images).all()
    assert syn.hard_labels.tolist() == [c for c in range(4) for _ in range(8)]
    assert syn.meta["factor"] == 2 and syn.meta["stored_images"] == 8 and syn.meta["images_per_class"] == 8
    assert len(syn.meta["loss_inner"]) == len(syn.meta["loss_calib"]) == 2
    one = METHODS["dance"].distill(tiny_dataset.train, 2, _cfg(factor=1), seed=0, num_classes=4)
    assert one.images.shape == (8, 1, 8, 8) and one.hard_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_ipc_counts_stored_images_and_real_init_needs_factor_squared_per_class(tiny_dataset):
    with pytest.raises(ConfigError, match="ipc=32 exceeds the 30 images"):
        METHODS["dance"].distill(tiny_dataset.train, 8, _cfg(factor=2), seed=0, num_classes=4)


# ---------------------------------------------------------------------------------- encoders


def test_interpolated_encoder_is_init_at_lambda_1_and_final_at_lambda_0(tiny_dataset):
    experts = get_experts(tiny_dataset.train, _cfg().expert_config(), seed=0, num_classes=4, cache=False)
    init, final = experts.params(1, 0), experts.params(1, -1)
    assert not torch.equal(init, final)
    assert torch.equal(interpolate(init, final, 1.0), init)
    assert torch.equal(interpolate(init, final, 0.0), final)
    assert torch.allclose(interpolate(init, final, 0.25), 0.25 * init + 0.75 * final)
    # Loaded into a network, the ends embed like the pre-trained model's first and last epochs.
    x = tiny_dataset.train.images[:10]
    for lam, epoch in ((1.0, 0), (0.0, -1)):
        net = experts.layout.load(experts.build_model(), interpolate(init, final, lam))
        ref = experts.load_into(experts.build_model(), 1, epoch)
        assert torch.equal(net.embed(x), ref.embed(x))


def test_pretraining_is_dance_schedule_through_the_expert_machinery():
    ecfg = DANCEConfig().expert_config()
    assert (ecfg.epochs, ecfg.lr, ecfg.momentum, ecfg.weight_decay, ecfg.batch_size) == (60, 0.01, 0.9, 5e-4, 64)
    assert ecfg.lr_milestones == (40, 50) and ecfg.lr_gamma == 0.2 and ecfg.num_experts == 5
    assert [ecfg.epoch_lr(e) for e in (0, 39, 40, 49, 50, 59)] == pytest.approx([0.01, 0.01, 0.002, 0.002, 4e-4, 4e-4])


def test_expert_lr_milestones_reach_the_training_loop_and_leave_old_keys_alone(tiny_dataset):
    base = ExpertConfig(num_experts=1, epochs=2, lr=0.05, batch_size=32, width=8, depth=2)
    assert "lr_milestones" not in base.key_fields() and "lr_gamma" not in base.key_fields()
    assert base.epoch_lr(1) == base.lr
    stepped = ExpertConfig(**{**base.__dict__, "lr_milestones": (1,), "lr_gamma": 1e-6})
    assert expert_key(tiny_dataset.train, stepped, seed=0, num_classes=4) != expert_key(
        tiny_dataset.train, base, seed=0, num_classes=4)
    traj = ex.train_expert(tiny_dataset.train, stepped, index=0, seed=0, num_classes=4)
    first, second = (traj[1] - traj[0]).norm(), (traj[2] - traj[1]).norm()
    assert second < 1e-4 * first  # epoch 1 ran at lr 0.05 * 1e-6
    with pytest.raises(ConfigError, match="lr_milestones"):
        ExpertConfig(lr_milestones=(5, 2)).check()


def test_pretrained_models_are_cached_and_reused(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("DDLNL_CACHE", str(tmp_path))
    cfg = _cfg(cache_experts=True)
    first = METHODS["dance"].distill(tiny_dataset.train, 1, cfg, seed=0, num_classes=4)
    assert first.meta["expert_key"] == expert_key(tiny_dataset.train, cfg.expert_config(), seed=0, num_classes=4)
    assert (tmp_path / "experts" / first.meta["expert_key"] / "manifest.json").exists()

    def boom(*a, **k):
        raise AssertionError("pre-trained models were trained again")

    monkeypatch.setattr(ex.cache, "train_expert", boom)
    again = METHODS["dance"].distill(tiny_dataset.train, 1, cfg, seed=0, num_classes=4)
    assert torch.equal(first.images, again.images)


# ---------------------------------------------------------------------------------- objectives


def _objectives(train, syn: SyntheticSet, cfg: DANCEConfig) -> tuple[float, float]:
    """Both objectives on fixed, un-augmented held-out encoders: the inner-class matching loss
    (summed over classes, all real images of the class) averaged over lam in {0.1, ..., 0.9} of
    every pre-trained model, and the calibration cross-entropy of every final model."""
    experts = get_experts(train, cfg.expert_config(), seed=cfg.expert_seed, num_classes=4, cache=False)
    net = experts.build_model()
    inner, calib, lams = 0.0, 0.0, (0.1, 0.3, 0.5, 0.7, 0.9)
    with torch.no_grad():
        for e in range(experts.num_experts):
            for lam in lams:
                experts.layout.load(net, interpolate(experts.params(e, 0), experts.params(e, -1), lam))
                for c in range(4):
                    inner += float(inner_class_loss(net, train.images[train.labels == c], syn.images[syn.labels == c]))
            experts.layout.load(net, experts.params(e, -1))
            calib += float(inter_class_loss(net, syn.images, syn.labels))
    return inner / (len(lams) * experts.num_experts), calib / experts.num_experts


def test_both_losses_decrease(tiny_dataset):
    train = tiny_dataset.train
    over = dict(init="noise", width=16, pretrain_epochs=4, batch_real=30)
    start = METHODS["dance"].distill(train, 2, _cfg(**over, iterations=0), seed=0, num_classes=4)
    end = METHODS["dance"].distill(train, 2, _cfg(**over, iterations=30), seed=0, num_classes=4)
    inner0, calib0 = _objectives(train, start, _cfg(**over))
    inner1, calib1 = _objectives(train, end, _cfg(**over))
    assert inner1 < 0.5 * inner0  # measured: 42 -> 2.0
    assert calib1 < 0.5 * calib0  # measured: 1.67 -> 0.27


def test_without_calibration_the_matching_loss_still_decreases(tiny_dataset):
    train = tiny_dataset.train
    over = dict(init="noise", width=16, pretrain_epochs=4, batch_real=30, iter_calib=0)
    start = METHODS["dance"].distill(train, 2, _cfg(**over, iterations=0), seed=0, num_classes=4)
    end = METHODS["dance"].distill(train, 2, _cfg(**over, iterations=30), seed=0, num_classes=4)
    assert end.meta["loss_calib"] == [0.0] * 30
    assert _objectives(train, end, _cfg(**over))[0] < 0.5 * _objectives(train, start, _cfg(**over))[0]


# ---------------------------------------------------------------------------------- pixel space


def test_pixel_box_is_the_normalised_image_of_0_and_1():
    pixels = torch.rand(50, 3, 6, 6)
    pixels[0, :, 0, 0], pixels[1, :, 0, 0] = 0.0, 1.0  # a black and a white pixel in every channel
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    lo, hi = pixel_box((pixels - mean) / std)
    assert torch.allclose(lo, -mean / std) and torch.allclose(hi, (1 - mean) / std)


def test_returned_images_stay_in_the_pixel_box(tiny_dataset):
    syn = METHODS["dance"].distill(tiny_dataset.train, 2, _cfg(iterations=5, init="noise"), seed=0, num_classes=4)
    lo, hi = pixel_box(tiny_dataset.train.images)
    assert bool((syn.images >= lo - 1e-5).all() and (syn.images <= hi + 1e-5).all())
    assert syn.meta["pixel_box"] == {"lo": lo.flatten().tolist(), "hi": hi.flatten().tolist()}


# ---------------------------------------------------------------------------------- protocol, config


def test_own_recipe_is_the_longer_schedule_without_cutout(tiny_dataset):
    syn = METHODS["dance"].distill(tiny_dataset.train, 1, _cfg(), seed=0, num_classes=4)
    base = TrainConfig(width=32, epochs=300, dsa_strategy="color_crop_cutout_flip_scale_rotate")
    cfg, data = METHODS["dance"].own_recipe(base, syn, "fashion-mnist")
    assert own_recipe is METHODS["dance"].own_recipe
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (1500, 64, 0.01, 0.9, 5e-4)
    assert cfg.dsa_strategy == "color_crop_flip_scale_rotate" and cfg.width == 32 and cfg.augment == "dsa"
    # IDC augmentation (flip + colour + one of crop/scale/rotate) and CutMix p 0.5, beta 1.
    assert (cfg.dsa_mode, cfg.cutmix_prob, cfg.cutmix_beta) == ("idc", 0.5, 1.0)
    # lr x0.2 at epochs 1000 and 1250 (train.py's MultiStepLR at 2N//3 and 5N//6), not /10 at half
    from ddlnl.train import _lr_at

    assert [_lr_at(cfg, 1.0, e, 0.0) for e in (749, 750, 999, 1000, 1249, 1250)] == pytest.approx(
        [1.0, 1.0, 1.0, 0.2, 0.2, 0.04])
    assert torch.equal(data.images, syn.images) and len(data) == 16


def test_cpu_preset_and_published_defaults():
    cfg = method_config("dance", "cpu")
    assert type(cfg) is DANCEConfig and cfg.width == 32 and cfg.iterations < DANCEConfig().iterations
    d = DANCEConfig()
    assert (d.iterations, d.factor, d.lr_img_per_ipc, d.momentum, d.batch_real, d.num_pretrained) == (
        10000, 2, 0.01, 0.5, 128, 5)
    assert (d.iter_calib, d.batch_syn_max, d.dsa_strategy, d.depth, d.width, d.norm) == (
        1, 200, "color_crop_cutout", 3, 128, "instance")


@pytest.mark.parametrize("over, match", [({"factor": 0}, "factor"), ({"init": "mix"}, "init"),
                                         ({"lr_img_per_ipc": 0.0}, "lr_img_per_ipc"),
                                         ({"norm": "batch"}, "batch")])
def test_bad_configs_are_refused(over, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**over).check()


def test_same_seed_same_set_and_another_seed_another(tiny_dataset):
    a = METHODS["dance"].distill(tiny_dataset.train, 1, _cfg(), seed=3, num_classes=4)
    b = METHODS["dance"].distill(tiny_dataset.train, 1, _cfg(), seed=3, num_classes=4)
    c = METHODS["dance"].distill(tiny_dataset.train, 1, _cfg(), seed=4, num_classes=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert math.isfinite(sum(a.meta["loss_inner"]))


def test_pretraining_uses_idc_augmentation_and_cutmix():
    # arg_pretrain.py: --mixup cut, mix_p 0.5, beta 1; aug_rand = DiffAug("color_crop", batch=False).
    ecfg = DANCEConfig().expert_config()
    assert (ecfg.dsa_mode, ecfg.dsa_strategy, ecfg.cutmix_prob, ecfg.cutmix_beta) == ("idc", "color_crop", 0.5, 1.0)
    tcfg = ecfg.train_config()
    assert (tcfg.dsa_mode, tcfg.cutmix_prob, tcfg.cutmix_beta) == ("idc", 0.5, 1.0)
    assert "momentum_across_epochs" in ecfg.key_fields()


def test_expert_momentum_carries_over_epoch_boundaries(tiny_dataset):
    # One full-batch SGD step per epoch, no augmentation: two epochs of an expert must equal two
    # steps of ONE torch SGD optimiser with momentum 0.9 (the buffer is not reset at the epoch).
    import torch.nn.functional as F

    from ddlnl.train import build_model
    from ddlnl.utils import derive_seed

    ecfg = ExpertConfig(num_experts=1, epochs=2, lr=0.05, batch_size=512, momentum=0.9, weight_decay=0.0,
                        augment="none", width=8, depth=2)
    traj = ex.train_expert(tiny_dataset.train, ecfg, index=0, seed=3, num_classes=4)
    model = build_model(ecfg.train_config(), channels=1, num_classes=4, image_size=(8, 8),
                        seed=derive_seed(3, "expert", 0))
    layout = ex.ParamLayout.of(model)
    assert torch.allclose(traj[0], layout.flatten(model))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in (1, 2):
        opt.zero_grad()
        F.cross_entropy(model(tiny_dataset.train.images), tiny_dataset.train.labels).backward()
        opt.step()
        assert torch.allclose(traj[epoch], layout.flatten(model).detach(), atol=1e-6)
