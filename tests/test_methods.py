"""Every registered distiller: shapes, finiteness, labels; DM's objective goes down."""

import pytest
import torch

from ddlnl.errors import ConfigError
from ddlnl.methods import METHODS, method_config
from ddlnl.methods import dm

# The smallest settings that still exercise each method's whole loop.
TINY = {"random": {}, "dm": {"iterations": 3, "batch_real": 8, "width": 8},
        "datm": {"iterations": 2, "syn_steps": 3, "expert_epochs": 1, "current_max_start_epoch": 1, "max_start_epoch": 2,
                 "num_experts": 2, "expert_train_epochs": 2, "expert_lr": 0.1, "expert_batch": 32, "width": 8, "depth": 2,
                 "cache_experts": False},
        "dance": {"iterations": 2, "num_pretrained": 2, "pretrain_epochs": 2, "pretrain_lr": 0.05, "pretrain_batch": 32,
                  "batch_real": 8, "width": 8, "depth": 2, "cache_experts": False},
        "rcig": {"iterations": 3, "batch_real": 16, "width": 8, "pool_size": 2, "inner_steps": 3, "hinv_steps": 3,
                 "inner_lr": 1e-3, "hinv_lr": 1e-3}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_returns_a_valid_synthetic_set(name, tiny_dataset):
    cfg = method_config(name, overrides=TINY.get(name, {}))
    syn = METHODS[name].distill(tiny_dataset.train, 2, cfg, seed=0, num_classes=4)
    # IPC counts stored images; a multi-formation set (DANCE, factor 2) decodes each into 4.
    per_class = syn.meta.get("images_per_class", 2)
    assert syn.images.shape == (4 * per_class, 1, 8, 8)
    assert torch.isfinite(syn.images).all()
    assert syn.hard_labels.tolist() == [c for c in range(4) for _ in range(per_class)]
    assert syn.meta["method"] == name and syn.meta["ipc"] == 2


@pytest.mark.parametrize("name", sorted(METHODS))
def test_same_seed_same_set(name, tiny_dataset):
    cfg = method_config(name, overrides=TINY.get(name, {}))
    a = METHODS[name].distill(tiny_dataset.train, 1, cfg, seed=4, num_classes=4)
    b = METHODS[name].distill(tiny_dataset.train, 1, cfg, seed=4, num_classes=4)
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_a_cpu_preset(name):
    cfg = method_config(name, "cpu")
    assert type(cfg) is METHODS[name].config


def test_random_takes_exactly_ipc_per_noisy_class_with_their_labels(tiny_dataset):
    train = tiny_dataset.train
    noisy = train.labels.clone()
    noisy[:5] = 3  # some noisy labels: random must follow the given (noisy) labels
    t = train.with_labels(noisy)
    syn = METHODS["random"].distill(t, 5, method_config("random"), seed=1, num_classes=4)
    idx = torch.tensor(syn.meta["source_indices"])
    assert len(set(idx.tolist())) == 20
    assert torch.equal(syn.labels, noisy[idx]) and torch.equal(syn.images, train.images[idx])
    assert torch.bincount(syn.labels, minlength=4).tolist() == [5, 5, 5, 5]


def test_random_refuses_ipc_above_smallest_class(tiny_dataset):
    with pytest.raises(ConfigError, match="ipc=31 exceeds the 30 images"):
        METHODS["random"].distill(tiny_dataset.train, 31, method_config("random"), seed=0, num_classes=4)


def _expected_matching_loss(dataset, images, ipc, width, n_nets=16):
    """DM's objective: the matching loss averaged over held-out random networks."""
    from ddlnl.train import TrainConfig, build_model

    real = [dataset.images[dataset.labels == c] for c in range(4)]
    syn = [images[c * ipc:(c + 1) * ipc] for c in range(4)]
    total = 0.0
    for s in range(n_nets):
        net = build_model(TrainConfig(width=width), channels=1, num_classes=4, image_size=(8, 8), seed=10_000 + s)
        with torch.no_grad():
            total += float(dm.matching_loss(net, real, syn))
    return total / n_nets


def test_dm_matching_loss_decreases(tiny_dataset):
    over = {"batch_real": 30, "width": 64, "lr_img": 10.0, "init": "noise", "dsa_strategy": ""}
    start = dm.distill(tiny_dataset.train, 2, method_config("dm", overrides={**over, "iterations": 0}),
                       seed=0, num_classes=4)
    end = dm.distill(tiny_dataset.train, 2, method_config("dm", overrides={**over, "iterations": 100}),
                     seed=0, num_classes=4)
    assert len(end.meta["loss"]) == 100
    before = _expected_matching_loss(tiny_dataset.train, start.images, 2, 64)
    after = _expected_matching_loss(tiny_dataset.train, end.images, 2, 64)
    assert after < 0.8 * before


def test_dm_matching_loss_is_zero_when_synthetic_equals_real_mean():
    net = torch.nn.Module()
    net.embed = lambda x: x.flatten(1)
    real = [torch.randn(10, 1, 2, 2)]
    syn = [real[0].mean(0, keepdim=True)]
    assert float(dm.matching_loss(net, real, syn)) == pytest.approx(0.0, abs=1e-10)


def test_unknown_method_and_preset_are_refused():
    with pytest.raises(ConfigError, match="unknown method"):
        method_config("dmx")
    with pytest.raises(ConfigError, match="no preset"):
        method_config("dm", "gpu-huge")


def test_dm_step_is_the_gradient_of_the_loss_summed_over_classes(tiny_dataset):
    # One plain SGD step (no momentum, no augmentation, the whole class as the real batch) must move
    # the images by -lr times the gradient of the all-classes matching loss, computed here in one
    # forward pass over every class: going class by class changes memory, not the numbers.
    from ddlnl.train import TrainConfig, build_model
    from ddlnl.utils import derive_seed

    over = {"batch_real": 30, "width": 16, "lr_img": 1.0, "momentum": 0.0, "dsa_strategy": ""}
    start = dm.distill(tiny_dataset.train, 3, method_config("dm", overrides={**over, "iterations": 0}),
                       seed=5, num_classes=4)
    one = dm.distill(tiny_dataset.train, 3, method_config("dm", overrides={**over, "iterations": 1}),
                     seed=5, num_classes=4)
    net = build_model(TrainConfig(width=16), channels=1, num_classes=4, image_size=(8, 8),
                      seed=derive_seed(5, "dm-net", 0))
    x = start.images.clone().requires_grad_(True)
    real = [tiny_dataset.train.images[tiny_dataset.train.labels == c] for c in range(4)]
    dm.matching_loss(net, real, [x[3 * c:3 * (c + 1)] for c in range(4)]).backward()
    assert torch.allclose(one.images, start.images - x.grad, atol=1e-6)
    assert not torch.allclose(one.images, start.images, atol=1e-4)  # the step did move them


@pytest.mark.parametrize("num_classes", [2, 4])
def test_dm_network_never_sees_more_than_one_class_batch(num_classes, monkeypatch):
    # Peak memory is bounded by one class's real batch: no forward pass holds more images than
    # batch_real, whatever the number of classes (the all-classes pass held classes x batch_real).
    from conftest import make_blobs

    seen: list[int] = []
    original = dm.build_model

    def recording(*args, **kwargs):
        net = original(*args, **kwargs)
        net.features.register_forward_pre_hook(lambda module, inp: seen.append(inp[0].shape[0]))
        return net

    monkeypatch.setattr(dm, "build_model", recording)
    train = make_blobs(20, num_classes=num_classes)
    dm.distill(train, 2, method_config("dm", overrides={"iterations": 2, "batch_real": 8, "width": 8}),
               seed=0, num_classes=num_classes)
    assert seen and max(seen) == 8
