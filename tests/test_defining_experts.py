"""Expert trajectories' defining steps (MTT ``buffer.py``; DATM ``buffer_FTD.py``), recomputed
by hand: row 0 is the initial weights and row ``e + 1`` is row ``e`` after one epoch of SGD on the
noisy labels at the epoch's lr, with no momentum and no weight decay (the reference's settings),
so one full-batch epoch is exactly ``w - lr * grad CE(w)``. With momentum (DANCE's pre-training)
one optimiser serves the whole run, so the buffer carries over epoch boundaries; a milestone
multiplies the lr from its epoch on. Gradients here come from ``torch.nn.utils`` vector helpers
and a plain module, not from ddlnl's flat-parameter layout.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ddlnl.experts import ExpertConfig, get_experts
from ddlnl.train import build_model


def full_batch_gradient(cfg: ExpertConfig, row: torch.Tensor, images: torch.Tensor, labels: torch.Tensor):
    model = build_model(cfg.train_config(), channels=images.shape[1], num_classes=4,
                        image_size=tuple(images.shape[2:]), seed=0)
    vector_to_parameters(row.clone(), model.parameters())
    loss = F.cross_entropy(model(images), labels)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return parameters_to_vector(grads).detach()


def tiny_cfg(**kw) -> ExpertConfig:
    return ExpertConfig(**{**dict(num_experts=1, epochs=3, lr=0.5, batch_size=1000, width=4, depth=1,
                                  augment="none"), **kw})


def test_published_defaults_are_the_reference_buffer_settings():
    c = ExpertConfig()
    assert (c.num_experts, c.epochs, c.lr, c.batch_size, c.momentum, c.weight_decay, c.augment) == \
        (100, 50, 0.01, 256, 0.0, 0.0, "dsa")
    assert (c.depth, c.width, c.norm) == (3, 128, "instance")


def test_each_row_is_one_plain_sgd_epoch_from_the_previous_one(tiny_dataset):
    train = tiny_dataset.train
    cfg = tiny_cfg()
    tr = get_experts(train, cfg, seed=1, num_classes=4, cache=False)
    rows = tr.trajectory(0)
    assert rows.shape[0] == cfg.epochs + 1
    for e in range(cfg.epochs):
        g = full_batch_gradient(cfg, rows[e], train.images, train.labels)
        torch.testing.assert_close(rows[e + 1], rows[e] - cfg.lr * g, rtol=1e-4, atol=1e-5)


def test_momentum_carries_over_epochs_and_milestones_scale_the_lr(tiny_dataset):
    train = tiny_dataset.train
    cfg = tiny_cfg(momentum=0.9, lr_milestones=(2,), lr_gamma=0.2)
    rows = get_experts(train, cfg, seed=2, num_classes=4, cache=False).trajectory(0)
    v = None
    for e in range(cfg.epochs):
        g = full_batch_gradient(cfg, rows[e], train.images, train.labels)
        v = g if v is None else 0.9 * v + g
        lr = cfg.lr * (0.2 if e >= 2 else 1.0)
        torch.testing.assert_close(rows[e + 1], rows[e] - lr * v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("epochs", [1, 4])
def test_the_trajectory_has_one_row_per_epoch_plus_the_start(tiny_dataset, epochs):
    tr = get_experts(tiny_dataset.train, tiny_cfg(epochs=epochs, num_experts=2), seed=0, num_classes=4, cache=False)
    assert (tr.num_experts, tr.num_epochs) == (2, epochs)
    assert tr.trajectory(1).shape[0] == epochs + 1


def test_forward_correction_trains_on_the_forward_corrected_cross_entropy(tiny_dataset):
    # Patrini et al.'s forward loss, written here as -log((softmax(z) @ T)[y]): each row is one
    # full-batch SGD step on it (not on the plain cross-entropy).
    train = tiny_dataset.train
    t = ((0.7, 0.1, 0.1, 0.1), (0.0, 0.6, 0.4, 0.0), (0.2, 0.0, 0.8, 0.0), (0.25, 0.25, 0.25, 0.25))
    cfg = tiny_cfg(epochs=2, forward_transition=t)
    rows = get_experts(train, cfg, seed=3, num_classes=4, cache=False).trajectory(0)
    tm = torch.tensor(t)
    for e in range(cfg.epochs):
        model = build_model(cfg.train_config(), channels=train.images.shape[1], num_classes=4,
                            image_size=tuple(train.images.shape[2:]), seed=0)
        vector_to_parameters(rows[e].clone(), model.parameters())
        noisy = F.softmax(model(train.images), dim=1) @ tm
        loss = -torch.log(noisy[torch.arange(len(train.labels)), train.labels]).mean()
        g = parameters_to_vector(torch.autograd.grad(loss, list(model.parameters())))
        torch.testing.assert_close(rows[e + 1], rows[e] - cfg.lr * g, rtol=1e-4, atol=1e-5)
        plain = full_batch_gradient(cfg, rows[e], train.images, train.labels)
        assert (g - plain).abs().max() > 1e-3  # the correction changes the step


def test_a_forward_transition_of_another_class_count_is_refused(tiny_dataset):
    from ddlnl.errors import DataError

    cfg = tiny_cfg(epochs=1, forward_transition=((0.9, 0.1, 0.0), (0.0, 1.0, 0.0), (0.5, 0.0, 0.5)))
    with pytest.raises(DataError, match="^experts: forward_transition is 3 x 3, the data have 4 classes$"):
        get_experts(tiny_dataset.train, cfg, seed=0, num_classes=4, cache=False)
