"""DM's defining steps, each pinned by a behaviour that goes away when the step is removed or
altered: synthetic images start as real images of their (noisy) class; every iteration embeds
with a FRESHLY initialised network; the update is one SGD step on the sum over classes of the
squared distance between class-mean embeddings (checked against an independent recomputation of
the first iteration); real and synthetic batches of a class share one DSA draw.

Reference: VICO-UoE/DatasetCondensation ``main_DM.py`` (``net = get_network(...)`` inside the
iteration loop, ``loss += torch.sum((mean(output_real) - mean(output_syn))**2)``, one ``seed``
for the real and the synthetic ``DiffAugment``; SGD lr_img 1.0, momentum 0.5).
"""

import copy

import pytest

import torch

from ddlnl.data import LabeledTensors
from ddlnl.methods import dm
from ddlnl.methods.dm import DMConfig

TINY = dict(width=8, batch_real=64)


def _noisy(train):
    noisy = train.labels.clone()
    noisy[::5] = (noisy[::5] + 2) % 4
    return train.with_labels(noisy)


def _spy_nets(monkeypatch):
    """The embedding network of every iteration, as it is when the iteration starts.

    DM builds one network and re-initialises it in place each iteration (``reinitialize_``), so
    a snapshot is taken after each re-initialisation; the network itself is never stored.
    """
    nets = []
    real = dm.reinitialize_

    def spy(net, *a, **k):
        out = real(net, *a, **k)
        nets.append(copy.deepcopy(net))
        return out

    monkeypatch.setattr(dm, "reinitialize_", spy)
    return nets


def _first_loss_and_grad(t, start, net, ipc):
    """The summed class-mean embedding distance of the initial set, without augmentation."""
    x = start.clone().requires_grad_(True)
    loss = 0.0
    for c in range(4):
        real = t.images[t.labels == c]  # batch_real >= class size: the whole noisy class
        with torch.no_grad():
            mean_real = net.embed(real).mean(0)
        loss = loss + ((mean_real - net.embed(x[ipc * c:ipc * (c + 1)]).mean(0)) ** 2).sum()
    return float(loss), torch.autograd.grad(loss, x)[0]


def test_first_iteration_is_one_sgd_step_on_the_class_mean_embedding_distance(tiny_dataset, monkeypatch):
    t = _noisy(tiny_dataset.train)
    nets = _spy_nets(monkeypatch)
    cfg = DMConfig(**TINY, iterations=1, dsa_strategy="", lr_img=5.0)
    syn = dm.distill(t, 2, cfg, seed=0, num_classes=4)
    start = t.images[syn.meta["init_indices"]]
    assert torch.equal(t.labels[syn.meta["init_indices"]], torch.arange(4).repeat_interleave(2))
    loss, grad = _first_loss_and_grad(t, start, nets[0], 2)
    assert abs(syn.meta["loss"][0] - loss) < 1e-4 * loss
    torch.testing.assert_close(syn.images, start - 5.0 * grad, rtol=1e-4, atol=1e-6)
    assert (syn.images - start).abs().max() > 1e-3
    assert torch.equal(syn.labels, torch.arange(4).repeat_interleave(2))


def test_dsa_is_applied(tiny_dataset, monkeypatch):
    t = _noisy(tiny_dataset.train)
    nets = _spy_nets(monkeypatch)
    syn = dm.distill(t, 2, DMConfig(**TINY, iterations=1), seed=0, num_classes=4)
    plain, _ = _first_loss_and_grad(t, t.images[syn.meta["init_indices"]], nets[0], 2)
    assert abs(syn.meta["loss"][0] - plain) > 1e-3 * plain


def test_every_iteration_draws_a_fresh_network(tiny_dataset, monkeypatch):
    nets = _spy_nets(monkeypatch)
    dm.distill(tiny_dataset.train, 1, DMConfig(**TINY, iterations=3, dsa_strategy=""), seed=0, num_classes=4)
    assert len(nets) == 3
    firsts = [next(n.parameters()).detach() for n in nets]
    assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])
    # ... and the networks are not trained: DM only moves the images.
    again = _spy_nets(monkeypatch)
    dm.distill(tiny_dataset.train, 1, DMConfig(**TINY, iterations=3, dsa_strategy=""), seed=0, num_classes=4)
    assert all(torch.equal(next(a.parameters()), f) for a, f in zip(again, firsts))


def test_real_and_synthetic_batches_of_a_class_share_one_dsa_draw():
    # Every image of a class is the same image, so real and synthetic batches coincide and the
    # matching loss is zero exactly when both are transformed alike.
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 1, 8, 8, generator=g)
    data = LabeledTensors(protos.repeat_interleave(10, 0), torch.arange(4).repeat_interleave(10))
    syn = dm.distill(data, 1, DMConfig(**TINY, iterations=4), seed=0, num_classes=4)
    assert max(syn.meta["loss"]) < 1e-8
    plain = dm.distill(data, 1, DMConfig(**TINY, iterations=4, dsa_strategy=""), seed=0, num_classes=4)
    assert max(plain.meta["loss"]) < 1e-8



def _spy_losses(monkeypatch):
    """(real batch, synthetic batch, loss) of every class_matching_loss call."""
    calls = []
    real = dm.class_matching_loss

    def spy(net, r, s):
        out = real(net, r, s)
        calls.append((r.detach().clone(), s.detach().clone(), float(out.detach())))
        return out

    monkeypatch.setattr(dm, "class_matching_loss", spy)
    return calls


def test_second_iteration_is_sgd_with_momentum_one_half(tiny_dataset, monkeypatch):
    # main_DM.py: SGD(lr_img, momentum=0.5): x2 = x1 - lr (0.5 g1 + g2), g2 at x1 with network 2.
    t = _noisy(tiny_dataset.train)
    nets = _spy_nets(monkeypatch)
    cfg = DMConfig(**TINY, iterations=2, dsa_strategy="", lr_img=5.0)
    syn = dm.distill(t, 2, cfg, seed=0, num_classes=4)
    x0 = t.images[syn.meta["init_indices"]]
    _, g1 = _first_loss_and_grad(t, x0, nets[0], 2)
    x1 = x0 - 5.0 * g1
    _, g2 = _first_loss_and_grad(t, x1, nets[1], 2)
    torch.testing.assert_close(syn.images, x1 - 5.0 * (0.5 * g1 + g2), rtol=1e-4, atol=1e-6)
    assert (0.5 * 5.0 * g1).abs().max() > 1e-3  # the momentum term is not negligible here


def test_each_class_matches_a_fresh_real_batch_of_batch_real_images_of_that_class(tiny_dataset, monkeypatch):
    t = _noisy(tiny_dataset.train)
    calls = _spy_losses(monkeypatch)
    syn = dm.distill(t, [1, 2, 3, 1], DMConfig(width=8, batch_real=5, iterations=2, dsa_strategy=""), seed=0,
                     num_classes=4)
    assert torch.equal(syn.labels, torch.tensor([0, 1, 1, 2, 2, 2, 3]))
    assert torch.equal(t.labels[syn.meta["init_indices"]], syn.labels) and syn.meta["ipc"] == [1, 2, 3, 1]
    assert len(calls) == 2 * 4
    flat = t.images.flatten(1)
    for i, (real, s, _) in enumerate(calls):
        c = i % 4
        assert real.shape[0] == 5 and s.shape[0] == [1, 2, 3, 1][c]
        # the real batch: 5 distinct images of the (noisy) class c
        rows = [int(torch.nonzero((flat == r.flatten()).all(1))[0]) for r in real]
        assert len(set(rows)) == 5 and all(int(t.labels[n]) == c for n in rows)
    assert not torch.equal(calls[0][0], calls[4][0])  # another draw in the next iteration
    # the synthetic batch of the first iteration is the class's slots of the initial set
    start = t.images[syn.meta["init_indices"]]
    assert torch.equal(calls[1][1], start[1:3]) and torch.equal(calls[2][1], start[3:6])


def test_the_recorded_loss_is_the_sum_over_classes_every_log_every_iterations(tiny_dataset, monkeypatch):
    t = _noisy(tiny_dataset.train)
    calls = _spy_losses(monkeypatch)
    syn = dm.distill(t, 1, DMConfig(**TINY, iterations=5, dsa_strategy="", log_every=2), seed=0, num_classes=4)
    per_iteration = [sum(c[2] for c in calls[4 * i:4 * i + 4]) for i in range(5)]
    assert syn.meta["loss"] == [pytest.approx(per_iteration[i], rel=1e-5) for i in (0, 2, 4)]
    none = dm.distill(t, 1, DMConfig(**TINY, iterations=3, dsa_strategy="", log_every=0), seed=0, num_classes=4)
    assert none.meta["loss"] == []
    assert (syn.meta["method"], syn.meta["seed"], syn.meta["num_classes"], syn.meta["ipc"]) == ("dm", 0, 4, 1)
    from dataclasses import asdict

    assert syn.meta["config"] == asdict(DMConfig(**TINY, iterations=5, dsa_strategy="", log_every=2))
    assert "noise_model" not in syn.meta


def test_with_noise_correction_only_the_unmixed_targets_are_matched(tiny_dataset, monkeypatch):
    # The corrected step replaces the per-class loss on the given classes: no class is also
    # matched to its plain (noisy) class mean, and the set records the noise model it used.
    import numpy as np

    from ddlnl.correction import NoiseModel

    t = _noisy(tiny_dataset.train)
    calls = _spy_losses(monkeypatch)
    model = NoiseModel(0.9 * np.eye(4) + 0.025, np.full(4, 0.25), "true")
    syn = dm.distill(t, 1, DMConfig(**TINY, iterations=2, dsa_strategy="", noise_correction="true"), seed=0,
                     num_classes=4, noise_model=model)
    assert calls == [] and len(syn.meta["loss"]) == 2
    assert syn.meta["noise_model"] == model.to_dict()


def test_noise_init_starts_from_seeded_standard_normal_images(tiny_dataset):
    t = tiny_dataset.train
    cfg = DMConfig(**TINY, iterations=0, init="noise")
    a = dm.distill(t, 10, cfg, seed=1, num_classes=4)
    b = dm.distill(t, 10, cfg, seed=1, num_classes=4)
    assert torch.equal(a.images, b.images) and a.images.shape == (40, *t.images.shape[1:])
    assert abs(float(a.images.mean())) < 0.1 and abs(float(a.images.std()) - 1.0) < 0.1
    flat = t.images.flatten(1)
    assert not any(bool((flat == x.flatten()).all(1).any()) for x in a.images)  # no real image


def test_refuses_a_per_class_budget_of_the_wrong_length_and_a_noise_model_of_other_classes(tiny_dataset):
    import numpy as np

    from ddlnl.correction import NoiseModel
    from ddlnl.errors import ConfigError

    t = tiny_dataset.train
    with pytest.raises(ConfigError, match="^dm: 3 per-class IPC values for 4 classes: give one per class$"):
        dm.distill(t, [1, 1, 1], DMConfig(**TINY, iterations=0), seed=0, num_classes=4)
    model = NoiseModel(np.eye(3), np.full(3, 1 / 3), "true")
    with pytest.raises(ConfigError, match="^dm: the noise model has 3 classes, the data 4$"):
        dm.distill(t, 1, DMConfig(**TINY, iterations=0, noise_correction="true"), seed=0, num_classes=4,
                   noise_model=model)
