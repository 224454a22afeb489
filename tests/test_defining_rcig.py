"""RCIG's defining steps, each pinned by a behaviour that goes away when the step is removed or
altered: centred predictions of the linearised network with the kernel-ridge head (against an
explicit-Jacobian computation), the Platt-scaled cross-entropy MINUS the capped label margin,
AdaBelief as optax's ``scale_by_belief``, pool networks trained on the current set (and
re-initialised after ``pool_reinit_after`` steps), the start-up lr search (x1.2 while monotone,
then x0.7) and the online inner-lr rule (x0.9 if >= 29% of runs diverge, else x1.05 if >= 70% are
monotone), centred one-hot label initialisation, ridge ``l2_rate * N``.

Reference: yolky/RCIG ``algorithms.py`` (``get_linear_forward``, ``get_krr_loss``, ``run_rcig``),
``distill_dataset.py`` (lr tuning), optax ``scale_by_belief``.
"""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ddlnl.methods import rcig
from ddlnl.utils import derive_seed

CLASSES, SIDE = 3, 6
TINY = {"iterations": 3, "batch_real": 16, "width": 8, "depth": 2, "pool_size": 2, "inner_steps": 3,
        "hinv_steps": 3, "inner_lr": 1e-3, "hinv_lr": 1e-3, "use_flip": False}


def _cfg(**over) -> rcig.RCIGConfig:
    return replace(rcig.RCIGConfig(), **{**TINY, **over})


def _lin(seed: int = 0) -> rcig.LinearizedNet:
    net = rcig._new_net(replace(rcig.RCIGConfig(), width=4, depth=2), channels=1, num_classes=CLASSES,
                        image_size=(SIDE, SIDE), seed=seed, device=torch.device("cpu"), dtype=torch.float64)
    return rcig.LinearizedNet(net)


def _data(seed: int = 0, n: int = 4, m: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, SIDE, SIDE, generator=g, dtype=torch.float64)
    y = torch.randn(n, CLASSES, generator=g, dtype=torch.float64)
    q = torch.randn(m, 1, SIDE, SIDE, generator=g, dtype=torch.float64)
    yq = F.one_hot(torch.randint(CLASSES, (m,), generator=g), CLASSES).double()
    return x, y, q, yq


def _reference_predictions(lin, x, y, delta, q, l2):
    """J_q D + phi_q phi_s^T (phi_s phi_s^T + l2 I)^-1 (Y - J_s D), Jacobians by jacrev: no f(x; theta0)."""
    def jdelta(inp):
        jac = torch.func.jacrev(lambda p: lin.network(inp, p))(lin.base)
        return sum((jac[k].reshape(inp.shape[0], CLASSES, -1) @ delta[k].reshape(-1)) for k in lin.base)

    net = lin.module.net
    with torch.no_grad():
        fs, fq = net.embed(x), net.embed(q)
    ridge = torch.linalg.solve(fs @ fs.T + l2 * torch.eye(x.shape[0], dtype=x.dtype), y - jdelta(x))
    return jdelta(q) + fq @ fs.T @ ridge


def test_predictions_are_centred_tangent_plus_kernel_ridge_head():
    lin = _lin()
    x, y, q, _ = _data()
    g = torch.Generator().manual_seed(3)
    delta = {k: 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in lin.base.items()}
    l2 = 0.05
    torch.testing.assert_close(rcig.outer_predictions(lin, x, y, delta, q, l2),
                               _reference_predictions(lin, x, y, delta, q, l2))
    # Centred: zero targets and zero tangent predict exactly zero, whatever f(x; theta0) is.
    zero = rcig.outer_predictions(lin, x, torch.zeros_like(y), lin.zero_tangent(), q, l2)
    assert lin.network(q).abs().max() > 1e-3 and zero.abs().max() < 1e-12


def test_label_margin_is_capped_and_subtracted_from_the_platt_cross_entropy():
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.45, 0.0], [0.1, 0.3, 0.2]], dtype=torch.float64)
    # top1 - top2 per row: 1 (capped at 1/(2K) = 1/6), 0.05, 0.1
    margin = (1 / 6 + 0.05 + 0.1) / 3
    assert float(rcig.label_margin(labels)) == pytest.approx(margin)
    lin = _lin(1)
    x, _, q, yq = _data(1, n=3)
    log_temp = torch.tensor(0.7, dtype=torch.float64)
    delta = lin.zero_tangent()
    l2 = 0.05
    preds = _reference_predictions(lin, x, labels, delta, q, l2)
    ce = float(-(yq * F.log_softmax(preds * torch.exp(log_temp), 1)).sum(1).mean())
    with_margin, _ = rcig.outer_loss(lin, x, labels, log_temp, delta, q, yq, l2, margin=True)
    without, _ = rcig.outer_loss(lin, x, labels, log_temp, delta, q, yq, l2, margin=False)
    assert float(without) == pytest.approx(ce, rel=1e-10)
    assert float(with_margin) == pytest.approx(ce - margin, rel=1e-10)
    _, acc = rcig.outer_loss(lin, x, labels, log_temp, delta, q, yq, l2)
    assert float(acc) == pytest.approx(float((preds.argmax(1) == yq.argmax(1)).double().mean()))
    # two classes: the cap is 1/4
    assert float(rcig.label_margin(torch.tensor([[0.5, -0.5], [0.1, 0.0]]))) == pytest.approx((0.25 + 0.1) / 2)


def _optax_adabelief(param, grads, lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16):
    """optax.scale_by_belief + scale(-lr): the prediction error uses the moment before the update."""
    mu, nu = torch.zeros_like(param), torch.zeros_like(param)
    for t, g in enumerate(grads, start=1):
        err = g - mu
        mu = b1 * mu + (1 - b1) * g
        nu = b2 * nu + (1 - b2) * err ** 2 + eps_root
        param = param - lr * (mu / (1 - b1 ** t)) / ((nu / (1 - b2 ** t)).sqrt() + eps)
    return param


def test_synthetic_set_optimiser_is_optax_adabelief():
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, dtype=torch.float64, generator=g)
    grads = [torch.randn(5, dtype=torch.float64, generator=g) for _ in range(4)]
    p = p0.clone()
    opt = rcig._AdaBelief([p], [0.01])
    for gr in grads:
        opt.step([gr])
    torch.testing.assert_close(p, _optax_adabelief(p0, grads, 0.01), rtol=1e-12, atol=1e-14)


def _spy_outer(monkeypatch, script=None):
    """Record the pool network, set and lr of each outer step; optionally replace inner_losses."""
    calls = []
    real = rcig.outer_step

    def spy(lin, images, labels, log_temp, real_images, real_targets, **kw):
        step = real(lin, images, labels, log_temp, real_images, real_targets, **kw)
        calls.append(dict(base={k: v.clone() for k, v in lin.base.items()}, net=lin.module.net,
                          images=images.detach().clone(), labels=labels.detach().clone(), inner_lr=kw["inner_lr"]))
        if script is not None:
            step = step._replace(inner_losses=script[len(calls) - 1])
        return step

    monkeypatch.setattr(rcig.loop, "outer_step", spy)
    return calls


def test_pool_networks_are_trained_on_the_current_set_and_reinitialised(tiny_dataset, monkeypatch):
    calls = _spy_outer(monkeypatch)
    # One network, one Adam step a visit, re-initialised after 2 steps.
    cfg = _cfg(iterations=3, pool_size=1, pool_max_steps=2, pool_reinit_after=2)
    rcig.distill(tiny_dataset.train, 2, cfg, seed=0, num_classes=4)
    first, second, third = calls
    assert not torch.equal(first["images"], second["images"])  # the outer step moved the set
    # Visit 1 -> 2: one Adam step (first step: -lr * g / (|g| + eps)) on 0.5 ||f(x) - y||^2 / (N K)
    # at the set the outer step produced (= the set the next step starts from).
    net = rcig._new_net(cfg, channels=1, num_classes=4, image_size=(8, 8), seed=derive_seed(0, "rcig-net", 0),
                        device=torch.device("cpu"))
    for k, v in rcig.LinearizedNet(net).base.items():
        torch.testing.assert_close(first["base"][k], v)
    loss = 0.5 * ((net(second["images"]) - second["labels"]) ** 2).sum() / second["labels"].numel()
    grads = dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(loss, list(net.parameters()))))
    moved = 0
    for k, v in first["base"].items():
        grad = grads[k.removeprefix("net.")]
        torch.testing.assert_close(second["base"][k], v - cfg.pool_lr * grad / (grad.abs() + 1e-8),
                                   rtol=1e-5, atol=1e-8)
        moved += int(not torch.equal(second["base"][k], v))
    assert moved > 0
    # After 2 steps the network is replaced by a fresh one (the pool's second seed).
    fresh = rcig._new_net(cfg, channels=1, num_classes=4, image_size=(8, 8), seed=derive_seed(0, "rcig-net", 1),
                          device=torch.device("cpu"))
    for k, v in rcig.LinearizedNet(fresh).base.items():
        torch.testing.assert_close(third["base"][k], v)


def test_startup_lr_search_grows_by_1_2_while_monotone_then_backs_off_by_0_7():
    tried = []

    def losses_at(lr):
        tried.append(lr)
        return [3.0, 2.0, 1.0] if lr < 2.0 else [3.0, 2.0, 2.5]

    # runs at 1, 1.2, 1.44, 1.728 decrease; 2.0736 does not; the lr grows once more, then x0.7.
    assert rcig._search_lr(1.0, losses_at) == pytest.approx(1.2 ** 5 * 0.7)
    assert tried == pytest.approx([1.0, 1.2, 1.44, 1.728, 2.0736])


MONO, DIVERGE, FLAT = [3.0, 2.0, 1.0], [1.0, 0.5, 2.0], [1.0, 2.0, 1.0]


@pytest.mark.parametrize("script,factor", [
    # The rule runs at iteration 10 over the 11 runs 0..10.
    ([DIVERGE] * 4 + [MONO] * 7, 0.9),  # 36% ended above their start (>= 29%)
    ([DIVERGE] * 3 + [MONO] * 8, 1.05),  # 27% diverged, 73% monotone (>= 70%)
    ([DIVERGE] * 3 + [MONO] * 7 + [FLAT], 1.0),  # 27% and 64%: unchanged
    ([FLAT] * 11, 1.0),
])
def test_online_inner_lr_rule(tiny_dataset, monkeypatch, script, factor):
    used = []

    def fake_outer_step(lin, images, labels, log_temp, real_images, real_targets, **kw):
        used.append(kw["inner_lr"])
        z = torch.zeros_like
        return rcig.OuterStep(0.0, 0.0, z(images), z(labels), z(log_temp), z(images), z(images), z(labels),
                              z(labels), script[(len(used) - 1) % len(script)], [], {})

    monkeypatch.setattr(rcig.loop, "outer_step", fake_outer_step)
    syn = rcig.distill(tiny_dataset.train, 1, _cfg(iterations=13, adapt_every=10, pool_size=1, width=4), seed=0,
                       num_classes=4)
    start, end = syn.meta["inner_lr"]
    assert start == TINY["inner_lr"] and end == pytest.approx(start * factor)
    assert used == pytest.approx([start] * 11 + [start * factor] * 2)  # after iteration 10's solve
    assert syn.meta["hinv_lr"][0] == syn.meta["hinv_lr"][1] == TINY["hinv_lr"]  # not adapted online


def test_labels_start_as_centred_one_hot_and_ridge_scales_with_the_set(tiny_dataset):
    syn = rcig.distill(tiny_dataset.train, 2, _cfg(iterations=0), seed=0, num_classes=4)
    expected = F.one_hot(torch.arange(4).repeat_interleave(2), 4).float() - 0.25
    torch.testing.assert_close(torch.tensor(syn.meta["raw_labels"]), expected)
    assert syn.meta["l2"] == pytest.approx(0.0005 * 8)


def test_monotone_diverged_and_implicit_clip_on_hand_values():
    # monotone: every inner step strictly lowered the loss; diverged: it ended above its start.
    assert rcig._monotone([3.0, 2.0, 1.0]) and not rcig._monotone([3.0, 3.0, 1.0])
    assert not rcig._monotone([1.0]) and not rcig._monotone([])
    assert rcig._diverged([1.0, 0.5, 1.5]) and not rcig._diverged([1.0, 2.0, 1.0]) and not rcig._diverged([1.0])
    assert not rcig._diverged([1.0, 1.0]) and rcig._diverged([1.0, 2.0]) and rcig._diverged([1.0, 2.0, 1.5])
    assert rcig._monotone([2.0, 1.0])
    # the implicit part is scaled down to the direct part's norm, never up
    implicit, direct = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8])
    torch.testing.assert_close(rcig._clip_to(implicit, direct), torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(rcig._clip_to(direct, implicit), direct)
    torch.testing.assert_close(rcig._clip_to(torch.zeros(2), direct), torch.zeros(2))
    torch.testing.assert_close(rcig._clip_to(direct, 0.5 * direct), 0.5 * direct)  # implicit of norm exactly 1
