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

