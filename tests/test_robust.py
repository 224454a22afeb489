"""GCE and Co-teaching: each baseline's defining step against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_blobs
from ddlnl.errors import ConfigError
from ddlnl.robust import (CoTeachingLoss, CoTeachingPair, forget_rate_schedule, gce_loss, train_coteaching,
                          train_gce)
from ddlnl.train import TrainConfig, build_model, train

TINY = TrainConfig(depth=1, width=8, epochs=3, batch_size=16, lr=0.05, augment="none")


def _batch(seed: int = 0, n: int = 12, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, k, generator=g, dtype=torch.float64), torch.randint(0, k, (n,), generator=g)


def test_gce_tends_to_cross_entropy_as_q_goes_to_zero():
    logits, y = _batch()
    ce = F.cross_entropy(logits, y)
    assert float(gce_loss(logits, y, q=1e-6)) == pytest.approx(float(ce), rel=1e-4)


def test_gce_at_q_one_is_one_minus_the_probability_of_the_label():
    logits, y = _batch(1)
    z = logits.numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = np.mean(1.0 - p[np.arange(len(y)), y.numpy()])
    assert float(gce_loss(logits, y, q=1.0)) == pytest.approx(expected, rel=1e-10)


def test_gce_at_the_published_q_matches_the_formula():
    logits, y = _batch(2)
    z = logits.numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = np.mean((1.0 - p[np.arange(len(y)), y.numpy()] ** 0.7) / 0.7)
    assert float(gce_loss(logits, y)) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ConfigError):
        gce_loss(logits, y, q=0.0)


def test_gce_trains_through_the_loop_and_differs_from_cross_entropy():
    data = make_blobs(10)
    run = train_gce(data, TINY, num_classes=4, seed=0)
    ce_model = build_model(TINY, channels=1, num_classes=4, image_size=(8, 8), seed=0)
    train(ce_model, data, TINY, seed=0)
    w_gce = torch.cat([p.flatten() for p in run.model.parameters()])
    w_ce = torch.cat([p.flatten() for p in ce_model.parameters()])
    assert not torch.allclose(w_gce, w_ce)


def test_forget_rate_ramps_linearly_over_tk_epochs_then_holds():
    sched = forget_rate_schedule(0.4, 15, tk=10)
    np.testing.assert_allclose(sched[:10], [0.4 * e / 9 for e in range(10)])
    np.testing.assert_allclose(sched[10:], 0.4)
    assert forget_rate_schedule(0.4, 5, tk=10).tolist() == pytest.approx([0.4 * e / 9 for e in range(5)])


def _pair(seed: int = 0, k: int = 4) -> CoTeachingPair:
    nets = [build_model(TINY, channels=1, num_classes=k, image_size=(8, 8), seed=seed + i) for i in range(2)]
    return CoTeachingPair(nets[0], nets[1], k)


def test_each_network_is_updated_on_the_samples_its_peer_ranked_smallest_loss():
    data = make_blobs(6)
    x, y = data.images[:16], data.labels[:16]
    y = torch.where(torch.arange(16) % 3 == 0, (y + 1) % 4, y)  # some wrong labels
    pair = _pair()
    hook = CoTeachingLoss(4, np.array([0.25]))
    pair.train()
    hook(pair(x), y, torch.arange(16), 0).backward()
    got = [[p.grad.clone() for p in net.parameters()] for net in pair.nets]

    # Independently: each network's own per-sample losses, its 12 smallest (1 - 0.25 of 16), and the
    # other network's mean cross-entropy on exactly those.
    fresh = _pair()
    with torch.no_grad():
        own = [F.cross_entropy(net(x), y, reduction="none") for net in fresh.nets]
    small = [set(torch.argsort(l)[:12].tolist()) for l in own]
    for me, peer in ((0, 1), (1, 0)):
        chosen = torch.tensor(sorted(small[peer]))
        net = fresh.nets[me]
        net.zero_grad()
        F.cross_entropy(net(x[chosen]), y[chosen]).backward()
        for g_got, p in zip(got[me], net.parameters()):
            torch.testing.assert_close(g_got, p.grad, rtol=1e-5, atol=1e-7)
    by_a, by_b = hook.last_selection
    assert set(by_a.tolist()) == small[0] and set(by_b.tolist()) == small[1]
    assert small[0] != small[1]  # the exchange matters in this case


def test_kept_fraction_follows_the_schedule_in_training():
    data = make_blobs(8)  # 32 samples, batches of 16
    cfg = TrainConfig(depth=1, width=8, epochs=4, batch_size=16, lr=0.05, augment="none")
    run = train_coteaching(data, cfg, num_classes=4, seed=0, forget_rate=0.5, tk=3)
    # Han et al.'s schedule written out: forget 0, 0.25, 0.5, 0.5; num_remember = int((1 - f) * 16).
    expected = [n / 16 for n in (16, 16, 12, 12, 8, 8, 8, 8)]
    assert run.info["kept_fractions"] == pytest.approx(expected)
    assert run.model.nets[0] is not run.model.nets[1]


def test_pair_answers_with_its_first_network_in_evaluation():
    pair = _pair()
    x = make_blobs(2).images
    pair.eval()
    torch.testing.assert_close(pair(x), pair.nets[0](x))
    pair.train()
    assert pair(x).shape == (x.shape[0], 8)


def test_loss_hook_receives_the_batch_indices_and_epoch():
    data = make_blobs(5)
    seen = []

    def hook(logits, target, idx, epoch):
        seen.append((epoch, idx.clone()))
        assert torch.equal(target, data.labels[idx])
        return F.cross_entropy(logits, target)

    model = build_model(TINY, channels=1, num_classes=4, image_size=(8, 8), seed=0)
    train(model, data, TINY, seed=0, loss_fn=hook)
    assert [e for e, _ in seen] == [0, 0, 1, 1, 2, 2]
    for epoch in range(3):
        idx = torch.cat([i for e, i in seen if e == epoch])
        assert sorted(idx.tolist()) == list(range(len(data)))
